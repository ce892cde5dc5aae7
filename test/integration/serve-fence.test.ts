/**
 * Invariant 2 end to end, across processes: a client writes a marker in a tight loop to a VD
 * served by a real `xvd serve` process while other `xvd` processes delete that VD and create a
 * new one that can only land on the same extents. The new VD must read as zeros everywhere (no
 * marker byte ever lands after the extents changed hands), and the old client must be told
 * (NBD_ESHUTDOWN or a closed connection).
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, runXvd, startServeOnSocket } from '../helpers/cli';
import { type ScriptedClient, connectUnix } from '../helpers/nbd-client';
import { shortTempDir } from '../helpers/process';

const MiB = 1024 * 1024;
const DISK = 8 * MiB;
const WRITE = 64 * 1024;
const MARKER = 0xa5;
const ESHUTDOWN = 108;
const WRITES_BEFORE_DELETE = 40;
const LOOP_MAX = 200_000;

/** A short socket path: t.testdir() paths can pass the 108-byte sun_path limit. */
function socketPath(t: Test): string {
  return path.join(shortTempDir(t), 'nbd.sock');
}

interface WriterResult {
  acked: number;
  endedBy: 'eshutdown' | 'closed' | 'error' | 'limit';
}

/** Writes the marker round-robin over the disk, one request at a time, until refused. */
async function writeLoop(client: ScriptedClient, signal: { stop: boolean },
  onAck: (count: number) => void): Promise<WriterResult> {
  const payload = Buffer.alloc(WRITE, MARKER);
  let acked = 0;
  for (let index = 0; index < LOOP_MAX && !signal.stop; index++) {
    const offset = (index * WRITE) % DISK;
    try {
      client.request({ type: 1, offset, cookie: BigInt(index + 1), payload });
      const reply = await client.readSimpleReply();
      if (reply.errno === ESHUTDOWN) return { acked, endedBy: 'eshutdown' };
      if (reply.errno !== 0) return { acked, endedBy: 'error' };
    } catch {
      return { acked, endedBy: 'closed' };
    }
    acked += 1;
    onAck(acked);
  }
  return { acked, endedBy: 'limit' };
}

async function setup(t: Test): Promise<{ catalog: string; image: string }> {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), DISK);
  const formatted = await runXvd(['format', image, '--extent-size', '1M'], { catalog });
  t.equal(formatted.code, 0, formatted.stderr);
  const created = await runXvd(['create', '8M', '--name', 'old'], { catalog });
  t.equal(created.code, 0, created.stderr);
  const added = await runXvd(['vbd', 'add', `vd:${created.stdout.trim()}`, 'xvda', '--domain',
    '1', '--mode', 'w'], { catalog });
  t.equal(added.code, 0, added.stderr);
  return { catalog, image };
}

function assertAllZero(t: Test, data: Buffer, what: string): void {
  const marker = data.indexOf(MARKER);
  t.equal(marker, -1, `${what}: no marker byte (first at ${marker})`);
  t.ok(data.equals(Buffer.alloc(data.length)), `${what}: every byte is zero`);
}

t.test('a VD deleted under a writing client is fenced before its extents go to a new VD',
  async (t) => {
    const { catalog, image } = await setup(t);
    const socket = socketPath(t);
    const server = await startServeOnSocket(t, catalog, socket);
    const client = await connectUnix(socket);
    await client.handshake({ name: '1/xvda' });
    const signal = { stop: false };
    let reachedWrites: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (reachedWrites = resolve));
    const writer = writeLoop(client, signal, (count) => {
      if (count === WRITES_BEFORE_DELETE) reachedWrites();
    });
    await reached;

    const deleted = await runXvd(['delete', '1'], { catalog });
    t.equal(deleted.code, 0, deleted.stderr);
    const created = await runXvd(['create', '8M', '--name', 'new'], { catalog });
    t.equal(created.code, 0, created.stderr);
    const newId = created.stdout.trim();
    t.equal(newId, '2');
    const shown = JSON.parse((await runXvd(['show', newId, '--json'], { catalog })).stdout) as
      { extents: { path: string }[] };
    t.ok(shown.extents.length > 0 && shown.extents.every((e) => e.path === fs.realpathSync(image)),
      'the new VD lies on the only pool member, so on the old VD\'s extents');

    // the old client keeps trying for a moment: nothing it sends may land any more
    await new Promise((resolve) => setTimeout(resolve, 300));
    signal.stop = true;
    const result = await writer;
    t.ok(result.acked >= WRITES_BEFORE_DELETE, `the writer wrote (${result.acked} acks)`);
    t.ok(result.endedBy === 'eshutdown' || result.endedBy === 'closed',
      `the old client was fenced (${result.endedBy})`);
    client.end();

    assertAllZero(t, fs.readFileSync(image), 'pool image after the new VD was created');
    const attached = await runXvd(['vbd', 'add', `vd:${newId}`, 'xvdb', '--domain', '2',
      '--mode', 'r'], { catalog });
    t.equal(attached.code, 0, attached.stderr);
    const reader = await connectUnix(socket);
    const { size } = await reader.handshake({ name: '2/xvdb' });
    t.equal(size, BigInt(DISK));
    assertAllZero(t, await reader.readData(0, DISK), 'the new VD over NBD');
    reader.end();

    server.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => server.on('exit', resolve));
    t.equal(code, 0, 'serve exits 0 on SIGTERM');
    const check = await runXvd(['check'], { catalog });
    t.equal(check.code, 0, check.stdout + check.stderr);
  });

t.test('the leases of a SIGKILLed server stop counting at once', async (t) => {
  const { catalog, image } = await setup(t);
  const socket = socketPath(t);
  const server = await startServeOnSocket(t, catalog, socket);
  const client = await connectUnix(socket);
  await client.handshake({ name: '1/xvda' });
  client.request({ type: 1, offset: 0, cookie: 1n, payload: Buffer.alloc(WRITE, MARKER) });
  t.equal((await client.readSimpleReply()).errno, 0, 'a write landed while served');
  server.kill('SIGKILL');
  await new Promise((resolve) => server.on('exit', resolve));
  client.end();
  t.equal((await runXvd(['delete', '1'], { catalog })).code, 0);
  const created = await runXvd(['create', '8M'], { catalog, timeoutMs: 20_000 });
  t.equal(created.code, 0, `create succeeds without the dead server (${created.stderr})`);
  assertAllZero(t, fs.readFileSync(image), 'pool image');
  t.equal((await runXvd(['check'], { catalog })).code, 0);
});
