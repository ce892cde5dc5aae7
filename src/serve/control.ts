/**
 * serve/control: the control socket through which a running server answers `xvd status`. One
 * Unix socket per server; whoever connects gets one JSON document (status-document.ts, built
 * at that moment) and then the end of the stream: no request, no state, nothing to parse on the
 * server's side. It costs the data path nothing: the document reads counts the connections keep
 * anyway, and only when asked. `socat - UNIX-CONNECT:PATH` shows it by hand.
 *
 * Where: beside the catalog, `.xvd-control/PID.sock` in the catalog's directory (which the
 * server can write, as SQLite puts its WAL there), unless that path does not fit a Unix socket
 * address (CONTROL_PATH_MAX), then `xvd-control-UID/PID.sock` in the runtime directory the CLI
 * passes ($XDG_RUNTIME_DIR, else the system's temporary directory); always there for a catalog in
 * RADOS, which has no directory. The server records the path
 * in its catalog row (catalog/leases.ts registerServer), so `xvd status` finds it whatever the
 * environment of either process. The directory is created 0700 and must be this user's and
 * closed to others (else no control socket, and a warning); the socket is 0600 and removed at
 * stop. A server killed without stopping leaves its socket: the next server started in that
 * directory removes the sockets of pids that no longer run, and `xvd status` skips a server
 * whose process is gone, with a note.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { XvdError } from '../errors';
import type { Logger } from '../log';
import { processStartTime } from '../catalog/liveness';
import { isCephCatalog } from '../catalog/location';

/** The status document's format (status-document.ts); a reader refuses any other. */
export const STATUS_FORMAT = 1;
/** The longest Unix socket path: sun_path holds 108 bytes with its NUL. */
export const CONTROL_PATH_MAX = 107;
/** How long `xvd status` waits for a server's document. */
export const CONTROL_READ_TIMEOUT_MS = 3000;
/** A document larger than this is refused by the reader (a server with very many exports). */
export const CONTROL_DOCUMENT_MAX = 64 * 1024 * 1024;

const SOCKET_NAME = /^(\d+)\.sock$/;

/** Where a server of pid `pid` on the catalog `catalogPath` puts its control socket. */
export function controlPathOf(catalogPath: string, pid: number, runtimeDir: string): string {
  const beside = path.join(path.dirname(path.resolve(catalogPath)), '.xvd-control',
    `${pid}.sock`);
  if (!isCephCatalog(catalogPath) && Buffer.byteLength(beside) <= CONTROL_PATH_MAX) return beside;
  const uid = process.getuid?.() ?? 0;
  return path.join(path.resolve(runtimeDir), `xvd-control-${uid}`, `${pid}.sock`);
}

/** Creates the socket's directory, or checks the one there: a directory of ours, 0700. */
function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new XvdError('ERR_SERVE_CONTROL', `control socket: ${dir} is not a directory of ` +
      'this user closed to others');
  }
}

/** Removes the sockets of servers whose process is gone (killed without stopping). */
function sweepStale(dir: string, log: Logger): void {
  for (const name of fs.readdirSync(dir)) {
    const match = SOCKET_NAME.exec(name);
    if (match === null || processStartTime(Number(match[1])) !== '') continue;
    try {
      fs.rmSync(path.join(dir, name), { force: true });
      log.debug({ path: path.join(dir, name) }, 'control socket of a server gone: removed');
    } catch {
      // another server swept it first
    }
  }
}

/** A listening control socket; close() stops it and removes its file. */
export class ControlSocket {
  private constructor(readonly path: string, private readonly listener: net.Server) {}

  /**
   * Listens at `socketPath`, answering each connection with `document()` as JSON. Rejects with
   * ERR_SERVE_CONTROL when it cannot (the caller serves on without one).
   */
  static async start(socketPath: string, document: () => unknown, log: Logger,
  ): Promise<ControlSocket> {
    try {
      const dir = path.dirname(socketPath);
      ensurePrivateDir(dir);
      sweepStale(dir, log);
      fs.rmSync(socketPath, { force: true }); // our pid: a socket there is a dead server's
      const listener = net.createServer((socket) => answer(socket, document, log));
      await new Promise<void>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen(socketPath, () => {
          listener.off('error', reject);
          resolve();
        });
      });
      listener.on('error', (error) => log.error({ err: error }, 'control socket error'));
      fs.chmodSync(socketPath, 0o600);
      return new ControlSocket(socketPath, listener);
    } catch (error) {
      if (error instanceof XvdError) throw error;
      throw new XvdError('ERR_SERVE_CONTROL', `control socket: ${socketPath}: ` +
        `${(error as Error).message}`, { cause: error });
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
    fs.rmSync(this.path, { force: true });
  }
}

function answer(socket: net.Socket, document: () => unknown, log: Logger): void {
  socket.on('error', () => socket.destroy());
  try {
    socket.end(`${JSON.stringify(document())}\n`);
  } catch (error) {
    log.error({ err: error }, 'control socket: the status document failed');
    socket.destroy();
  }
}

/**
 * Reads the document a server's control socket answers (`xvd status`), parsed; rejects with a
 * one-line reason (no such socket, refused, timed out, not JSON).
 */
export function readControl(socketPath: string, timeoutMs = CONTROL_READ_TIMEOUT_MS,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const socket = net.connect(socketPath);
    const fail = (why: string): void => {
      socket.destroy();
      reject(new XvdError('ERR_SERVE_CONTROL', why));
    };
    socket.setTimeout(timeoutMs, () => fail(`no answer in ${timeoutMs} ms`));
    socket.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
    socket.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length > CONTROL_DOCUMENT_MAX) fail('answer too large');
      else chunks.push(chunk);
    });
    socket.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        fail('the answer is not JSON');
      }
    });
  });
}
