/**
 * Sockets read into arenas (nbd/arena-receiver.ts) against sockets read through stream chunks:
 * the same pipelined WRITEs of every awkward size (1 byte, odd lengths, 1 MiB + 3, the 32 MiB
 * maximum, one oversize WRITE the server must read and discard), sent in pieces of random size
 * over TCP and a Unix socket, must leave the same bytes in the export and get the same replies.
 * Then nbdcopy (multi-connection, 256 KiB requests) writes a random file in and reads it back.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { LIMITS } from '../../src/limits';
import {
  ScriptedClient, hasTool, memoryDisk, runTool, startServer,
} from '../helpers/nbd-client';
import { CMD, ERRNO, requestFrame } from '../helpers/wire';

const DISK_BYTES = 96 * 1024 * 1024;

interface Write {
  offset: number;
  payload: Buffer;
  expectErrno: number;
}

function writesFor(seed: number): Write[] {
  const random = crypto.createHash('sha256').update(String(seed)).digest();
  const lengths = [1, 511, 4096, 65_535, 65_536 + 7, 1024 * 1024 + 3, 3 * 1024 * 1024,
    LIMITS.nbdPayloadMax, 28, 200_000];
  let offset = 0;
  const writes = lengths.map((length, index) => {
    const payload = crypto.randomBytes(length);
    payload[0] = random[index] ?? 0;
    const write = { offset, payload, expectErrno: 0 };
    offset += length + 4096;
    return write;
  });
  // past nbdPayloadMax: read and discarded, answered EINVAL, the stream stays in step
  writes.splice(4, 0, { offset: 0, payload: Buffer.alloc(LIMITS.nbdPayloadMax + 1, 0xee),
    expectErrno: ERRNO.EINVAL });
  return writes;
}

function connect(target: { port: number } | { path: string }): Promise<ScriptedClient> {
  return new Promise((resolve, reject) => {
    const socket = 'port' in target
      ? net.connect(target.port, '127.0.0.1')
      : net.connect(target.path);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(new ScriptedClient(socket, socket));
    });
    socket.once('error', reject);
  });
}

/** Sends all writes pipelined, cut into pieces of pseudo-random size; returns errnos by index. */
async function pipelinedWrites(client: ScriptedClient, writes: Write[]): Promise<number[]> {
  const stream = Buffer.concat(writes.map((write, index) => requestFrame({
    type: CMD.WRITE, offset: write.offset, cookie: BigInt(index + 1), payload: write.payload,
  })));
  let at = 0;
  let piece = 0;
  while (at < stream.length) {
    const size = [1, 27, 4096, 100_003, 1 << 20, 5 << 20][piece % 6] ?? 1;
    client.write(stream.subarray(at, Math.min(stream.length, at + size)));
    at += size;
    piece += 1;
    if (piece % 7 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const errnos = new Array<number>(writes.length).fill(-1);
  for (let count = 0; count < writes.length; count += 1) {
    const reply = await client.readSimpleReply();
    errnos[Number(reply.cookie) - 1] = reply.errno;
  }
  return errnos;
}

for (const receive of ['arena', 'stream'] as const) {
  t.test(`${receive}: pipelined WRITEs of every size, cut anywhere, land intact`, async (t) => {
    const disk = memoryDisk('disk', DISK_BYTES);
    const served = await startServer(t, [disk], { receive });
    for (const [index, target] of [{ port: served.port }, { path: served.socketPath }]
      .entries()) {
      const client = await connect(target);
      await client.handshake();
      const writes = writesFor(index);
      const errnos = await pipelinedWrites(client, writes);
      t.same(errnos, writes.map((write) => write.expectErrno), 'replies');
      for (const write of writes) {
        if (write.expectErrno !== 0) continue;
        const back = await client.readData(write.offset, write.payload.length);
        if (!back.equals(write.payload)) {
          t.fail(`${'port' in target ? 'tcp' : 'unix'}: ${write.payload.length} bytes at ` +
            `${write.offset} differ`);
        }
      }
      client.end();
      t.ok(await client.waitClosed(), 'server closes after the client ends');
    }
    const expectArena = receive === 'arena' ? 2 : 0;
    t.equal(served.server.stats.connectionsArena, expectArena, 'connections read into arenas');
  });
}

t.test('nbdcopy in and out through arenas: the same bytes', async (t) => {
  if (!hasTool('nbdcopy')) {
    t.skip('nbdcopy missing (npm test installs libnbd-bin)', () => undefined);
    return;
  }
  const disk = memoryDisk('disk', 64 * 1024 * 1024);
  const served = await startServer(t, [disk]);
  const dir = t.testdir();
  const source = path.join(dir, 'source.img');
  fs.writeFileSync(source, crypto.randomBytes(64 * 1024 * 1024));
  const into = await runTool('nbdcopy', ['--request-size=1048576', source, served.uri()]);
  t.equal(into.code, 0, `nbdcopy in: ${into.stderr}`);
  const out = path.join(dir, 'out.img');
  const back = await runTool('nbdcopy', [served.unixUri(), out]);
  t.equal(back.code, 0, `nbdcopy out: ${back.stderr}`);
  const digest = (file: string): string =>
    crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  t.equal(digest(out), digest(source));
  t.ok(served.server.stats.connectionsArena >= 2, 'nbdcopy connections were read into arenas');
});
