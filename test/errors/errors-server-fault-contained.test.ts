import { Writable } from 'node:stream';
import pino from 'pino';
import t, { type Test } from 'tap';
import { ArenaReceiver } from '../../src/nbd/arena-receiver';
import { Framer } from '../../src/nbd/framer';
import type { NbdServerOptions } from '../../src/nbd/index';
import { checkHealthy, connectClient, createFixedProvider, memoryDisk, startServer }
  from '../helpers/nbd-client';
import { eventually } from '../helpers/waits';
import { CMD, OPT, goPayload } from '../helpers/wire';

// Containment: a bug while serving one connection (injected here on each path) ends that
// connection, is logged at error level with its stack and counted; the process and every other
// connection go on. Each case fails if the fault escapes (the test process dies), if it is not
// counted, or if it is not logged.

interface Logged { level: number; msg: string; err?: { stack?: string } }

function capturingLog(): { log: pino.Logger; errors: Logged[] } {
  const errors: Logged[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done): void {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue;
        const entry = JSON.parse(line) as Logged;
        if (entry.level >= 50) errors.push(entry);
      }
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), errors };
}

async function expectContained(t: Test, options: Partial<NbdServerOptions>,
  attack: (connectPort: number) => Promise<void>, where: string): Promise<void> {
  const { log, errors } = capturingLog();
  const { port, server } = await startServer(t, [memoryDisk()], { ...options, log });
  await attack(port);
  t.ok(await eventually(() => server.stats.connectionFaults === 1, 10_000), 'counted once');
  t.ok(await eventually(() => server.stats.connectionsOpen === 0, 10_000), 'that one ended');
  const logged = errors.find((entry) => entry.msg.startsWith('internal error'));
  t.ok(logged?.err?.stack?.includes('injected'), `logged with its stack (${where})`);
  t.equal(await checkHealthy(port), true, 'the server goes on');
}

async function goAndRead(t: Test, port: number): Promise<void> {
  const client = await connectClient(port);
  await client.handshake();
  client.request({ type: CMD.READ, offset: 0, length: 4096 });
  t.ok(await client.waitClosed(), 'the faulty connection is closed');
}

t.test('a fault in an option handler', async (t) => {
  const provider = createFixedProvider([memoryDisk()]);
  const open = provider.open;
  let isArmed = true;
  provider.open = async (name, domain) => {
    if (isArmed) {
      isArmed = false;
      throw new TypeError('injected: option fault');
    }
    return open(name, domain);
  };
  await expectContained(t, { provider }, async (port) => {
    const client = await connectClient(port);
    await client.start();
    client.sendOption(OPT.GO, goPayload('disk'));
    t.ok(await client.waitClosed(), 'the faulty connection is closed');
  }, 'option');
});

t.test('a fault while decoding a request (the pump)', async (t) => {
  const disk = memoryDisk();
  let isArmed = false;
  const faulty = new Proxy(disk, {
    get(target, key, receiver): unknown {
      if (key === 'size' && isArmed) {
        isArmed = false;
        throw new TypeError('injected: pump fault');
      }
      return Reflect.get(target, key, receiver);
    },
  });
  const provider = createFixedProvider([faulty]);
  await expectContained(t, { provider }, async (port) => {
    const client = await connectClient(port);
    await client.handshake();
    isArmed = true;
    client.request({ type: CMD.READ, offset: 0, length: 4096 });
    t.ok(await client.waitClosed(), 'the faulty connection is closed');
  }, 'pump');
});

for (const receive of ['arena', 'stream'] as const) {
  t.test(`a fault in the socket's receive path (${receive})`, async (t) => {
    const target = receive === 'arena' ? ArenaReceiver.prototype : Framer.prototype;
    const method = receive === 'arena' ? 'nextBuffer' : 'push';
    const original = (target as unknown as Record<string, unknown>)[method] as
      (...args: unknown[]) => unknown;
    // the third call on the first receiver made after arming: the greeting went out and the
    // handshake is under way (earlier servers' sockets may still call theirs)
    let victim: unknown = null;
    let calls = 0;
    (target as unknown as Record<string, unknown>)[method] = function (this: unknown,
      ...args: unknown[]): unknown {
      // the receiver the fault is aimed at: the first that calls after arming
      // eslint-disable-next-line @typescript-eslint/no-this-alias
      victim ??= this;
      // arena: nextBuffer()'s third call; stream: the chunk with the READ request
      const isDue = receive === 'arena' ? ++calls === 3 : (args[0] as Buffer).length === 28;
      if (this === victim && isDue) throw new TypeError('injected: receive fault');
      return original.apply(this, args);
    };
    t.teardown(() => {
      (target as unknown as Record<string, unknown>)[method] = original;
    });
    await expectContained(t, { receive }, async (port) => {
      await goAndRead(t, port).catch(() => undefined); // the handshake may break off anywhere
    }, receive);
  });
}

t.test('a fault while executing a request: an error reply, then the connection ends', async (t) => {
  const disk = memoryDisk();
  const read = disk.read.bind(disk);
  let isArmed = false;
  disk.read = (...args: Parameters<typeof read>) => {
    if (isArmed) {
      isArmed = false;
      throw new TypeError('injected: request fault');
    }
    return read(...args);
  };
  const provider = createFixedProvider([disk]);
  await expectContained(t, { provider }, async (port) => {
    const client = await connectClient(port);
    await client.handshake();
    isArmed = true;
    client.request({ type: CMD.READ, offset: 0, length: 4096, cookie: 9n });
    t.same(await client.readSimpleReply(), { errno: 5, cookie: 9n }, 'EIO for that request');
    t.ok(await client.waitClosed(), 'the faulty connection is closed');
  }, 'request');
});
