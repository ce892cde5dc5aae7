/**
 * test/helpers/sockets: real sockets for the tests of the per-connection threads (sender,
 * data path): a connected pair over 127.0.0.1 or a Unix socket, a server listening on both,
 * and a raw connection to it. Unix socket paths live in short temporary directories (sun_path
 * holds 108 bytes and t.testdir() paths are longer).
 */
import type { Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { NbdServer } from '../../src/nbd/index';
import { socketFdOf } from '../../src/nbd/user-buffer-socket';
import { shortTempDir } from './process';

export type Transport = 'tcp' | 'unix';
export const TRANSPORTS: readonly Transport[] = ['tcp', 'unix'];

export interface SocketPair {
  /** the accepted socket: a thread works on (a dup of) its descriptor */
  server: net.Socket;
  fd: number;
  /** the connecting side, as a client */
  peer: net.Socket;
}

export interface SocketPairOptions {
  /** temporary directory prefix for the Unix socket */
  prefix: string;
  /** the accepted socket is never read by Node (the thread reads a dup of it) */
  pauseOnConnect?: boolean;
  /** the peer keeps writing after the server side ended (and, over TCP, sends at once) */
  isPeerHalfOpen?: boolean;
}

/** A connected pair over 127.0.0.1 or a Unix socket. The server side is half-open. */
export async function socketPair(t: Test, transport: Transport, options: SocketPairOptions,
): Promise<SocketPair> {
  const listener = net.createServer({ allowHalfOpen: true,
    pauseOnConnect: options.pauseOnConnect === true });
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const socketPath = transport === 'unix'
    ? path.join(shortTempDir(t, options.prefix), 's.sock')
    : null;
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    if (socketPath !== null) listener.listen(socketPath, resolve);
    else listener.listen(0, '127.0.0.1', resolve);
  });
  const address = listener.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const isHalfOpen = options.isPeerHalfOpen === true;
  const peer = socketPath !== null
    ? net.connect({ path: socketPath, ...(isHalfOpen ? { allowHalfOpen: true } : {}) })
    : net.connect({ port, host: '127.0.0.1',
      ...(isHalfOpen ? { allowHalfOpen: true, noDelay: true } : {}) });
  peer.on('error', () => undefined);
  const server = await accepted;
  server.on('error', () => undefined);
  listener.close();
  const fd = socketFdOf(server);
  if (fd === null) throw new Error('the accepted socket has no descriptor');
  return { server, fd, peer };
}

/**
 * Listens on 127.0.0.1 (any port) and on a Unix socket; teardown closes the server, then runs
 * `closeAfter` (the export, the pool), then removes the socket's directory.
 */
export async function listenTcpAndUnix(t: Test, server: NbdServer, prefix: string,
  closeAfter: () => Promise<void>): Promise<{ port: number; socketPath: string }> {
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const socketPath = path.join(socketDir, 'nbd.sock');
  await server.listen({ path: socketPath });
  t.teardown(async () => {
    await server.close({ graceMs: 2000 });
    await closeAfter();
    fs.rmSync(socketDir, { recursive: true, force: true });
  });
  return { port: typeof address === 'string' ? 0 : address.port, socketPath };
}

/** A raw socket to a server from listenTcpAndUnix (no handshake yet), destroyed in teardown. */
export async function connectRaw(t: Test, target: { port: number; socketPath: string },
  transport: Transport): Promise<net.Socket> {
  const socket = transport === 'tcp' ? net.connect(target.port, '127.0.0.1')
    : net.connect(target.socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  t.teardown(() => socket.destroy());
  return socket;
}

/** Sets the environment variable `name` (undefined: unset) until the test's teardown. */
export function withEnv(t: Test, name: string, value: string | undefined): void {
  const before = process.env[name];
  const set = (to: string | undefined): void => {
    if (to === undefined) delete process.env[name];
    else process.env[name] = to;
  };
  set(value);
  t.teardown(() => set(before));
}

/** A small seeded generator (an LCG), so a failing random mix can be replayed. */
export function seededRandom(seed: number): (bound: number) => number {
  let state = seed >>> 0;
  return (bound) => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return Math.floor((state / 2 ** 32) * bound);
  };
}
