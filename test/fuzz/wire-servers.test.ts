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
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { conversationContext, PROFILE, runCampaign, watchProcessFaults }
  from '../helpers/wire-fuzz-driver';
import { checkConversation } from '../helpers/wire-fuzz-replies';
import { CMD, OPT, REP, clientFlags, goPayload, optionFrame, requestFrame, u16, u32, u64 }
  from '../helpers/wire';

const SEED = Number(process.env['XVD_FUZZ_SEED'] ?? 15);
/** the npm test budget: about 25 s of streams on a shared 2-CPU machine */
const DURATION_MS = Number(process.env['XVD_FUZZ_MS'] ?? 25_000);
const STREAMS_MAX = 5000;
const FIXTURES = path.resolve(__dirname, '..', '..', 'fixtures', 'fuzz', 'wire');

t.test(`the server survives fuzzed sessions (seed ${SEED})`, async (t) => {
  watchProcessFaults(t);
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
  const leftover = destroyLeftoverTcp();
  t.comment(`TCP sockets left open after every server closed: ${leftover.length}` +
    (leftover.length > 0 ? ` (${leftover.join(', ')})` : ''));
});

// Once every test is done and the event loop is empty, exit without Node's exit-time handle
// cleanup: in 5 of 9 full runs this process spun there (Environment::CleanupHandles running
// uv_run in a loop, on a socket whose connection had ended) until tap killed it at its timeout,
// after every assertion had passed. The output is flushed by then (pending writes keep the loop
// alive), and process.exitCode carries tap's verdict. Which handle never closes is still open.
process.once('beforeExit', () => process.exit());

/**
 * Destroys the TCP sockets still open once the campaign closed every server, and names them.
 * One left to Node's exit-time handle cleanup made this process spin there after its last test
 * (Environment::CleanupHandles, seen in 4 of 7 full runs, never alone; which socket stays open,
 * and why, is still open), so tap killed it at its timeout.
 */
function destroyLeftoverTcp(): string[] {
  const proc = process as unknown as { _getActiveHandles(): unknown[] };
  const left: string[] = [];
  for (const handle of proc._getActiveHandles()) {
    if (!(handle instanceof net.Socket)) continue;
    const inner = (handle as unknown as { _handle?: { constructor?: { name?: string } } })._handle;
    if (inner?.constructor?.name !== 'TCP') continue;
    left.push(`${String(handle.localPort)}->${String(handle.remotePort)}` +
      `${handle.destroyed ? ' destroyed' : ''}`);
    handle.destroy();
  }
  return left;
}

t.test('the reply oracle accepts a valid conversation and rejects broken frames', async (t) => {
  const context = conversationContext(PROFILE.sizes);
  const client = Buffer.concat([clientFlags(3), optionFrame(OPT.GO, goPayload('disk')),
    requestFrame({ type: CMD.READ, cookie: 5n, offset: 0, length: 4 }),
    requestFrame({ type: CMD.FLUSH, cookie: 6n })]);
  const greeting = Buffer.concat([Buffer.from('NBDMAGICIHAVEOPT'), u16(3)]);
  const optionReply = (type: number, payload: Buffer): Buffer => Buffer.concat([
    Buffer.from('0003e889045565a9', 'hex'), u32(OPT.GO), u32(type), u32(payload.length), payload]);
  const info = optionReply(REP.INFO, Buffer.concat([u16(0), u64(PROFILE.sizes[0]!), u16(1)]));
  const simple = (errno: number, cookie: bigint): Buffer =>
    Buffer.concat([u32(0x67446698), u32(errno), u64(cookie)]);
  const valid = [greeting, info, optionReply(REP.ACK, Buffer.alloc(0)), simple(0, 6n),
    simple(0, 5n), Buffer.alloc(4)];
  t.equal(checkConversation(client, Buffer.concat(valid), context), null, 'valid');
  t.equal(checkConversation(client, Buffer.concat(valid).subarray(0, 70), context), null,
    'a truncated tail is fine (the connection closed)');
  const broken: [string, Buffer[]][] = [
    ['a reply to a cookie never sent', [greeting, info, optionReply(REP.ACK, Buffer.alloc(0)),
      simple(0, 7n)]],
    ['GO acknowledged without NBD_INFO_EXPORT', [greeting, optionReply(REP.ACK, Buffer.alloc(0))]],
    ['a bad reply magic', [greeting, info, optionReply(REP.ACK, Buffer.alloc(0)),
      Buffer.from('0123456789abcdef0123456789abcdef', 'hex')]],
    ['a structured chunk without NBD_OPT_STRUCTURED_REPLY', [greeting, info,
      optionReply(REP.ACK, Buffer.alloc(0)), u32(0x668e33ef), u16(1), u16(0), u64(6n), u32(0)]],
    ['a READ answered twice', [...valid, simple(0, 5n), Buffer.alloc(4)]],
  ];
  for (const [what, frames] of broken) {
    t.not(checkConversation(client, Buffer.concat(frames), context), null, what);
  }
});
