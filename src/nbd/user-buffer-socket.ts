/**
 * nbd/user-buffer-socket: gives an accepted socket net's `onread` mode, where each read lands in
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

export interface UserBufferRead {
  /** The buffer the next read lands in (called once at adoption, then after every read). */
  buffer(): Buffer;
  /** `length` bytes landed at the start of `target`, the last buffer() result. */
  callback(length: number, target: Buffer): void;
}

interface SocketInternals {
  _handle?: { useUserBuffer?: unknown } | null;
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
