/**
 * nbd/user-buffer-socket: what the server does to accepted sockets below net's public API.
 *
 * tuneSocket() sets a unix socket's kernel send buffer to LIMITS.nbdSocketSendBufferBytes
 * (setsockopt through the addon; Node has no call for it on stream sockets). With the default
 * 208 KiB a 256 KiB or 1 MiB READ reply cannot be written in one go: libuv writes part, waits
 * for POLLOUT and writes again. 4 MiB: nbdcopy to null: 1070-1159 against 786-836 MiB/s with
 * 15% less server CPU per GiB; fio 1 MiB reads 2415 against 1869 MiB/s (medians of 3
 * alternating runs). SO_SNDBUFFORCE is tried first (allowed to root and CAP_NET_ADMIN), then
 * SO_SNDBUF, which the kernel caps at net.core.wmem_max. TCP sockets are left to the kernel's
 * autotuning (their buffer starts at 4 MiB here; fixing it measured no better for nbdcopy). A
 * larger receive buffer was measured too and did not help.
 *
 * ReceiveLowWater sets SO_RCVLOWAT on a TCP socket while a large WRITE payload arrives: epoll
 * then reports the socket readable only once that much is queued, so a 1 MiB payload comes in
 * fewer, larger reads (fewer wakeups and JS callbacks). Between frames it is 1 again, since a
 * 28-byte request header must wake the server; within a frame it never exceeds what the client
 * must still send, so it cannot stall. TCP only (Linux ignores it in unix-socket polling). 1 MiB
 * writes over TCP: 2552 against 2216 MiB/s, 0.45 against 0.52 server CPU s/GiB (medians of 4
 * alternating runs).
 *
 * adoptWithUserBuffer() gives an accepted socket net's `onread` mode, where each read lands in
 * a buffer the caller supplies (arena-receiver.ts) instead of a fresh zero-filled 64 KiB chunk
 * pushed through the stream machinery (node-perf.md §3).
 *
 * Node documents `onread` for sockets it creates, not for accepted ones, so the accepted handle
 * is re-wrapped in a new net.Socket the way net.Server builds sockets (`{ handle }`). That uses
 * two internals of Node 20's net: `socket._handle` (the libuv stream, with useUserBuffer()) and
 * `socket._server` (the listener's connection count, decremented when the socket is destroyed;
 * moved to the new socket so net.Server.close() still waits for it). The accepted socket must
 * not have started reading (listen with pauseOnConnect). When an internal is missing (another
 * Node), adopt returns null and the caller serves the plain socket through the Framer.
 */
import net from 'node:net';
import { LIMITS } from '../limits';
import * as sys from '../sys/index';

export interface UserBufferRead {
  /** The buffer the next read lands in (called once at adoption, then after every read). */
  buffer(): Buffer;
  /** `length` bytes landed at the start of `target`, the last buffer() result. */
  callback(length: number, target: Buffer): void;
}

interface SocketInternals {
  _handle?: { useUserBuffer?: unknown; fd?: unknown } | null;
  _server?: unknown;
  server?: unknown;
}

/** A socket reading through `read`, owning `accepted`'s handle; null when not possible. */
export function adoptWithUserBuffer(accepted: net.Socket, read: UserBufferRead,
): net.Socket | null {
  const internals = accepted as unknown as SocketInternals;
  const handle = internals._handle;
  if (handle === undefined || handle === null || typeof handle.useUserBuffer !== 'function' ||
    !('_server' in internals) || accepted.readableFlowing === true) {
    return null;
  }
  const socket = new net.Socket({
    handle,
    allowHalfOpen: accepted.allowHalfOpen,
    readable: true,
    writable: true,
    pauseOnCreate: true,
    onread: {
      buffer: () => read.buffer(),
      callback: (length: number, target: Uint8Array): boolean => {
        read.callback(length, target as Buffer);
        return true;
      },
    },
  } as net.SocketConstructorOpts);
  const adopted = socket as unknown as SocketInternals;
  adopted._server = internals._server;
  adopted.server = internals.server;
  internals._server = null;
  internals._handle = null; // the old wrapper must never touch the handle again
  return socket;
}

/** The socket's descriptor (net keeps it on its internal handle), or null. */
export function socketFdOf(socket: net.Socket): number | null {
  const fd = (socket as unknown as SocketInternals)._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : null;
}

/**
 * Sets a unix socket's send buffer (see the header; TCP sockets are left as they are); returns
 * what the kernel reports afterwards (it doubles a request for bookkeeping), or a negative errno
 * when nothing could be set.
 */
export function tuneSocket(socket: net.Socket,
  sendBufferBytes: number = LIMITS.nbdSocketSendBufferBytes): number {
  const fd = socketFdOf(socket);
  if (fd === null) return -9; // -EBADF: no descriptor to tune
  const { SOL_SOCKET, SO_SNDBUF, SO_SNDBUFFORCE } = sys.constants;
  if (typeof socket.remotePort === 'number') return sys.getSockOptInt(fd, SOL_SOCKET, SO_SNDBUF);
  if (sys.setSockOptInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, sendBufferBytes) !== 0) {
    const rc = sys.setSockOptInt(fd, SOL_SOCKET, SO_SNDBUF, sendBufferBytes);
    if (rc !== 0) return rc;
  }
  return sys.getSockOptInt(fd, SOL_SOCKET, SO_SNDBUF);
}

/** SO_RCVLOWAT following the frame in progress (see the header). */
export class ReceiveLowWater {
  private current = 1;
  private isEnabled = true;

  constructor(private readonly fd: number) {}

  /** Called after each read with the bytes the frame in progress still needs. */
  update(frameRemaining: number): void {
    if (!this.isEnabled) return;
    const want = frameRemaining >= LIMITS.nbdRecvLowWaterMin
      ? Math.min(frameRemaining, LIMITS.nbdRecvLowWaterMax)
      : 1;
    if (want === this.current) return;
    const { SOL_SOCKET, SO_RCVLOWAT } = sys.constants;
    if (sys.setSockOptInt(this.fd, SOL_SOCKET, SO_RCVLOWAT, want) === 0) this.current = want;
    else this.isEnabled = false; // the socket keeps what it had; 1 unless a set succeeded
  }

  get value(): number {
    return this.current;
  }
}

/** A ReceiveLowWater for a TCP socket; null for others (unix sockets ignore it). */
export function receiveLowWaterOf(socket: net.Socket): ReceiveLowWater | null {
  const fd = socketFdOf(socket);
  if (fd === null || typeof socket.remotePort !== 'number' || !sys.isNative) return null;
  return new ReceiveLowWater(fd);
}
