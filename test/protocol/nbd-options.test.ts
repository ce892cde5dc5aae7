import t from 'tap';
import { createServer } from '../../src/nbd/index';
import {
  createFixedProvider, memoryDisk, quietLog, startServer, streamClient,
} from '../helpers/nbd-client';
import {
  EFLAG, INFO, OPT, REP, clientFlags, goPayload, metaPayload, optionFrame,
} from '../helpers/wire';

function serverWith(names: string[] = ['disk'], domains = {}) {
  const exports = names.map((name) => memoryDisk(name, 1024 * 1024));
  const provider = createFixedProvider(exports, domains);
  return { provider, server: createServer({ provider, log: quietLog }) };
}

t.test('NBD_OPT_LIST names every export the provider shows, with descriptions', async (t) => {
  const { server } = serverWith(['a', 'b'], { b: [7] });
  const { client } = streamClient(server);
  await client.start();
  const replies = await client.option(OPT.LIST);
  t.same(replies.map((reply) => reply.type), [REP.SERVER, REP.ACK], 'b is hidden from null');
  const entry = replies[0]!.payload;
  t.equal(entry.subarray(4, 4 + entry.readUInt32BE(0)).toString(), 'a');
  t.equal(entry.subarray(5).toString(), 'test disk a');
  const withPayload = await client.option(OPT.LIST, Buffer.from('x'));
  t.equal(withPayload[0]!.type, REP.ERR_INVALID);
  t.equal((await client.option(OPT.LIST))[1]!.type, REP.ACK, 'a second LIST still works');
});

t.test('INFO then GO on the same export opens it twice and releases the INFO handle',
  async (t) => {
    const { server, provider } = serverWith();
    const { client } = streamClient(server);
    await client.start();
    const info = await client.option(OPT.INFO,
      goPayload('disk', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE]));
    t.same(info.map((reply) => reply.payload.length > 1 ? reply.payload.readUInt16BE(0) : -1),
      [INFO.EXPORT, INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, -1]);
    t.equal(info[1]!.payload.subarray(2).toString(), 'disk');
    const block = info[3]!.payload;
    t.same([block.readUInt32BE(2), block.readUInt32BE(6), block.readUInt32BE(10)],
      [1, 4096, 32 * 1024 * 1024]);
    t.equal(provider.releases, 1, 'INFO released its handle');
    const go = await client.option(OPT.GO, goPayload('disk'));
    t.same(go.map((reply) => reply.type), [REP.INFO, REP.ACK], 'GO without info requests');
    t.equal(provider.opens, 2);
    client.request({ type: 2 });
    t.equal(await client.waitClosed(), true);
    await new Promise((resolve) => setImmediate(resolve));
    t.equal(provider.releases, 2, 'GO handle released at close');
  });

t.test('GO for an unknown export and an empty name: ERR_UNKNOWN, then default export',
  async (t) => {
    const { server } = serverWith(['first', 'second']);
    const { client } = streamClient(server);
    await client.start();
    const unknown = await client.option(OPT.GO, goPayload('x'.repeat(4096)));
    t.equal(unknown[0]!.type, REP.ERR_UNKNOWN);
    t.ok(unknown[0]!.payload.length <= 256, 'no echo of the long name');
    const replies = await client.option(OPT.GO, goPayload('', [INFO.NAME]));
    t.equal(replies[1]!.payload.subarray(2).toString(), 'first');
  });

for (const noZeroes of [true, false]) {
  t.test(`EXPORT_NAME ${noZeroes ? 'with' : 'without'} NO_ZEROES sends exactly ` +
    `${noZeroes ? 10 : 134} bytes`, async (t) => {
    const { server } = serverWith();
    const { client } = streamClient(server);
    await client.readGreeting();
    client.write(clientFlags(noZeroes ? 3 : 1));
    client.write(optionFrame(OPT.EXPORT_NAME, Buffer.from('disk')));
    const reply = await client.read(noZeroes ? 10 : 134);
    t.equal(reply.readBigUInt64BE(0), 1024n * 1024n);
    t.ok(reply.readUInt16BE(8) & EFLAG.HAS_FLAGS);
    t.equal(reply.subarray(10).every((byte) => byte === 0), true);
    const data = await client.readData(0, 512, 9n);
    t.equal(data.length, 512, 'the stream is in sync after the reply');
    client.end();
  });
}

t.test('non-fixed newstyle: EXPORT_NAME works, any other option closes', async (t) => {
  const { server } = serverWith();
  const first = streamClient(server).client;
  await first.start(0);
  first.write(optionFrame(OPT.EXPORT_NAME, Buffer.from('disk')));
  t.equal((await first.read(134)).readBigUInt64BE(0), 1024n * 1024n);
  first.end();
  const second = streamClient(server).client;
  await second.start(0);
  second.sendOption(OPT.LIST);
  t.equal(await second.waitClosed(), true);
});

t.test('an unknown option gets ERR_UNSUP and the stream stays in sync', async (t) => {
  const { server } = serverWith();
  const { client } = streamClient(server);
  await client.start();
  const unsupported = await client.option(0x7654321, Buffer.from([1, 2, 3, 4]));
  t.equal(unsupported[0]!.type, REP.ERR_UNSUP);
  t.equal(unsupported[0]!.option, 0x7654321);
  const go = await client.option(OPT.GO, goPayload('disk'));
  t.equal(go[go.length - 1]!.type, REP.ACK);
});

t.test('meta contexts: LIST offers base:allocation; SET needs structured replies first',
  async (t) => {
    const { server } = serverWith();
    const { client } = streamClient(server);
    await client.start();
    const listed = await client.option(OPT.LIST_META_CONTEXT, metaPayload('disk', []));
    t.equal(listed[0]!.type, REP.META_CONTEXT);
    t.equal(listed[0]!.payload.subarray(4).toString(), 'base:allocation');
    const early = await client.option(OPT.SET_META_CONTEXT, metaPayload('disk', ['base:']));
    t.equal(early[0]!.type, REP.ERR_INVALID);
    await client.option(OPT.STRUCTURED_REPLY);
    const twice = await client.option(OPT.STRUCTURED_REPLY);
    t.equal(twice[0]!.type, REP.ACK, 'a repeated STRUCTURED_REPLY is acknowledged');
    const set = await client.option(OPT.SET_META_CONTEXT,
      metaPayload('disk', ['qemu:dirty-bitmap:x', 'base:allocation']));
    t.same(set.map((reply) => reply.type), [REP.META_CONTEXT, REP.ACK]);
    t.equal(set[0]!.payload.readUInt32BE(0), 1);
    const unknown = await client.option(OPT.SET_META_CONTEXT, metaPayload('nope', ['base:']));
    t.equal(unknown[0]!.type, REP.ERR_UNKNOWN);
  });

t.test('ABORT is acknowledged and the connection closes; STARTTLS without TLS is refused',
  async (t) => {
    const { server } = serverWith();
    const { client } = streamClient(server);
    await client.start();
    t.equal((await client.option(OPT.STARTTLS))[0]!.type, REP.ERR_POLICY);
    t.equal((await client.option(OPT.ABORT))[0]!.type, REP.ACK);
    t.equal(await client.waitClosed(), true);
  });

t.test('fenceExport lets the request in flight finish and refuses later ones with ESHUTDOWN',
  async (t) => {
    const disk = memoryDisk();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const original = disk.write.bind(disk);
    disk.write = async (offset, data, flags) => {
      await gate;
      return original(offset, data, flags);
    };
    const { server, connect } = await startServer(t, [disk, memoryDisk('other')]);
    const client = await connect();
    await client.handshake();
    const bystander = await connect();
    await bystander.handshake({ name: 'other' });
    client.request({ type: 1, offset: 0, cookie: 1n, payload: Buffer.alloc(512, 1) });
    await new Promise((resolve) => setTimeout(resolve, 50));
    let isFenced = false;
    const fenced = server.fenceExport('disk').then(() => { isFenced = true; });
    await new Promise((resolve) => setImmediate(resolve));
    t.equal(isFenced, false, 'fence waits for the write in flight');
    release();
    await fenced;
    t.same(await client.readSimpleReply(), { errno: 0, cookie: 1n }, 'in-flight write finished');
    client.request({ type: 0, offset: 0, length: 512, cookie: 2n });
    t.same(await client.readSimpleReply(), { errno: 108, cookie: 2n });
    const data = await bystander.readData(0, 512);
    t.equal(data.length, 512, 'another export is unaffected');
    client.end();
    bystander.end();
  });

t.test('close() finishes requests, answers new negotiation with nothing, and resolves',
  async (t) => {
    const disk = memoryDisk();
    const { server, connect } = await startServer(t, [disk]);
    const client = await connect();
    await client.handshake();
    client.request({ type: 1, offset: 0, cookie: 3n, payload: Buffer.alloc(4096, 3) });
    t.same(await client.readSimpleReply(), { errno: 0, cookie: 3n });
    const flushesBefore = disk.counts.flush;
    await server.close({ graceMs: 5000 });
    t.equal(disk.counts.flush, flushesBefore + 1, 'exports flushed at close');
    t.equal(await client.waitClosed(), true);
  });

t.test('a GO that opened the export just before fenceExport binds already fenced', async (t) => {
  const disk = memoryDisk();
  const provider = createFixedProvider([disk]);
  let releaseOpen: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => { releaseOpen = resolve; });
  const open = provider.open;
  provider.open = async (name, domain) => {
    const handle = await open(name, domain);
    await opened; // the provider has opened it; the server has not bound it yet
    return handle;
  };
  const server = createServer({ provider, log: quietLog });
  const { client } = streamClient(server);
  await client.start();
  client.sendOption(OPT.GO, goPayload('disk'));
  await new Promise((resolve) => setTimeout(resolve, 20));
  await server.fenceExport('disk');
  releaseOpen();
  const replies = await client.readOptionReplies();
  t.equal(replies[replies.length - 1]?.type, REP.ACK);
  client.request({ type: 0, offset: 0, length: 512, cookie: 1n });
  t.same(await client.readSimpleReply(), { errno: 108, cookie: 1n }, 'ESHUTDOWN');
  t.equal(disk.counts.read, 0, 'nothing reached the export');
});
