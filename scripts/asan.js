#!/usr/bin/env node
// `npm run test:asan`: builds the addon with -fsanitize=address,undefined into a temporary
// directory (native/build/Release, which every other test loads, is left alone), then runs the
// native and server tests with Node loading that build (XVD_ADDON_PATH, see src/sys/index.ts)
// and gcc's ASan runtime preloaded (LD_PRELOAD; Node itself is not instrumented).
// ASAN_OPTIONS=detect_leaks=0 (Node leaks at exit by design); UBSan halts on the first error.
// A sanitizer report aborts the process that hit it, so its test fails; the tests' output is
// also searched for reports. The external tools the tests start by name (certtool, nbdinfo,
// qemu-img...) run without the preload, through shims first on PATH: certtool hangs signing a
// certificate with the ASan runtime preloaded.
// Usage: asan.js [--keep] [test files...] (default: the list below).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const TESTS = [
  'test/unit/datapath.test.ts', 'test/unit/sender.test.ts', 'test/unit/pwrite-batch.test.ts',
  'test/unit/native-lifecycle.test.ts', 'test/unit/sys.test.ts',
  'test/unit/native-request.test.ts', 'test/integration/nbd-datapath.test.ts',
  'test/integration/nbd-arena-receive.test.ts', 'test/integration/nbd-libnbd.test.ts',
  'test/errors/',
];
const SANITIZE = '-fsanitize=address,undefined -fno-omit-frame-pointer -g';
const TIMEOUT_MS = 60 * 60 * 1000;
/** tools the tests start by name; each runs without LD_PRELOAD (see the header) */
const TOOLS = ['certtool', 'psktool', 'nbdinfo', 'nbdsh', 'nbdcopy', 'nbdfuse', 'nbdkit',
  'qemu-img', 'qemu-io', 'qemu-nbd', 'nbd-client', 'nbd-server', 'socat', 'fio', 'openssl'];
/** the first line of an ASan or UBSan report */
const REPORT = /ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer/;

function run(command, args, options) {
  const result = spawnSync(command, args, { stdio: 'inherit', timeout: TIMEOUT_MS, ...options });
  if (result.error !== undefined) throw result.error;
  return result.status;
}

/** Builds a sanitized copy of native/ under `work`; returns the .node's path. */
function buildSanitized(work) {
  const native = path.join(work, 'native');
  fs.mkdirSync(native, { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'native', 'binding.gyp'), path.join(native, 'binding.gyp'));
  fs.cpSync(path.join(ROOT, 'native', 'src'), path.join(native, 'src'), { recursive: true });
  // gyp's make honours CFLAGS and LDFLAGS from the environment; npx reads npm's configuration
  // (nodedir) as `npm run build:native` does
  const env = { ...process.env, CFLAGS: SANITIZE, LDFLAGS: '-fsanitize=address,undefined' };
  const status = run('npx', ['--no-install', 'node-gyp', 'rebuild', `--directory=${native}`],
    { env, cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  if (status !== 0) throw new Error(`asan: node-gyp rebuild failed (${status})`);
  const addon = path.join(native, 'build', 'Release', 'xvd_native.node');
  const ldd = spawnSync('ldd', [addon], { encoding: 'utf8' }).stdout;
  if (!/libasan/.test(ldd) || !/libubsan/.test(ldd)) {
    throw new Error(`asan: ${addon} is not linked with the sanitizers:\n${ldd}`);
  }
  return addon;
}

/** A directory of shims that start each tool found on PATH without LD_PRELOAD. */
function toolShims(work) {
  const dir = path.join(work, 'bin');
  fs.mkdirSync(dir);
  for (const tool of TOOLS) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
    const real = found.stdout.trim();
    if (found.status !== 0 || !path.isAbsolute(real)) continue;
    const shim = path.join(dir, tool);
    fs.writeFileSync(shim, `#!/bin/sh\nunset LD_PRELOAD\nexec ${real} "$@"\n`);
    fs.chmodSync(shim, 0o755);
  }
  return dir;
}

function runtimeOf(name) {
  const file = spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).stdout.trim();
  if (!path.isAbsolute(file) || !fs.existsSync(file)) throw new Error(`asan: no ${name} (gcc)`);
  return fs.realpathSync(file);
}

function main() {
  const args = process.argv.slice(2);
  const keep = args.includes('--keep');
  const tests = args.filter((arg) => arg !== '--keep');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-asan-'));
  const addon = buildSanitized(work);
  const env = {
    ...process.env,
    PATH: `${toolShims(work)}${path.delimiter}${process.env.PATH ?? ''}`,
    XVD_ADDON_PATH: addon,
    LD_PRELOAD: runtimeOf('libasan.so'),
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
    UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
  };
  // the sanitized addon must be what the tests load: one require under the same environment
  const probe = `const b = require(${JSON.stringify(addon)}); ` +
    'if (typeof b.requestStep !== "function") process.exit(1);';
  if (run(process.execPath, ['-e', probe], { env }) !== 0) throw new Error('asan: probe failed');
  process.stderr.write(`asan: addon ${addon}\n`);
  const tap = path.join(ROOT, 'node_modules', '.bin', 'tap');
  const result = spawnSync(tap, ['--jobs=1', ...(tests.length > 0 ? tests : TESTS)],
    { env, cwd: ROOT, encoding: 'utf8', timeout: TIMEOUT_MS, maxBuffer: 1 << 30 });
  if (result.error !== undefined) throw result.error;
  const output = `${result.stdout}${result.stderr}`;
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  const found = output.split('\n').filter((line) => REPORT.test(line));
  if (!keep) fs.rmSync(work, { recursive: true, force: true });
  process.stderr.write(`asan: tests exit ${result.status}, ${found.length} sanitizer report ` +
    `line(s)${found.length > 0 ? `:\n${found.join('\n')}` : ''}\n`);
  return result.status === 0 && found.length === 0 ? 0 : 1;
}

try {
  process.exitCode = main();
} catch (error) {
  process.stderr.write(`${error.message}\n`);
  process.exitCode = 2;
}
