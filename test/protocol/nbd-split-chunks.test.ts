/**
 * Every frame of a whole session (handshake, options, a WRITE with payload, READs, block
 * status, DISC) split at every byte must give byte-identical server output, equal to the golden
 * frames in fixtures/wire/ (regenerate with XVD_UPDATE_GOLDEN=1 after a deliberate change).
 * Replies may legitimately come out of order, so transmission replies are compared grouped by
 * cookie; the handshake part is compared byte for byte.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { createServer } from '../../src/nbd/index';
import { createFixedProvider, memoryDisk, quietLog } from '../helpers/nbd-client';
import {
  CMD, INFO, OPT, clientFlags, goPayload, metaPayload, optionFrame, requestFrame,
} from '../helpers/wire';

const GOLDEN_DIR = path.join(__dirname, '..', '..', 'fixtures', 'wire');

function sessionBytes(): Buffer {
  return Buffer.concat([
    clientFlags(3),
    optionFrame(0x7654321, Buffer.from('junk')),
    optionFrame(OPT.LIST),
    optionFrame(OPT.STRUCTURED_REPLY),
    optionFrame(OPT.SET_META_CONTEXT, metaPayload('disk', ['base:allocation'])),
    optionFrame(OPT.GO, goPayload('disk', [INFO.BLOCK_SIZE, INFO.NAME])),
    requestFrame({ type: CMD.WRITE, offset: 1024, cookie: 0x0102030405060708n,
      payload: Buffer.alloc(600, 0xc3) }),
    requestFrame({ type: CMD.READ, offset: 4096, length: 600, cookie: 2n }),
    requestFrame({ type: CMD.BLOCK_STATUS, offset: 0, length: 65536, cookie: 3n }),
    requestFrame({ type: CMD.READ, offset: 1 << 30, length: 1, cookie: 4n }),
    requestFrame({ type: CMD.DISC }),
  ]);
}

/** Handshake bytes unchanged, then transmission replies grouped by cookie in cookie order. */
function normalize(output: Buffer): Buffer {
  let at = 18;
  for (;;) {
    const option = output.readUInt32BE(at + 8);
    const type = output.readUInt32BE(at + 12);
    at += 20 + output.readUInt32BE(at + 16);
    if (option === OPT.GO && type === 1) break;
  }
  const byCookie = new Map<bigint, Buffer[]>();
  const handshake = output.subarray(0, at);
  while (at < output.length) {
    const isSimple = output.readUInt32BE(at) === 0x67446698;
    const length = isSimple ? 16 : 20 + output.readUInt32BE(at + 16);
    const cookie = output.readBigUInt64BE(at + 8);
    byCookie.set(cookie, [...(byCookie.get(cookie) ?? []), output.subarray(at, at + length)]);
    at += length;
  }
  const cookies = [...byCookie.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return Buffer.concat([handshake, ...cookies.flatMap((cookie) => byCookie.get(cookie) ?? [])]);
}

/** Runs one session, feeding `parts` in order with a turn of the event loop between them. */
async function run(parts: Buffer[]): Promise<Buffer> {
  const server = createServer({
    provider: createFixedProvider([memoryDisk('disk', 1024 * 1024)]), log: quietLog });
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  const output: Buffer[] = [];
  toClient.on('data', (chunk: Buffer) => output.push(chunk));
  const done = server.serveStream(toServer, toClient);
  for (const part of parts) {
    toServer.write(part);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  return normalize(Buffer.concat(output));
}

t.test('a whole session split at every byte gives the golden server output', async (t) => {
  const input = sessionBytes();
  const whole = await run([input]);
  const goldenIn = path.join(GOLDEN_DIR, 'session-basic.client.hex');
  const goldenOut = path.join(GOLDEN_DIR, 'session-basic.server.hex');
  if (process.env['XVD_UPDATE_GOLDEN'] === '1') {
    fs.mkdirSync(GOLDEN_DIR, { recursive: true });
    fs.writeFileSync(goldenIn, input.toString('hex').replace(/(.{64})/g, '$1\n') + '\n');
    fs.writeFileSync(goldenOut, whole.toString('hex').replace(/(.{64})/g, '$1\n') + '\n');
  }
  const readHex = (file: string): Buffer => Buffer.from(fs.readFileSync(file, 'utf8')
    .replace(/\s+/g, ''), 'hex');
  t.ok(readHex(goldenIn).equals(input), 'client stream matches the golden file');
  t.ok(readHex(goldenOut).equals(whole), 'server output matches the golden file');
  let mismatches = 0;
  for (let cut = 1; cut < input.length; cut++) {
    const split = await run([input.subarray(0, cut), input.subarray(cut)]);
    if (!split.equals(whole)) mismatches++;
  }
  t.equal(mismatches, 0, `all ${input.length - 1} two-part splits give identical output`);
  const bytewise = await run([...input].map((byte) => Buffer.from([byte])));
  t.ok(bytewise.equals(whole), 'one byte per chunk gives identical output');
});
