/**
 * nbd/server: listeners (TCP with noDelay, Unix socket, inherited fd for systemd socket
 * activation, and a single connection over any stream pair), the connection registry,
 * fencing and graceful shutdown (proto.md "Terminating the transmission phase").
 *
 * fenceExport(name): every connection bound to that export answers later requests with
 * NBD_ESHUTDOWN; the promise resolves when none of them has a request in flight (closed
 * connections stay in the registry until their last request finished). close({graceMs}): stop
 * listening, close connections still negotiating, fence everything, wait for requests in flight
 * (at most graceMs), flush each writable export once, end every connection. Connections over
 * LIMITS.nbdConnectionsMax are closed at accept. No error in one connection reaches another.
 * Accepted sockets get a larger kernel send buffer and, without TLS, read into arenas
 * (user-buffer-socket.ts, arena-receiver.ts).
 *
 * Memory: every connection holds its bytes in one budget (budget.ts, limits budgetBytesMax and
 * budgetFloorBytes); a sweep every LIMITS.nbdStallCheckMs ends connections that hold memory
 * while their client neither sends nor takes bytes (limits.stallTimeoutMs). Containment: a bug
 * while serving one connection (an exception in its handlers, its socket's read callbacks, an
 * option or a request) ends that connection, is logged at error level with its stack and is
 * counted in stats.connectionFaults; it never ends the process.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import {
  type DatapathSetting, type RouteSettings, type SenderSetting, receiveOf,
} from '../dataplane/routes';
import { XvdError, UsageError } from '../errors';
import { LIMITS } from '../limits';
import { log as rootLog, type Logger } from '../log';
import { LOG_EVENT, peerOf } from '../log-events';
import { ArenaReceiver } from './arena-receiver';
import {
  Connection, type ConnectionLimits, type TlsUpgrader,
} from './connection';
import * as sys from '../sys/index';
import { MemoryBudget } from './budget';
import type { ExportProvider } from './provider';
import { createTlsUpgrader, type TlsOptions } from './tls';
import { ExportBook, type ExportStats, type NbdServerStats, addStats } from './server-stats';
import { adoptWithUserBuffer, receiveLowWaterOf, tuneSocket } from './user-buffer-socket';

export interface NbdServerLimits extends ConnectionLimits {
  connectionsMax: number;
  /** the memory budget of all connections together, and what each may always hold */
  budgetBytesMax: number;
  budgetFloorBytes: number;
}

export interface NbdServerOptions {
  provider: ExportProvider;
  tls?: TlsOptions;
  limits?: Partial<NbdServerLimits>;
  log?: Logger;
  /**
   * How sockets are read: 'arena' (default) reads into reused arenas (arena-receiver.ts);
   * 'stream' takes Node's 'data' chunks (the only way with TLS and for stream pairs).
   */
  receive?: 'arena' | 'stream';
  /**
   * READ replies of 64 KiB and more on unix sockets go out by sendfile(2) from a sender thread
   * per connection (dataplane/reply-sender.ts). Off by default: the kernel queues page-cache
   * pages, not bytes, so a client that has not read a reply yet can receive bytes written after
   * it was sent.
   */
  sendfile?: boolean;
  /** 'off': every request on the JS path (XVD_DATAPATH, parsed by cli/route-env.ts) */
  datapath?: DatapathSetting;
  /** the sender thread's mode, overriding `sendfile` (XVD_SENDER; dataplane/routes.ts) */
  sender?: SenderSetting;
}

export type { NbdServerStats } from './server-stats';

export type ListenTarget = { host?: string; port?: number } | { path: string } | { fd: number };

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 10809;

function limitsOf(overrides: Partial<NbdServerLimits> | undefined): NbdServerLimits {
  return {
    optionLengthMax: LIMITS.nbdOptionLengthMax,
    optionCountMax: LIMITS.nbdOptionCountMax,
    inflightMax: LIMITS.nbdInflightMax,
    inflightBytesMax: LIMITS.nbdInflightBytesMax,
    writeDiscardMax: LIMITS.nbdWriteDiscardMax,
    handshakeTimeoutMs: LIMITS.nbdHandshakeTimeoutMs,
    busyPollMicros: LIMITS.nbdDatapathSpinUs,
    stallTimeoutMs: LIMITS.nbdStallTimeoutMs,
    connectionsMax: LIMITS.nbdConnectionsMax,
    budgetBytesMax: LIMITS.nbdBudgetBytesMax,
    budgetFloorBytes: LIMITS.nbdBudgetFloorBytes,
    ...overrides,
  };
}

/** Events: 'connection-open' (id), 'connection-close' (id), 'listening' (address). */
export class NbdServer extends EventEmitter {
  readonly limits: NbdServerLimits;
  private readonly provider: ExportProvider;
  private readonly log: Logger;
  private readonly tls: TlsUpgrader | null;
  private readonly isArenaReceive: boolean;
  private readonly routeSettings: RouteSettings;
  private readonly netServers: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private nextId = 1;
  private isShuttingDown = false;
  /** closed connections' counts, in total and per export, and fences (server-stats.ts) */
  private readonly book = new ExportBook();
  private readonly budget: MemoryBudget;
  private stallTimer: NodeJS.Timeout | null = null;
  private stalled = 0;
  private accepted = 0;
  private refused = 0;
  private acceptedArena = 0;

  constructor(options: NbdServerOptions) {
    super();
    this.provider = options.provider;
    this.log = (options.log ?? rootLog).child({ component: 'nbd' });
    this.limits = limitsOf(options.limits);
    this.tls = options.tls === undefined ? null : createTlsUpgrader(options.tls);
    this.isArenaReceive = receiveOf(options.receive ?? 'arena', this.tls !== null) === 'arena';
    this.routeSettings = { isSendfile: options.sendfile === true,
      datapath: options.datapath ?? 'auto', sender: options.sender ?? 'auto' };
    this.budget = new MemoryBudget(this.limits.budgetBytesMax, this.limits.budgetFloorBytes,
      sys.budgetSync, LIMITS.nbdBudgetRetryMs);
  }

  /** Connections open or still finishing requests. */
  get connectionCount(): number {
    return this.connections.size;
  }

  get stats(): NbdServerStats {
    this.budget.refresh(); // what the data-path threads hold now
    const totals = { ...this.book.closed };
    for (const connection of this.connections) addStats(totals, connection.stats);
    return { connectionsAccepted: this.accepted, connectionsRefused: this.refused,
      connectionsOpen: this.connections.size, connectionsArena: this.acceptedArena, ...totals,
      budgetHeldBytes: this.budget.heldBytes, budgetThreadsBytes: this.budget.threadsHeldBytes,
      budgetPeakBytes: this.budget.peakBytes,
      budgetWaiting: this.budget.waiting, budgetParkedTotal: this.budget.parkedTotal,
      connectionsStalled: this.stalled, fences: this.book.fences };
  }

  /** Per export: open connections and the counts of all it had (`xvd status`, metrics). */
  exportStats(): ExportStats[] {
    return this.book.exports(this.connections);
  }

  /** Starts a listener; resolves with its address (port for TCP, path for Unix). */
  async listen(target: ListenTarget = {}): Promise<net.AddressInfo | string> {
    // paused: an accepted socket must not read before accept() chose how it reads
    // allowHalfOpen: a client's FIN ends only its side; the connection finishes the requests
    // in flight and sends their replies before it ends ours (Connection.onEnd)
    const listener = net.createServer(
      { noDelay: true, pauseOnConnect: true, allowHalfOpen: true },
      (socket) => {
        try {
          this.accept(socket);
        } catch (error) {
          this.log.error({ err: error }, 'internal error accepting a connection');
          socket.destroy();
        }
      });
    listener.on('error', (error) => this.log.error({ err: error }, 'listener error'));
    if ('path' in target) removeStaleSocket(target.path);
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error): void => reject(new UsageError('ERR_NBD_LISTEN',
        `listen: ${describeTarget(target)}: ${error.message}`, { cause: error }));
      listener.once('error', fail);
      const done = (): void => {
        listener.off('error', fail);
        resolve();
      };
      if ('path' in target) listener.listen(target.path, done);
      else if ('fd' in target) listener.listen({ fd: target.fd }, done);
      else listener.listen(target.port ?? DEFAULT_PORT, target.host ?? DEFAULT_HOST, done);
    });
    this.netServers.push(listener);
    // an inherited fd may report no address (an unnamed or foreign socket)
    const address = listener.address() ?? describeTarget(target);
    this.log.info({ address }, 'listening');
    this.emit('listening', address);
    return address;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    if (this.isShuttingDown || this.connections.size >= this.limits.connectionsMax) {
      this.refused += 1;
      this.log.warn({ event: LOG_EVENT.connectionRefused, peer: peerOf(socket),
        reason: this.isShuttingDown ? 'shutting down' : 'too many connections',
        open: this.connections.size, max: this.limits.connectionsMax }, 'connection refused');
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const sendBuffer = tuneSocket(socket);
    if (sendBuffer < 0) this.log.debug({ errno: -sendBuffer }, 'socket send buffer not set');
    if (this.isArenaReceive && this.acceptWithArena(socket)) return;
    this.startConnection(socket, socket, socket, null);
  }

  /** Serves `socket` reading into arenas; false when Node would not allow it (see there). */
  private acceptWithArena(socket: net.Socket): boolean {
    const receiver = new ArenaReceiver();
    const lowWater = receiveLowWaterOf(socket);
    let connection: Connection | null = null;
    // libuv calls these from its read loop: a throw there would end the process, so a bug
    // ends only this connection (its later reads land in the disposed receiver's discard)
    const adopted = adoptWithUserBuffer(socket, {
      buffer: () => {
        try {
          return receiver.nextBuffer();
        } catch (error) {
          receiver.dispose();
          connection?.fault(error, 'receive buffer');
          return receiver.nextBuffer();
        }
      },
      // reads start in connection.start(), so the first callback finds it assigned
      callback: (length, target) => {
        try {
          connection?.onSocketRead(length, target);
          lowWater?.update(receiver.frameRemaining);
        } catch (error) {
          connection?.fault(error, 'receive');
        }
      },
    });
    if (adopted === null) {
      this.log.debug('arena receive unavailable: reading through stream chunks');
      return false;
    }
    this.acceptedArena += 1;
    connection = this.startConnection(adopted, adopted, adopted, receiver);
    return true;
  }

  /** Serves one connection over a stream pair (stdin/stdout, a Duplex); resolves at close. */
  serveStream(input: Readable, output: Writable = input as unknown as Writable): Promise<void> {
    return new Promise((resolve) => {
      const connection = this.startConnection(input, output, null, null);
      const onClose = (id: number): void => {
        if (id !== connection.id) return;
        this.off('connection-close', onClose);
        resolve();
      };
      this.on('connection-close', onClose);
    });
  }

  private startConnection(input: Readable, output: Writable, socket: net.Socket | null,
    receiver: ArenaReceiver | null): Connection {
    const id = this.nextId++;
    this.accepted += 1;
    const connection = new Connection({
      id, input, output, socket, receiver,
      provider: this.provider,
      log: this.log.child({ conn: id, peer: peerOf(socket) }),
      limits: this.limits,
      tls: this.tls,
      executors: this.routeSettings,
      isShuttingDown: () => this.isShuttingDown,
      budget: this.budget,
      hooks: {
        onBound: () => undefined,
        onClosed: (closed) => this.forget(closed),
      },
    });
    this.connections.add(connection);
    this.startStallSweep();
    try {
      connection.start();
    } catch (error) {
      connection.fault(error, 'start');
    }
    this.emit('connection-open', id);
    return connection;
  }

  /** The stall sweep runs while there are connections (see the header). */
  private startStallSweep(): void {
    if (this.stallTimer !== null) return;
    this.stallTimer = setInterval(this.sweepStalled, LIMITS.nbdStallCheckMs);
    this.stallTimer.unref();
  }

  private readonly sweepStalled = (): void => {
    const now = Date.now();
    this.budget.refresh();
    for (const connection of this.connections) {
      try {
        if (connection.checkStall(now)) this.stalled += 1;
      } catch (error) {
        connection.fault(error, 'stall check');
      }
    }
    if (this.connections.size === 0 && this.stallTimer !== null) {
      clearInterval(this.stallTimer);
      this.stallTimer = null;
    }
  };

  private forget(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    this.book.addClosed(connection);
    this.emit('connection-close', connection.id);
  }

  /**
   * Fences an export: every connection bound to it refuses later requests with NBD_ESHUTDOWN;
   * resolves once none of them has a request in flight. The provider must already have stopped
   * opening it. Fenced connections never become usable again. A connection that is still
   * negotiating (its GO may already hold the export) is fenced as soon as it binds to `name`.
   */
  async fenceExport(name: string): Promise<void> {
    const bound = [...this.connections].filter((connection) => connection.exportName === name);
    for (const connection of this.connections) {
      // an option in progress may have opened the export just before this call
      if (connection.exportName === null) connection.fenceOnBind(name);
    }
    this.book.fences += 1;
    await Promise.all(bound.map((connection) => connection.fence()));
  }

  /** Stops listening, drains requests (at most graceMs), flushes exports, closes everything. */
  async close(options: { graceMs?: number } = {}): Promise<void> {
    const graceMs = options.graceMs ?? LIMITS.nbdCloseGraceMs;
    this.isShuttingDown = true;
    // net.Server.close() calls back only after every connection ended: awaited last
    const stopped = Promise.all(this.netServers.map((listener) => new Promise<void>((resolve) => {
      listener.close(() => resolve());
    })));
    this.netServers.length = 0;
    const all = [...this.connections];
    for (const connection of all) {
      if (connection.exportName === null) connection.closeHard(null, 'server shutting down');
    }
    const bound = all.filter((connection) => connection.exportName !== null);
    const drained = Promise.all(bound.map((connection) => connection.fence()));
    const timedOut = await raceTimeout(drained, graceMs);
    if (timedOut) this.log.warn({ graceMs }, 'close: requests still in flight after grace');
    await this.flushExports(bound);
    for (const connection of bound) {
      if (timedOut) connection.closeHard(null, 'server shutting down');
      else connection.beginClosing('server shutting down');
    }
    if (await raceTimeout(stopped, graceMs)) this.log.warn('close: listeners still open');
    this.log.info(this.stats, 'server closed');
  }

  private async flushExports(bound: readonly Connection[]): Promise<void> {
    const exportSet = new Set(bound.filter((connection) => !connection.isClosed() ||
      connection.inflight === 0).map((connection) => connection.export));
    for (const exp of exportSet) {
      if (!exp.canFlush || exp.isReadOnly) continue;
      try {
        await exp.flush();
      } catch (error) {
        this.log.error({ err: error, export: exp.name }, 'close: flush failed');
      }
    }
  }
}

function describeTarget(target: ListenTarget): string {
  if ('path' in target) return target.path;
  if ('fd' in target) return `fd ${target.fd}`;
  return `${target.host ?? DEFAULT_HOST}:${target.port ?? DEFAULT_PORT}`;
}

/** A Unix socket path left behind by a dead server is removed; anything else is kept. */
function removeStaleSocket(path: string): void {
  try {
    if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
  } catch (error) {
    if (error instanceof XvdError || (error as { code?: string }).code !== 'ENOENT') throw error;
  }
}

async function raceTimeout(promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), timeoutMs);
  });
  try {
    return await Promise.race([promise.then(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function createServer(options: NbdServerOptions): NbdServer {
  return new NbdServer(options);
}
