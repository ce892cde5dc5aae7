/**
 * Wire fuzzing through `xvd serve --stdio` (wire-fuzz-stdio.ts): a fixed-seed handful of fuzzed
 * sessions (a process each) must each end with exit 0, nothing at error level or uncaught on
 * stderr, no hang after stdin closes, and valid NBD on stdout. Reproducers of failures go to a
 * temporary directory named in the failure (fixtures/fuzz/wire/ with XVD_FUZZ_SAVE=1).
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FuzzRandom, generateStream, saveReproducer } from '../helpers/wire-fuzz';
import { STDIO_PROFILE, prepareStdio, runStdioStream } from '../helpers/wire-fuzz-stdio';

const SEED = Number(process.env['XVD_FUZZ_SEED'] ?? 15);
const STREAMS = Number(process.env['XVD_FUZZ_STDIO_STREAMS'] ?? 8);
const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'fuzz', 'wire');

t.test(`xvd serve --stdio survives fuzzed sessions (seed ${SEED})`, async (t) => {
  const catalog = await prepareStdio(t.testdir());
  const random = new FuzzRandom(SEED);
  const reproducerDir = process.env['XVD_FUZZ_SAVE'] === '1' ? FIXTURES
    : path.join(os.tmpdir(), `xvd-wire-fuzz-stdio-${process.pid}`);
  let failures = 0;
  for (let index = 0; index < STREAMS; index++) {
    const stream = generateStream(random, STDIO_PROFILE);
    const outcome = await runStdioStream(catalog, stream);
    if (outcome.verdict === 'ok') continue;
    failures += 1;
    const file = saveReproducer(reproducerDir, `${outcome.verdict}-stdio-s${SEED}-${index}`,
      stream, { target: 'stdio', verdict: outcome.verdict, detail: outcome.detail, seed: SEED });
    t.fail(`stream ${index}: ${outcome.verdict}: ${outcome.detail.slice(0, 600)}`,
      { reproducer: file });
  }
  t.equal(failures, 0, `${STREAMS} streams through --stdio, none failed`);
  if (failures === 0 && reproducerDir !== FIXTURES) {
    fs.rmSync(reproducerDir, { recursive: true, force: true });
  }
});
