import t from 'tap';
import { createServer } from '../../src/nbd/index';
import {
  createFixedProvider, memoryDisk, quietLog, startServer, streamClient,
} from '../helpers/nbd-client';
import {
  CMD, CMD_FLAG, EFLAG, ERRNO, INFO, OPT, REP, REPLY_TYPE, goPayload,
} from '../helpers/wire';

t.test('a fixed-newstyle client writes, reads back and disconnects over a stream pair',
  async (t) => {
    const disk = memoryDisk();
    const server = createServer({ provider: createFixedProvider([disk]), log: quietLog });
    const { client, done } = streamClient(server);
    const greeting = await client.readGreeting();
    t.equal(greeting.magic.toString('latin1'), 'NBDMAGICIHAVEOPT');
    t.equal(greeting.flags, 3, 'FIXED_NEWSTYLE | NO_ZEROES');
    client.write(Buffer.from([0, 0, 0, 3]));
    const replies = await client.option(OPT.GO, goPayload('disk', [INFO.BLOCK_SIZE]));
    t.same(replies.map((reply) => reply.type), [REP.INFO, REP.INFO, REP.ACK]);
    const info = replies[0]!.payload;
    t.equal(info.readBigUInt64BE(2), 64n * 1024n * 1024n);
    const eflags = info.readUInt16BE(10);
    t.ok(eflags & EFLAG.SEND_FLUSH && eflags & EFLAG.SEND_TRIM && eflags & EFLAG.CAN_MULTI_CONN);
    t.equal(eflags & EFLAG.READ_ONLY, 0);
    const data = Buffer.alloc(8192, 0xab);
    client.request({ type: CMD.WRITE, offset: 4096, cookie: 0xffffffffffffffffn, payload: data });
    t.same(await client.readSimpleReply(), { errno: 0, cookie: 0xffffffffffffffffn });
    t.ok((await client.readData(4096, 8192, 0n)).equals(data));
    t.ok(disk.snapshot().subarray(4096, 12288).equals(data), 'data reached the export');
    client.request({ type: CMD.DISC });
    await done;
    t.equal(await client.waitClosed(), true);
  });

t.test('requests pipelined at depth 32 are all answered with their own cookies', async (t) => {
  const disk = memoryDisk();
  const { connect } = await startServer(t, [disk]);
  const client = await connect();
  await client.handshake();
  for (let index = 0; index < 32; index++) {
    client.request({ type: CMD.WRITE, offset: index * 4096, cookie: BigInt(1000 + index),
      payload: Buffer.alloc(4096, index) });
  }
  const cookies = new Set<bigint>();
  for (let index = 0; index < 32; index++) {
    const reply = await client.readSimpleReply();
    t.equal(reply.errno, 0);
    cookies.add(reply.cookie);
  }
  t.equal(cookies.size, 32);
  const back = await client.readData(31 * 4096, 4096);
  t.ok(back.equals(Buffer.alloc(4096, 31)));
  client.end();
});

t.test('a 32 MiB write and a 32 MiB read both succeed', async (t) => {
  const disk = memoryDisk('disk', 64 * 1024 * 1024);
  const { connect } = await startServer(t, [disk]);
  const client = await connect();
  await client.handshake();
  const data = Buffer.alloc(32 * 1024 * 1024);
  for (let index = 0; index < data.length; index += 4096) data.writeUInt32BE(index, index);
  client.request({ type: CMD.WRITE, offset: 0, cookie: 5n, payload: data });
  t.same(await client.readSimpleReply(), { errno: 0, cookie: 5n });
  t.ok((await client.readData(0, data.length)).equals(data));
  client.end();
});

t.test('structured replies: OFFSET_DATA for reads, holes for unwritten ranges, block status',
  async (t) => {
    const disk = memoryDisk('disk', 16 * 1024 * 1024);
    const { connect } = await startServer(t, [disk]);
    const client = await connect();
    const { eflags } = await client.handshake({ structured: true, meta: true });
    t.ok(eflags & EFLAG.SEND_DF, 'DF advertised with structured replies');
    client.request({ type: CMD.WRITE, offset: 0, cookie: 1n, payload: Buffer.alloc(65536, 7) });
    t.equal((await client.readSimpleReply()).errno, 0);
    client.request({ type: CMD.READ, offset: 0, length: 4096, cookie: 2n });
    const small = await client.readChunk();
    t.equal(small.type, REPLY_TYPE.OFFSET_DATA);
    t.equal(small.flags & 1, 1, 'DONE');
    t.equal(small.payload.readBigUInt64BE(0), 0n);
    t.ok(small.payload.subarray(8).equals(Buffer.alloc(4096, 7)));
    client.request({ type: CMD.READ, offset: 0, length: 1024 * 1024, cookie: 3n });
    const first = await client.readChunk();
    const second = await client.readChunk();
    t.equal(first.type, REPLY_TYPE.OFFSET_DATA);
    t.equal(first.payload.length, 8 + 65536);
    t.equal(second.type, REPLY_TYPE.OFFSET_HOLE);
    t.equal(second.payload.readBigUInt64BE(0), 65536n);
    t.equal(second.payload.readUInt32BE(8), 1024 * 1024 - 65536);
    t.equal(second.flags & 1, 1, 'last chunk is DONE');
    client.request({ type: CMD.BLOCK_STATUS, offset: 0, length: 1024 * 1024, cookie: 4n });
    const status = await client.readChunk();
    t.equal(status.type, REPLY_TYPE.BLOCK_STATUS);
    t.equal(status.payload.readUInt32BE(0), 1, 'context id from SET_META_CONTEXT');
    t.equal(status.payload.readUInt32BE(4), 65536);
    t.equal(status.payload.readUInt32BE(8), 0, 'data');
    t.equal(status.payload.readUInt32BE(16), 3, 'hole and zero');
    client.request({ type: CMD.BLOCK_STATUS, flags: CMD_FLAG.REQ_ONE, offset: 0,
      length: 1024 * 1024, cookie: 5n });
    t.equal((await client.readChunk()).payload.length, 4 + 8, 'REQ_ONE gives one run');
    client.request({ type: CMD.READ, offset: 16 * 1024 * 1024, length: 512, cookie: 6n });
    const error = await client.readChunk();
    t.equal(error.type, REPLY_TYPE.ERROR);
    t.equal(error.payload.readUInt32BE(0), ERRNO.EINVAL);
    client.end();
  });
