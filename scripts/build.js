#!/usr/bin/env node
// The `prepare` step: builds the TypeScript (dist/) and the native addon (native/build/) when
// what they are built from changed since they were last built here, and does nothing otherwise.
//
// Why: `npx xvd` in a checkout does not run node_modules/.bin/xvd. npm exec (npm 7 to 11) sees
// that the project's own package.json has a bin named `xvd`, installs the checkout into its
// exec cache (a link in ~/.npm/_npx/<hash>/node_modules) and runs the checkout's `prepare`
// there, once per cache. With `prepare` as a plain `npm run build` the first `npx xvd` rebuilt
// everything `npm install` had just built (7 s), and failed where node-gyp could not get Node's
// headers (no network). A self-link (`"xvd": "file:."`) does not help: npm exec looks at the
// package's own bin before node_modules/.bin. So the build is made idempotent instead: each
// part records a digest of its inputs beside its output, and a part whose digest matches is
// not built again. `npm run build` still builds everything unconditionally.
//
// Inputs: dist/ from every file under src/, tsconfig.json and typescript's version; native/build
// from every file under native/src/, binding.gyp, and the platform, architecture and Node ABI.
// test/cli/npx.test.ts runs `npx xvd` offline in a copy of the checkout and checks nothing is
// rebuilt.
//
// Usage: build.js          (builds what is out of date; package.json's `prepare`)
//        build.js --check  (builds nothing; exits 1 naming each part that is out of date)
'use strict';
const { createHash } = require('node:crypto');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const STAMP = '.build-inputs';

/** Every file under `dir` (relative to ROOT), sorted, or [] when it does not exist. */
function filesUnder(dir) {
  const absolute = path.join(ROOT, dir);
  if (!fs.existsSync(absolute)) return [];
  const found = [];
  for (const entry of fs.readdirSync(absolute, { withFileTypes: true })) {
    const relative = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...filesUnder(relative));
    else if (entry.isFile()) found.push(relative);
  }
  return found.sort();
}

/** A digest of the named files' paths and bytes and of `extra` strings. */
function digestOf(files, extra) {
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(`${file}\0`);
    hash.update(fs.readFileSync(path.join(ROOT, file)));
    hash.update('\0');
  }
  for (const value of extra) hash.update(`${value}\0`);
  return hash.digest('hex');
}

function typescriptVersion() {
  const file = path.join(ROOT, 'node_modules', 'typescript', 'package.json');
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')).version : 'none';
}

const PARTS = [
  {
    name: 'native addon',
    script: 'build:native',
    output: path.join('native', 'build', 'Release', 'xvd_native.node'),
    stampDir: path.join('native', 'build'),
    digest: () => digestOf([...filesUnder(path.join('native', 'src')),
      path.join('native', 'binding.gyp')],
    [process.platform, process.arch, process.versions.modules]),
  },
  {
    name: 'TypeScript',
    script: 'build:ts',
    output: path.join('dist', 'cli', 'main.js'),
    stampDir: 'dist',
    digest: () => digestOf([...filesUnder('src'), 'tsconfig.json'], [typescriptVersion()]),
  },
];

function isCurrent(part, digest) {
  const stamp = path.join(ROOT, part.stampDir, STAMP);
  return fs.existsSync(path.join(ROOT, part.output)) && fs.existsSync(stamp) &&
    fs.readFileSync(stamp, 'utf8').trim() === digest;
}

function build(part, digest) {
  const npm = process.env.npm_execpath;
  const command = npm === undefined ? 'npm' : process.execPath;
  const args = npm === undefined ? ['run', part.script] : [npm, 'run', part.script];
  const result = spawnSync(command, args, { cwd: ROOT, stdio: 'inherit' });
  if (result.status !== 0) {
    process.stderr.write(`build: ${part.name}: npm run ${part.script} failed\n`);
    process.exit(result.status ?? 1);
  }
  fs.writeFileSync(path.join(ROOT, part.stampDir, STAMP), `${digest}\n`);
}

/** The parts whose recorded inputs differ from their inputs now (or that were never built). */
function staleParts() {
  return PARTS.filter((part) => !isCurrent(part, part.digest()));
}

function main(argv) {
  if (argv.includes('--check')) {
    const stale = staleParts();
    for (const part of stale) process.stderr.write(`build: ${part.name} is out of date\n`);
    process.exit(stale.length === 0 ? 0 : 1);
  }
  for (const part of PARTS) {
    const digest = part.digest();
    if (isCurrent(part, digest)) {
      process.stderr.write(`build: ${part.name} is up to date\n`);
    } else {
      build(part, digest);
    }
  }
}

if (require.main === module) main(process.argv.slice(2));
module.exports = { PARTS, STAMP, staleParts };
