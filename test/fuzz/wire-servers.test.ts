/**
 * Coverage-guided wire fuzzing of the in-process server (wire-fuzz-driver.ts): a fixed-seed,
 * time-boxed campaign over TCP and Unix sockets, arena and stream receive, and a TLS server
 * (plaintext after STARTTLS). Any uncaught exception, unhandled rejection, contained connection
 * fault, hang, leaked connection, invalid reply frame or unserved well-behaved client fails the
 * test; its stream is written as a reproducer (fixtures/fuzz/wire/ with XVD_FUZZ_SAVE=1, else a
 * temporary directory named in the failure). Longer campaigns: `npm run fuzz -- --minutes N`.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { noteFault, runCampaign } from '../helpers/wire-fuzz-driver';

const SEED = Number(process.env['XVD_FUZZ_SEED'] ?? 15);
/** the npm test budget: about 30 s of streams on a shared 2-CPU machine */
const DURATION_MS = Number(process.env['XVD_FUZZ_MS'] ?? 30_000);
const STREAMS_MAX = 5000;
const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'fuzz', 'wire');

t.test(`the server survives fuzzed sessions (seed ${SEED})`, async (t) => {
  const onException = (error: unknown): void => noteFault('uncaughtException', error);
  const onRejection = (error: unknown): void => noteFault('unhandledRejection', error);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  });
  const reproducerDir = process.env['XVD_FUZZ_SAVE'] === '1' ? FIXTURES
    : fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-wire-fuzz-'));
  const result = await runCampaign({ seed: SEED, streamsMax: STREAMS_MAX,
    durationMs: DURATION_MS, reproducerDir });
  const total = Object.values(result.streams).reduce((sum, count) => sum + count, 0);
  t.comment(`streams ${JSON.stringify(result.streams)}, ${result.bytesSent} bytes sent, ` +
    `corpus ${result.corpus}`);
  t.comment(`coverage of src/nbd: ${JSON.stringify(result.coverage)}`);
  t.ok(total >= 100, `enough streams ran (${total})`);
  for (const finding of result.findings) {
    t.fail(`${finding.verdict} on ${finding.target}: ${finding.detail.slice(0, 600)}`,
      { reproducer: finding.file });
  }
  if (result.findings.length === 0 && reproducerDir !== FIXTURES) {
    fs.rmSync(reproducerDir, { recursive: true, force: true });
  }
});
