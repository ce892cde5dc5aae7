/**
 * tuneSocket (nbd/user-buffer-socket.ts) on real accepted sockets: on a unix socket the kernel
 * reports the send buffer asked for (doubled, as it reports every SO_SNDBUF) when the process may
 * force it; a TCP socket and a socket without a descriptor are left alone.
 * ReceiveLowWater follows the frame in progress on TCP (SO_RCVLOWAT read back from the kernel)
 * and is not made for unix sockets.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { LIMITS } from '../../src/limits';
import { receiveLowWaterOf, socketFdOf, tuneSocket } from '../../src/nbd/user-buffer-socket';
import * as sys from '../../src/sys/index';

async function acceptedPair(listenOn: net.ListenOptions): Promise<{
  accepted: net.Socket; client: net.Socket; close(): Promise<void>;
}> {
  const server = net.createServer();
  const acceptedPromise = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(listenOn, resolve));
  const address = server.address();
  const client = typeof address === 'string'
    ? net.connect(address)
    : net.connect((address as net.AddressInfo).port, '127.0.0.1');
  const accepted = await acceptedPromise;
  return {
    accepted, client,
    close: async () => {
      client.destroy();
      accepted.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const isRoot = process.getuid?.() === 0;

for (const kind of ['tcp', 'unix'] as const) {
  t.test(`${kind}: the send buffer is raised on unix sockets only`, async (t) => {
    if (!sys.isNative) {
      t.skip('native addon not built', () => undefined);
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-tune-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const pair = await acceptedPair(kind === 'tcp'
      ? { host: '127.0.0.1', port: 0 }
      : { path: path.join(dir, 's') });
    t.teardown(() => pair.close());
    const fd = socketFdOf(pair.accepted);
    t.type(fd, 'number', 'an accepted socket has a descriptor');
    const before = sys.getSockOptInt(fd ?? -1, sys.constants.SOL_SOCKET, sys.constants.SO_SNDBUF);
    const after = tuneSocket(pair.accepted);
    t.equal(after, sys.getSockOptInt(fd ?? -1, sys.constants.SOL_SOCKET,
      sys.constants.SO_SNDBUF), 'returns what the kernel reports');
    if (kind === 'tcp') {
      t.equal(after, before, 'TCP is left to autotuning');
    } else if (isRoot) {
      t.equal(after, 2 * LIMITS.nbdSocketSendBufferBytes, 'forced to the limit (doubled)');
      t.ok(after > before, `raised from ${before}`);
    } else {
      t.ok(after > 0, 'set within net.core.wmem_max');
    }
  });
}

t.test('a socket with no descriptor is left alone', async (t) => {
  t.equal(tuneSocket(new net.Socket()), -9);
  t.equal(socketFdOf(new net.Socket()), null);
});

t.test('SO_RCVLOWAT follows the frame in progress on TCP, and only there', async (t) => {
  if (!sys.isNative) {
    t.skip('native addon not built', () => undefined);
    return;
  }
  const pair = await acceptedPair({ host: '127.0.0.1', port: 0 });
  t.teardown(() => pair.close());
  const lowWater = receiveLowWaterOf(pair.accepted);
  t.ok(lowWater !== null, 'made for a TCP socket');
  const fd = socketFdOf(pair.accepted) ?? -1;
  const kernel = (): number =>
    sys.getSockOptInt(fd, sys.constants.SOL_SOCKET, sys.constants.SO_RCVLOWAT);
  t.equal(kernel(), 1, 'the default');
  const steps: [number, number][] = [
    [32 * 1024 * 1024, LIMITS.nbdRecvLowWaterMax], // capped
    [LIMITS.nbdRecvLowWaterMin + 5, LIMITS.nbdRecvLowWaterMin + 5], // never above what is due
    [LIMITS.nbdRecvLowWaterMin - 1, 1], // small frames and headers wake the server at once
    [0, 1],
  ];
  for (const [remaining, expected] of steps) {
    lowWater?.update(remaining);
    t.equal(kernel(), expected, `${remaining} bytes due`);
    t.equal(lowWater?.value, expected);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvd-tune-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const unix = await acceptedPair({ path: path.join(dir, 's') });
  t.teardown(() => unix.close());
  t.equal(receiveLowWaterOf(unix.accepted), null, 'not for unix sockets');
});
