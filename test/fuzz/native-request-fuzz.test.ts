/**
 * libFuzzer over the data-path thread's reading of client bytes (native/src/request.c, through
 * native/fuzz/fuzz-request.c with ASan and UBSan): scripts/fuzz-native.js builds the harness into
 * a temporary directory, replays every input under fixtures/fuzz/native/crashes/, then runs a
 * fixed-seed budget from the seeds recorded from real clients (fixtures/fuzz/native/seeds/). The
 * run must end with exit 0, every execution done and no crash input written. A long campaign is
 * `npm run fuzz:native -- --minutes N`.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const SCRIPT = path.join(ROOT, 'scripts', 'fuzz-native.js');
const CRASHES = path.join(ROOT, 'fixtures', 'fuzz', 'native', 'crashes');
/** about 20 s of executions on the 2-CPU development machine (1e6 took 13 s of CPU) */
const RUNS = 1_500_000;
const TIMEOUT_MS = 300_000;

interface Summary {
  exitCode: number;
  execs: number;
  cov: number;
  ft: number;
  crashes: string[];
  replayed: number;
}

/** Why the harness cannot be built here, or null. */
function missingToolchain(): string | null {
  const clang = spawnSync('clang', ['-print-resource-dir'], { encoding: 'utf8' });
  if (clang.status !== 0) return 'clang is not installed (scripts/ensure-tools.js installs it)';
  const runtime = path.join(clang.stdout.trim(), 'lib', 'linux', 'libclang_rt.fuzzer-x86_64.a');
  if (!fs.existsSync(runtime)) return `no libFuzzer runtime (${runtime})`;
  return null;
}

const missing = missingToolchain();

t.test('the request decoder survives a fixed-seed libFuzzer budget under ASan and UBSan',
  { skip: missing ?? false, timeout: TIMEOUT_MS }, async (t) => {
    const work = t.testdir();
    const crashesBefore = fs.existsSync(CRASHES) ? fs.readdirSync(CRASHES).sort() : [];
    const run = spawnSync(process.execPath, [SCRIPT, '--runs', String(RUNS), '--seed', '1',
      '--work', work, '--json'], { encoding: 'utf8', timeout: TIMEOUT_MS });
    const lines = run.stdout.trim().split('\n');
    const summary = JSON.parse(lines[lines.length - 1] ?? '{}') as Summary;
    t.equal(run.status, 0, `the campaign passes${run.status === 0 ? '' : `: ${run.stderr}`}`);
    t.equal(summary.exitCode, 0, 'libFuzzer exited 0');
    t.equal(summary.execs, RUNS, 'every execution ran');
    t.same(summary.crashes, [], 'no crash input');
    t.equal(summary.replayed, crashesBefore.length, 'every recorded crash input was replayed');
    t.ok(summary.cov > 0 && summary.ft > 0, `coverage reported (cov ${summary.cov}, ` +
      `ft ${summary.ft})`);
    const crashesAfter = fs.existsSync(CRASHES) ? fs.readdirSync(CRASHES).sort() : [];
    t.same(crashesAfter, crashesBefore, 'no new file under fixtures/fuzz/native/crashes');
  });
