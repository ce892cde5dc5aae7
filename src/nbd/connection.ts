/**
 * nbd/connection: one client from greeting to close (proto.md "Protocol phases"): phase,
 * negotiated features, the bound export, requests in flight, and teardown.
 *
 * Bytes arrive into a Receiver (a Framer fed by 'data' events, or an ArenaReceiver the socket
 * reads into, calling onSocketRead()) and pump() advances the phase machine as far as buffered
 * bytes allow. Options run one at a time (the socket is paused meanwhile); requests are decoded,
 * validated (validate.ts) and executed concurrently (transmission.ts), answered in completion
 * order. Reading stops (socket paused) while the connection has LIMITS.nbdInflightMax requests or
 * nbdInflightBytesMax bytes in flight, while replies not yet written out hold nbdInflightBytesMax
 * bytes (a settled READ's pooled buffer stays allocated until its write callback), or while the
 * socket's write buffer needs draining: that is the only memory a client can make the server
 * hold (at most twice nbdInflightBytesMax plus one request). Replies written in one event-loop
 * turn are corked and sent together on setImmediate.
 *
 * Closing: DISC or close() stop reading, let requests in flight finish, then end the stream.
 * A hard close (protocol violation, socket error) destroys the stream at once; requests in
 * flight still finish against the Export, their replies are dropped, and the export handle is
 * released only when none is in flight. fence() makes every later request fail with ESHUTDOWN.
 *
 * Data-path thread (datapath.ts): when transmission starts on a socket read into arenas (no
 * TLS, no sender mode, an export with descriptors), a native thread takes the socket. It serves
 * plain READs and WRITEs itself and forwards every other request's bytes into a Framer here,
 * so the phase machine above runs for those as before; every reply from here goes out through
 * the thread (send()), and pump() pauses the thread instead of the socket. Closing stops the
 * thread first (gracefully once nothing is in flight here, or at once on a hard close), and
 * the export handle is released only after the thread was joined.
 */
import assert from 'node:assert';
import type { Readable, Writable } from 'node:stream';
import net, { type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { IoError, ProtocolError, isBug } from '../errors';
import type { Export } from '../engine/export';
import type { Logger } from '../log';
import {
  CLIENT_FLAGS_LENGTH,
  IHAVEOPT_HIGH,
  IHAVEOPT_LOW,
  NBD_CMD,
  NBD_E,
  NBD_FLAG,
  NBD_FLAG_C,
  NBD_OPT,
  NBD_REP,
  NBD_REQUEST_MAGIC,
  OPTION_HEADER_LENGTH,
  REQUEST_LENGTH,
  nameOf,
} from './constants';
import { type MetaContextState, type OptionOutcome, type OptionSession, optionHandlerOf }
  from './options/index';
import type { Domain, ExportHandle, ExportProvider } from './provider';
import { executeRequest, sendError, type TransmissionContext } from './transmission';
import { type Request, transmissionFlagsOf, validateRequest } from './validate';
import { encodeGreeting, encodeOptionReply } from './wire-writer';
import { LIMITS } from '../limits';
import { Framer, type Payload, type Receiver } from './framer';
import type { ArenaReceiver } from './arena-receiver';
import { ReplySender, type SendDone, senderModeOf } from './reply-sender';
import { Datapath, isDatapathWanted } from './datapath';
import type { MemoryBudget } from './budget';

export const PHASE = {
  CLIENT_FLAGS: 'client-flags',
  OPTION_HEADER: 'option-header',
  OPTION_PAYLOAD: 'option-payload',
  OPTION_BUSY: 'option-busy',
  TLS_HANDSHAKE: 'tls-handshake',
  REQUEST_HEADER: 'request-header',
  WRITE_PAYLOAD: 'write-payload',
  WRITE_DISCARD: 'write-discard',
  CLOSING: 'closing',
  CLOSED: 'closed',
} as const;
export type Phase = (typeof PHASE)[keyof typeof PHASE];

/** Allowed phase transitions; CLOSED is reachable from everywhere (hard close). */
export const PHASE_TRANSITIONS: Readonly<Record<Phase, readonly Phase[]>> = {
  'client-flags': ['option-header', 'closing'],
  'option-header': ['option-payload', 'closing'],
  'option-payload': ['option-busy', 'closing'],
  'option-busy': ['option-header', 'request-header', 'tls-handshake', 'closing'],
  'tls-handshake': ['option-header', 'closing'],
  'request-header': ['write-payload', 'write-discard', 'closing'],
  'write-payload': ['request-header', 'closing'],
  'write-discard': ['request-header', 'closing'],
  closing: [],
  closed: [],
};

export interface ConnectionLimits {
  optionLengthMax: number;
  optionCountMax: number;
  inflightMax: number;
  inflightBytesMax: number;
  writeDiscardMax: number;
  handshakeTimeoutMs: number;
  /** the data-path thread's busy-poll budget in microseconds, 0: off (datapath.c spin()) */
  busyPollMicros: number;
  /** a connection holding memory whose client neither sends nor takes bytes this long ends */
  stallTimeoutMs: number;
}

export interface ConnectionStats {
  requests: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** of `requests`, those the data-path thread served itself (plain READs and WRITEs) */
  threadRequests: number;
  busyPollHits: number;
  busyPollMisses: number;
  /** internal errors contained by ending this connection (a bug, never the client's fault) */
  faults: number;
}

/** What a connection needs for STARTTLS (server.ts builds it from TlsOptions). */
export interface TlsUpgrader {
  readonly mode: 'on' | 'require';
  /** Wraps the socket; resolves with the TLS socket and the authenticated domain. */
  upgrade(socket: Socket): Promise<{ secure: TLSSocket; domain: Domain }>;
}

export interface ConnectionHooks {
  onBound(connection: Connection): void;
  onClosed(connection: Connection): void;
}

/**
 * Runs an event handler of one connection so that a bug in it ends that connection and never
 * reaches the event loop (where it would end the process): see Connection.fault().
 */
function guarded<A extends unknown[]>(connection: Connection, where: string,
  handler: (...args: A) => void): (...args: A) => void {
  return (...args: A): void => {
    try {
      handler(...args);
    } catch (error) {
      connection.fault(error, where);
    }
  };
}

export interface ConnectionOptions {
  id: number;
  input: Readable;
  output: Writable;
  /** the raw socket, when there is one (needed for STARTTLS) */
  socket: Socket | null;
  /**
   * Where received bytes go when the socket reads into it (arena-receiver.ts) and calls
   * onSocketRead(); null: the connection listens to 'data' and frames with a Framer.
   */
  receiver?: Receiver | null;
  provider: ExportProvider;
  log: Logger;
  limits: ConnectionLimits;
  tls: TlsUpgrader | null;
  /** large READ replies on unix sockets by sendfile(2) (server option; reply-sender.ts) */
  isSendfile?: boolean;
  hooks: ConnectionHooks;
  isShuttingDown: () => boolean;
  /** the server's memory budget shared by all its connections (budget.ts) */
  budget: MemoryBudget;
}

export class Connection implements OptionSession, TransmissionContext {
  readonly id: number;
  log: Logger;
  readonly provider: ExportProvider;
  private input: Readable;
  private output: Writable;
  private socket: Socket | null;
  private readonly limits: ConnectionLimits;
  private readonly tls: TlsUpgrader | null;
  private readonly isSendfile: boolean;
  private readonly hooks: ConnectionHooks;
  private readonly isServerShuttingDown: () => boolean;
  private readonly budget: MemoryBudget;
  private framer: Receiver;
  /** bytes arrive through onSocketRead() rather than 'data' events */
  private readonly isSelfReading: boolean;
  /**
   * The data-path thread (datapath.ts), from the start of transmission when it can run: it
   * reads and writes the socket, serves plain READ/WRITE itself and forwards the rest here.
   * Kept after it stopped until the connection is finalized (its descriptors' users are done).
   */
  private datapath: Datapath | null = null;
  private unsubscribeMap: (() => void) | null = null;

  phase: Phase = PHASE.CLIENT_FLAGS;
  domain: Domain = null;
  isTls = false;
  noZeroes = false;
  private isFixedNewstyle = false;
  isStructured = false;
  metaContext: MetaContextState | null = null;
  private optionCount = 0;
  private option = 0;
  private optionLength = 0;

  private handle: ExportHandle | null = null;
  private boundExport: Export | null = null;
  private eflags = 0;
  private blockSizeMin = 1;
  private hasBaseAllocation = false;
  private pending: Request | null = null;
  private discardRemaining = 0;
  private pendingErrno = 0;

  inflight = 0;
  private inflightBytes = 0;
  isFenced = false;
  private idleWaiters: (() => void)[] = [];
  private isCorked = false;
  private isPumping = false;
  private isWaitingDrain = false;
  /** the sender thread for large READ replies (reply-sender.ts); made by the first one */
  private sender: ReplySender | null = null;
  /**
   * Bytes held for replies not yet written out (pooled READ buffers until their write callback,
   * frames queued on the sender); planned READs count in inflightBytes instead.
   */
  private replyBytes = 0;
  private isSenderDecided = false;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private readonly counts = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0, faults: 0 };
  /** the length of the WRITE whose payload is being received (taken from the budget) */
  private writeReserveBytes = 0;
  /** what this connection holds in the server's budget (budget.ts): see heldBytes */
  private budgetBytes = 0;
  /** a validated READ or WRITE waiting for the budget (reading stops meanwhile) */
  private parked: Request | null = null;
  /** Date.now() when the client last sent bytes or took reply bytes (the stall deadline) */
  private progressAt = Date.now();
  private progressMark = 0;

  /** Requests, refusals and bytes so far, the data-path thread's included, and its busy-polls
   * (datapath.c spin()): those that found a request and those that found none. */
  get stats(): ConnectionStats {
    if (this.datapath === null) {
      return { ...this.counts, threadRequests: 0, busyPollHits: 0, busyPollMisses: 0 };
    }
    const [requests, bytesRead, bytesWritten, hits, misses] = this.datapath.stats();
    return { requests: this.counts.requests + requests!, errors: this.counts.errors,
      faults: this.counts.faults,
      bytesRead: this.counts.bytesRead + bytesRead!,
      bytesWritten: this.counts.bytesWritten + bytesWritten!, threadRequests: requests!,
      busyPollHits: hits!, busyPollMisses: misses! };
  }

  constructor(options: ConnectionOptions) {
    this.id = options.id;
    this.input = options.input;
    this.output = options.output;
    this.socket = options.socket;
    this.provider = options.provider;
    this.log = options.log;
    this.limits = options.limits;
    this.tls = options.tls;
    this.isSendfile = options.isSendfile === true;
    this.hooks = options.hooks;
    this.isServerShuttingDown = options.isShuttingDown;
    this.budget = options.budget;
    const receiver = options.receiver ?? null;
    this.framer = receiver ?? new Framer();
    this.isSelfReading = receiver !== null;
    assert(!this.isSelfReading || this.tls === null, 'connection: STARTTLS needs the Framer');
  }

  get export(): Export {
    assert(this.boundExport !== null);
    return this.boundExport;
  }

  get exportName(): string | null {
    return this.boundExport === null ? null : this.boundExport.name;
  }

  get canStartTls(): boolean {
    return this.tls !== null && this.socket !== null;
  }

  start(): void {
    this.attachStreams();
    this.handshakeTimer = setTimeout(this.onHandshakeTimeout, this.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.send(encodeGreeting(NBD_FLAG.FIXED_NEWSTYLE | NBD_FLAG.NO_ZEROES));
    this.log.info({ remote: this.socket?.remoteAddress ?? 'stream' }, 'connection opened');
    this.pump(); // starts reading (a listener's sockets arrive paused)
  }

  // --- streams and output ---

  private isDuplex(): boolean {
    return sameStream(this.input, this.output);
  }

  isClosed(): boolean {
    return this.phase === PHASE.CLOSED;
  }

  private attachStreams(): void {
    if (!this.isSelfReading) this.input.on('data', this.onData);
    this.input.on('end', this.onEnd);
    this.input.on('error', this.onStreamError);
    this.input.on('close', this.onInputClose);
    if (!this.isDuplex()) {
      this.output.on('error', this.onStreamError);
    }
  }

  private detachStreams(): void {
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.off('error', this.onStreamError);
    this.input.off('close', this.onInputClose);
    if (!this.isDuplex()) this.output.off('error', this.onStreamError);
    this.output.off('drain', this.onDrain);
  }

  private readonly onData = guarded(this, 'onData', (chunk: Buffer): void => {
    this.counts.bytesRead += chunk.length;
    this.progressAt = Date.now();
    (this.framer as Framer).push(chunk);
    this.pump();
  });

  /** The socket's onread callback: `length` bytes landed in the receiver's tail `target`. */
  onSocketRead(length: number, target: Buffer): void {
    if (this.phase === PHASE.CLOSED || this.datapath !== null) return;
    this.counts.bytesRead += length;
    this.progressAt = Date.now();
    (this.framer as ArenaReceiver).received(length, target);
    this.pump();
  }

  private readonly onEnd = guarded(this, 'onEnd', (): void => {
    // the client half-closed: finish what is in flight, then close (fio closes without DISC)
    this.beginClosing('client closed');
  });

  private readonly onInputClose = guarded(this, 'onInputClose', (): void => {
    if (this.phase !== PHASE.CLOSED) this.closeHard(null, 'stream closed');
  });

  private readonly onStreamError = guarded(this, 'onStreamError', (error: Error): void => {
    this.closeHard(null, `stream error: ${error.message}`);
  });

  private readonly onHandshakeTimeout = guarded(this, 'onHandshakeTimeout', (): void => {
    this.handshakeTimer = null;
    this.closeHard(new ProtocolError('ERR_NBD_HANDSHAKE_TIMEOUT',
      `handshake: not finished after ${this.limits.handshakeTimeoutMs} ms`), 'handshake timeout');
  });

  private readonly onDrain = guarded(this, 'onDrain', (): void => {
    this.isWaitingDrain = false;
    this.pump();
  });

  private readonly uncork = guarded(this, 'uncork', (): void => {
    this.isCorked = false;
    this.output.uncork();
  });

  /** A socket (TCP, Unix, TLS) has copied a chunk once its write callback runs. */
  get canReuseBuffers(): boolean {
    return this.output instanceof net.Socket;
  }

  /**
   * Queues a frame. `heldBytes` (default: the frame's length) is what stays allocated until
   * onWritten runs, e.g. a whole pooled READ buffer behind a few small chunks: those bytes count
   * against inflightBytesMax (isReadBlocked) until then, since the request itself has settled.
   */
  send(frame: Buffer, onWritten?: () => void, heldBytes?: number): void {
    if (this.phase === PHASE.CLOSED) {
      if (onWritten !== undefined) onWritten(); // dropped: nothing holds the buffer
      return;
    }
    const datapath = this.datapath;
    if (datapath !== null) {
      // the thread owns the socket and counts the bytes it sends; a failed frame: the thread
      // reports the broken stream itself (onError)
      this.sendOnThread(frame, onWritten, heldBytes, 'data path', (done) => {
        try {
          datapath.submit(frame, () => done(null));
          return true;
        } catch {
          return false;
        }
      });
      return;
    }
    this.counts.bytesWritten += frame.length;
    const sender = this.sender;
    if (sender !== null && sender.pending > 0) {
      // the sender owns the stream until its queue is empty (reply-sender.ts)
      this.sendOnThread(frame, onWritten, heldBytes, 'sender',
        (done) => sender.submit(frame, null, done));
      return;
    }
    if (!this.isCorked) {
      this.isCorked = true;
      this.output.cork();
      setImmediate(this.uncork);
    }
    let done = onWritten;
    if (onWritten !== undefined) {
      const held = heldBytes ?? frame.length;
      this.replyBytes += held;
      this.syncBudget();
      done = (): void => {
        this.releaseReplyBytes(held);
        onWritten();
      };
    }
    if (!this.output.write(frame, done) && !this.isWaitingDrain) {
      this.isWaitingDrain = true;
      this.output.once('drain', this.onDrain);
    }
  }

  /**
   * send() through a thread that owns the stream: `submit` queues the frame (false: refused,
   * `done` will not run). The thread holds even an unpooled frame until it is sent, so its
   * bytes count in replyBytes until then.
   */
  private sendOnThread(frame: Buffer, onWritten: (() => void) | undefined,
    heldBytes: number | undefined, thread: string,
    submit: (done: (error: NodeJS.ErrnoException | null) => void) => boolean): void {
    const held = onWritten === undefined ? frame.length : heldBytes ?? frame.length;
    this.replyBytes += held;
    this.syncBudget();
    const isQueued = submit((error) => {
      this.releaseReplyBytes(held);
      if (onWritten !== undefined) onWritten();
      if (error !== null) this.onStreamBroken(error.code ?? '', error);
    });
    if (!isQueued) {
      this.releaseReplyBytes(held);
      if (onWritten !== undefined) onWritten();
      this.closeHard(new Error(`send: the ${thread} refused a reply`), `${thread} refused a reply`);
    }
  }

  /**
   * What this connection makes the server hold (budget.ts): requests in flight, replies not yet
   * written out, and the WRITE payload being received.
   */
  get heldBytes(): number {
    return this.inflightBytes + this.replyBytes + this.writeReserveBytes;
  }

  /** Brings the server's budget up to date with heldBytes (after every change of it). */
  private syncBudget(): void {
    if (this.isFinalized) return; // gave everything back
    const held = this.heldBytes;
    const delta = held - this.budgetBytes;
    this.budgetBytes = held;
    if (delta !== 0) this.budget.adjust(delta);
  }

  /** Bytes of replies not yet written out went down: reading may resume (isReadBlocked). */
  private releaseReplyBytes(bytes: number): void {
    const wasFull = this.replyBytes >= this.limits.inflightBytesMax;
    this.replyBytes -= bytes;
    this.progressAt = Date.now(); // the client (or its socket buffer) took bytes
    this.syncBudget();
    if (wasFull && this.replyBytes < this.limits.inflightBytesMax &&
      this.phase !== PHASE.CLOSED && this.phase !== PHASE.CLOSING) {
      this.pump();
    }
  }

  /** TransmissionContext.sendPlanned: a READ reply from descriptors on the sender thread. */
  sendPlanned(header: Buffer, pieces: Float64Array): Promise<void> | null {
    if (this.phase === PHASE.CLOSED || this.datapath !== null) return null;
    const sender = this.sender ?? this.makeSender();
    if (sender === null || !sender.isUsable ||
      (sender.pending === 0 && this.output.writableLength > 0)) {
      return null;
    }
    let settle: SendDone = () => undefined;
    const sent = new Promise<void>((resolve, reject) => {
      settle = (error, isIntact): void => {
        if (error === null) {
          resolve();
          return;
        }
        if (isIntact) {
          reject(error); // nothing of this reply was sent: an error reply follows
          return;
        }
        this.onStreamBroken(error.code ?? '', error);
        // the connection is gone: no reply can follow (logged once, by onStreamBroken)
        reject(new IoError('ESHUTDOWN', 'send', `send: ESHUTDOWN: ${error.message}`,
          { cause: error }));
      };
    });
    const wasIdle = sender.pending === 0;
    if (!sender.submit(header, pieces, settle)) {
      if (wasIdle) return null; // the stream is the JS side's: the caller sends the reply
      this.closeHard(new Error('send: the sender refused a reply'), 'sender refused a reply');
      return Promise.reject(new Error('send: the sender refused a reply'));
    }
    let bytes = header.length;
    for (let at = 2; at < pieces.length; at += 3) bytes += pieces[at]!;
    this.counts.bytesWritten += bytes;
    return sent;
  }

  private makeSender(): ReplySender | null {
    if (this.isSenderDecided) return null;
    this.isSenderDecided = true;
    const socket = this.socket;
    if (socket === null || this.output !== socket || this.isTls) return null;
    const mode = senderModeOf(socket, this.isSendfile);
    if (mode === null) return null;
    const sender = new ReplySender(socket, mode, this.onSenderSettled);
    if (!sender.isUsable) return null;
    this.sender = sender;
    return sender;
  }

  private readonly onSenderSettled = guarded(this, 'onSenderSettled', (): void => {
    const pending = this.sender?.pending ?? 0;
    if (this.phase === PHASE.CLOSING) {
      if (pending === 0 && this.inflight === 0) this.finishClosing();
    } else if (this.phase !== PHASE.CLOSED) {
      this.pump(); // reading may have stopped at the sender's caps (isReadBlocked)
    }
  });

  /**
   * The stream a thread owns broke (errno name `code`; the sender's failed job, the data-path
   * thread's failed send or recv): the connection ends. A client that left is routine (info);
   * anything else, such as a read error after a reply's first 4 MiB went out on the sender, is
   * logged as an error.
   */
  private onStreamBroken(code: string, error?: Error): void {
    if (this.phase === PHASE.CLOSED) return;
    if (['EPIPE', 'ECONNRESET', 'ECANCELED'].includes(code)) {
      this.closeHard(null, `client gone (${code})`);
      return;
    }
    this.log.error(error === undefined ? { code } : { err: error },
      'the stream broke: ending the connection');
    this.closeHard(null, `stream broken (${code})`);
  }

  /** Replies queued on the sender beyond which reading stops (a client not reading replies). */
  private get senderPendingMax(): number {
    return 2 * this.limits.inflightMax;
  }

  sendv(frames: readonly Buffer[], onWritten?: () => void, heldBytes?: number): void {
    if (this.datapath !== null && frames.length > 1) {
      // one piece: the thread sends its own replies between two submitted frames, and a
      // chunk's header and its data may be two of them
      const whole = Buffer.concat(frames);
      if (onWritten !== undefined) onWritten(); // nothing refers to the frames any more
      this.send(whole);
      return;
    }
    const last = frames.length - 1;
    frames.forEach((frame, index) => index === last
      ? this.send(frame, onWritten, heldBytes)
      : this.send(frame));
  }

  sendRaw(frame: Buffer): void {
    this.send(frame);
  }

  reply(option: number, type: number, payload?: Buffer): void {
    this.send(encodeOptionReply(option, type, payload));
  }

  replyError(option: number, type: number, message: string): void {
    const text = Buffer.from(message, 'utf8').subarray(0, LIMITS.nbdEchoLengthMax);
    this.send(encodeOptionReply(option, type, text));
  }

  // --- the phase machine ---

  private setPhase(next: Phase): void {
    assert(next === PHASE.CLOSED || PHASE_TRANSITIONS[this.phase].includes(next),
      `connection: bad phase transition ${this.phase} -> ${next}`);
    this.phase = next;
  }

  private isReadBlocked(): boolean {
    switch (this.phase) {
      case PHASE.OPTION_BUSY:
      case PHASE.TLS_HANDSHAKE:
      case PHASE.CLOSING:
      case PHASE.CLOSED:
        return true;
      case PHASE.REQUEST_HEADER:
        return this.parked !== null || this.inflight >= this.limits.inflightMax ||
          this.inflightBytes >= this.limits.inflightBytesMax || this.isWaitingDrain ||
          this.replyBytes >= this.limits.inflightBytesMax ||
          (this.sender !== null && this.sender.pending >= this.senderPendingMax);
      default:
        return false;
    }
  }

  private pump(): void {
    if (this.isPumping || this.phase === PHASE.CLOSED) return;
    this.isPumping = true;
    try {
      while (!this.isReadBlocked() && this.step()) { /* each step consumed a frame */ }
    } catch (error) {
      if (error instanceof ProtocolError) this.closeHard(error, 'protocol violation');
      else this.fault(error, 'pump');
    } finally {
      this.isPumping = false;
    }
    if (this.isClosed()) return;
    // with a data-path thread the socket stays paused: the thread reads it
    if (this.datapath !== null) this.datapath.setPaused(this.isReadBlocked());
    else if (this.isReadBlocked()) this.input.pause();
    else this.input.resume();
  }

  /** Consumes one frame if it is buffered; false when more bytes are needed. */
  private step(): boolean {
    switch (this.phase) {
      case PHASE.CLIENT_FLAGS:
        return this.stepClientFlags();
      case PHASE.OPTION_HEADER:
        return this.stepOptionHeader();
      case PHASE.OPTION_PAYLOAD:
        return this.stepOptionPayload();
      case PHASE.REQUEST_HEADER:
        return this.stepRequestHeader();
      case PHASE.WRITE_PAYLOAD:
        return this.stepWritePayload();
      case PHASE.WRITE_DISCARD:
        return this.stepWriteDiscard();
      default:
        return false;
    }
  }

  private stepClientFlags(): boolean {
    if (this.framer.length < CLIENT_FLAGS_LENGTH) return false;
    const flags = this.framer.take(CLIENT_FLAGS_LENGTH).readUInt32BE(0);
    const known = NBD_FLAG_C.FIXED_NEWSTYLE | NBD_FLAG_C.NO_ZEROES;
    if ((flags & ~known) !== 0) {
      throw new ProtocolError('ERR_NBD_CLIENT_FLAGS',
        `handshake: unknown client flags: 0x${flags.toString(16)}`);
    }
    this.isFixedNewstyle = (flags & NBD_FLAG_C.FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (flags & NBD_FLAG_C.NO_ZEROES) !== 0;
    this.setPhase(PHASE.OPTION_HEADER);
    return true;
  }

  private stepOptionHeader(): boolean {
    if (this.framer.length < OPTION_HEADER_LENGTH) return false;
    const header = this.framer.take(OPTION_HEADER_LENGTH);
    if (header.readUInt32BE(0) !== IHAVEOPT_HIGH || header.readUInt32BE(4) !== IHAVEOPT_LOW) {
      throw new ProtocolError('ERR_NBD_BAD_MAGIC', 'option: bad IHAVEOPT magic');
    }
    this.option = header.readUInt32BE(8);
    this.optionLength = header.readUInt32BE(12);
    this.optionCount += 1;
    if (this.optionCount > this.limits.optionCountMax) {
      throw new ProtocolError('ERR_NBD_TOO_MANY_OPTIONS',
        `option: too many options: ${this.optionCount} > ${this.limits.optionCountMax}`);
    }
    if (this.optionLength > this.limits.optionLengthMax) {
      throw new ProtocolError('ERR_NBD_OPTION_TOO_LONG', `${nameOf(NBD_OPT, this.option)}: ` +
        `option too long: ${this.optionLength} > ${this.limits.optionLengthMax}`);
    }
    this.setPhase(PHASE.OPTION_PAYLOAD);
    return true;
  }

  private stepOptionPayload(): boolean {
    if (this.framer.length < this.optionLength) return false;
    // a copy: the handler runs across awaits, longer than a received view stays valid
    const payload = Buffer.from(this.framer.take(this.optionLength));
    this.setPhase(PHASE.OPTION_BUSY);
    this.isOptionBusy = true;
    this.runOption(this.option, payload).then(this.afterOptionSafely, (error: unknown) => {
      this.isOptionBusy = false;
      // a peer violation or an operating failure ends the session; a bug is a fault
      if (isBug(error)) this.fault(error, nameOf(NBD_OPT, this.option));
      else this.closeHard(error, `${nameOf(NBD_OPT, this.option)}: failed`);
      this.finalizeIfIdle();
    }).catch((error: unknown) => this.fault(error, 'option settled'));
    return false;
  }

  private async runOption(option: number, payload: Buffer): Promise<OptionOutcome> {
    if (!this.isFixedNewstyle && option !== NBD_OPT.EXPORT_NAME) return 'disconnect';
    if (this.isServerShuttingDown() && option !== NBD_OPT.ABORT) {
      if (option === NBD_OPT.EXPORT_NAME) return 'disconnect';
      this.replyError(option, NBD_REP.ERR_SHUTDOWN, 'server shutting down');
      return 'continue';
    }
    const isTlsExempt = option === NBD_OPT.STARTTLS || option === NBD_OPT.ABORT;
    if (this.tls?.mode === 'require' && !this.isTls && !isTlsExempt) {
      if (option === NBD_OPT.EXPORT_NAME) return 'disconnect';
      this.replyError(option, NBD_REP.ERR_TLS_REQD, 'TLS required');
      return 'continue';
    }
    this.log.debug({ option: nameOf(NBD_OPT, option), length: payload.length }, 'option');
    return optionHandlerOf(option)(this, option, payload);
  }

  private isOptionBusy = false;

  /** A bug in one connection must close that connection, never reject into the event loop. */
  private readonly afterOptionSafely = (outcome: OptionOutcome): void => {
    try {
      this.afterOption(outcome);
    } catch (error) {
      this.isOptionBusy = false;
      this.fault(error, 'after option');
      this.finalizeIfIdle();
    }
  };

  private readonly afterOption = (outcome: OptionOutcome): void => {
    this.isOptionBusy = false;
    if (this.phase === PHASE.CLOSED) {
      this.finalizeIfIdle();
      return;
    }
    switch (outcome) {
      case 'continue':
        this.setPhase(PHASE.OPTION_HEADER);
        break;
      case 'transmission':
        this.setPhase(PHASE.REQUEST_HEADER);
        this.startDatapath();
        break;
      case 'abort':
        this.beginClosing('NBD_OPT_ABORT');
        return;
      case 'disconnect':
        this.closeHard(null, `${nameOf(NBD_OPT, this.option)}: disconnect`);
        return;
      case 'starttls':
        this.startTls();
        return;
    }
    this.pump();
  };

  // --- option-session services ---

  eflagsFor(handle: ExportHandle): number {
    return transmissionFlagsOf(handle.export, this.isStructured);
  }

  bind(handle: ExportHandle, blockSizeMin: number): void {
    assert(this.handle === null);
    this.handle = handle;
    if (this.phase === PHASE.CLOSED) return; // afterOption releases it
    this.boundExport = handle.export;
    this.eflags = this.eflagsFor(handle);
    this.blockSizeMin = blockSizeMin;
    if (this.fencedNamesWhileNegotiating.includes(handle.export.name)) this.isFenced = true;
    this.fencedNamesWhileNegotiating = [];
    this.hasBaseAllocation = this.isStructured && this.metaContext !== null &&
      this.metaContext.hasBaseAllocation;
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.log = this.log.child({ export: handle.export.name });
    this.log.info({ size: handle.export.size, eflags: this.eflags, structured: this.isStructured,
      baseAllocation: this.hasBaseAllocation, tls: this.isTls, domain: this.domain },
    'export negotiated');
    this.hooks.onBound(this);
  }

  // --- the data-path thread ---

  /**
   * At the start of transmission: hands the socket to a data-path thread when one can run (a
   * socket read into arenas, so pausing it stops libuv reading; no TLS; an export whose
   * backings all have descriptors). Bytes already received go to the thread first.
   */
  private startDatapath(): void {
    const socket = this.socket;
    if (!this.isSelfReading || socket === null || this.output !== socket || this.isTls ||
      this.isFenced || this.sender !== null || !isDatapathWanted(socket, this.isSendfile) ||
      this.limits.writeDiscardMax < LIMITS.nbdPayloadMax) { // the thread serves up to that
      return;
    }
    const exp = this.export;
    const map = exp.datapathMap?.() ?? null;
    if (map === null) return;
    // the handshake's last reply goes out before the thread writes anything
    if (this.isCorked) this.uncork();
    if (this.output.writableLength > 0) return;
    const buffered = this.framer.length;
    const initial = buffered > 0 ? Buffer.from(this.framer.take(buffered)) : null;
    const datapath = Datapath.start(socket, {
      ...map, isStructured: this.isStructured, blockSizeMin: this.blockSizeMin,
      isTcp: typeof socket.remotePort === 'number', spinMicros: this.limits.busyPollMicros,
    }, initial, {
      onForward: this.onDatapathForward,
      onEof: this.onEnd,
      onError: (code) => this.onStreamBroken(code),
      onStopped: this.onDatapathStopped,
      onStartFailed: (error) => this.log.error({ err: error }, 'data path: no thread'),
    });
    if (datapath === null) {
      if (initial === null) return; // the JS path goes on as it was
      // the bytes it had are gone with the receiver: the stream cannot be resumed here
      this.closeHard(new Error('data path: no thread'), 'no data-path thread');
      return;
    }
    this.input.pause();
    this.framer.dispose();
    this.framer = new Framer();
    this.datapath = datapath;
    this.unsubscribeMap = exp.onMapReplaced?.(() => datapath.handOff()) ?? null;
  }

  private readonly onDatapathForward = guarded(this, 'onDatapathForward', (bytes: Buffer): void => {
    if (this.phase === PHASE.CLOSED) return;
    (this.framer as Framer).push(bytes);
    this.pump();
  });


  /** The thread was joined: nothing of it touches the export's descriptors any more. */
  private readonly onDatapathStopped = guarded(this, 'onDatapathStopped', (): void => {
    if (this.unsubscribeMap !== null) this.unsubscribeMap();
    this.unsubscribeMap = null;
    if (this.phase === PHASE.CLOSING) {
      // stopped when asked (nothing in flight) or on its own (a failure: an error came first)
      if (this.inflight === 0) this.finishClosing();
      else this.closeHard(null, 'data path stopped');
    } else if (this.phase === PHASE.CLOSED) {
      this.finalizeIfIdle();
    } else {
      this.closeHard(null, 'data path stopped'); // on its own: its error was reported first
    }
  });

  // --- TLS ---

  private startTls(): void {
    assert(this.tls !== null && this.socket !== null);
    const socket = this.socket;
    this.setPhase(PHASE.TLS_HANDSHAKE);
    if (this.isCorked) this.uncork(); // the ACK goes out in plaintext first
    this.detachStreams();
    socket.pause();
    const dropped = this.framer.clear(); // nothing sent before TLS survives (CVE class)
    if (dropped > 0) this.log.warn({ dropped }, 'NBD_OPT_STARTTLS: discarded plaintext');
    this.isStructured = false;
    this.metaContext = null;
    this.tls.upgrade(socket).then(({ secure, domain }) => {
      if (this.phase === PHASE.CLOSED) {
        secure.destroy();
        return;
      }
      this.input = secure;
      this.output = secure;
      this.socket = null;
      this.isTls = true;
      this.domain = domain;
      this.attachStreams();
      this.log.info({ domain, protocol: secure.getProtocol() }, 'TLS established');
      this.setPhase(PHASE.OPTION_HEADER);
      this.pump();
    }, (error: unknown) => {
      this.closeHard(error, 'TLS handshake failed');
      socket.destroy();
    });
  }

  // --- transmission ---

  private decodeRequest(header: Buffer): Request {
    if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
      throw new ProtocolError('ERR_NBD_BAD_MAGIC', 'request: bad request magic');
    }
    const offsetHigh = header.readUInt32BE(16);
    const offsetLow = header.readUInt32BE(20);
    return {
      flags: header.readUInt16BE(4),
      type: header.readUInt16BE(6),
      cookieHigh: header.readUInt32BE(8),
      cookieLow: header.readUInt32BE(12),
      offset: offsetHigh >= 0x200000 ? -1 : offsetHigh * 0x100000000 + offsetLow,
      length: header.readUInt32BE(24),
    };
  }

  private stepRequestHeader(): boolean {
    if (this.framer.length < REQUEST_LENGTH) return false;
    const request = this.decodeRequest(this.framer.take(REQUEST_LENGTH));
    this.counts.requests += 1;
    if (request.type === NBD_CMD.DISC) {
      this.beginClosing('NBD_CMD_DISC');
      return false;
    }
    const errno = this.isFenced ? NBD_E.ESHUTDOWN : validateRequest(request, {
      eflags: this.eflags,
      size: this.export.size,
      isStructured: this.isStructured,
      hasBaseAllocation: this.hasBaseAllocation,
      blockSizeMin: this.blockSizeMin,
    });
    if (request.type === NBD_CMD.WRITE && request.length > this.limits.writeDiscardMax) {
      throw new ProtocolError('ERR_NBD_OVERSIZE_WRITE', `NBD_CMD_WRITE: payload too large: ` +
        `${request.length} > ${this.limits.writeDiscardMax}`);
    }
    if (errno === NBD_E.OK && this.mustPark(request)) return false;
    this.proceed(request, errno);
    return true;
  }

  /** A decoded request goes on: a WRITE starts receiving its payload, others run. */
  private proceed(request: Request, errno: number): void {
    if (request.type === NBD_CMD.WRITE) this.acceptWrite(request, errno);
    else if (errno !== NBD_E.OK) this.refuse(request, errno);
    else this.dispatch(request, null);
  }

  /**
   * A READ or WRITE the server's budget cannot take now is parked: reading stops until the
   * budget resumes it (budget.ts), so the connections that hold the most are the ones that wait.
   */
  private mustPark(request: Request): boolean {
    const isCounted = request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE;
    if (!isCounted || this.budget.canTake(this.heldBytes, request.length)) return false;
    this.parked = request;
    this.budget.park(this.onBudget);
    return true;
  }

  /** The budget's waiter: resumes the parked request once it may take its bytes. */
  private readonly onBudget = (): boolean => {
    const request = this.parked;
    if (request === null || this.phase !== PHASE.REQUEST_HEADER) return true; // nothing waits
    if (!this.budget.canResume(this.heldBytes, request.length)) return false;
    this.parked = null;
    try {
      this.proceed(request, NBD_E.OK);
    } catch (error) {
      this.fault(error, 'budget resume');
    }
    setImmediate(this.pumpLater);
    return true;
  };

  private readonly pumpLater = guarded(this, 'pumpLater', (): void => this.pump());

  /** A parked request is dropped (the connection is closing): the budget forgets it. */
  private unpark(): void {
    if (this.parked === null) return;
    this.parked = null;
    this.budget.unpark(this.onBudget);
  }

  private acceptWrite(request: Request, errno: number): void {
    this.pending = request;
    if (errno === NBD_E.OK) {
      this.writeReserveBytes = request.length;
      this.syncBudget();
      this.framer.expect(request.length);
      this.setPhase(PHASE.WRITE_PAYLOAD);
    } else {
      this.pendingErrno = errno;
      this.discardRemaining = request.length;
      this.setPhase(PHASE.WRITE_DISCARD);
    }
  }

  private stepWritePayload(): boolean {
    const request = this.pending;
    assert(request !== null);
    if (this.framer.length < request.length) return false;
    const payload = this.framer.takePayload(request.length);
    this.framer.expect(0);
    this.pending = null;
    this.writeReserveBytes = 0; // held from here as a request in flight (dispatch)
    this.setPhase(PHASE.REQUEST_HEADER);
    this.dispatch(request, payload);
    return true;
  }

  private stepWriteDiscard(): boolean {
    const request = this.pending;
    assert(request !== null);
    this.discardRemaining -= this.framer.skip(this.discardRemaining);
    if (this.discardRemaining > 0) return false;
    this.pending = null;
    this.setPhase(PHASE.REQUEST_HEADER);
    this.refuse(request, this.pendingErrno);
    return true;
  }

  private refuse(request: Request, errno: number): void {
    this.counts.errors += 1;
    this.log.debug({ command: nameOf(NBD_CMD, request.type), flags: request.flags,
      offset: request.offset, length: request.length, errno }, 'request refused');
    sendError(this, request, errno, 'request refused');
  }

  /**
   * Runs a request; a WRITE `payload` is released once the request settled: the Export settles
   * a write only after every piece did, so nothing reads it any more.
   */
  private dispatch(request: Request, payload: Payload | null): void {
    const cost = request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE
      ? request.length : 0;
    this.inflight += 1;
    this.inflightBytes += cost;
    this.syncBudget();
    const settle = (): void => this.afterRequestSafely(cost, payload);
    // never rejects; kept for safety
    executeRequest(this, request, payload === null ? null : payload.data).then(settle, settle);
  }

  private afterRequestSafely(cost: number, payload: Payload | null): void {
    try {
      if (payload !== null) payload.release();
      this.afterRequest(cost);
    } catch (error) {
      this.fault(error, 'after request');
    }
  }

  private afterRequest(cost: number): void {
    this.inflight -= 1;
    this.inflightBytes -= cost;
    assert(this.inflight >= 0);
    this.syncBudget();
    if (this.inflight > 0) {
      if (this.phase !== PHASE.CLOSED) this.pump();
      return;
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
    if (this.phase === PHASE.CLOSING) this.finishClosing();
    else if (this.phase === PHASE.CLOSED) this.finalizeIfIdle();
    else this.pump();
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Names fenced while this connection was negotiating: its option may have opened the export
   * just before the fence, so binding to one of these names makes the connection fenced.
   */
  private fencedNamesWhileNegotiating: string[] = [];

  /** For a connection still negotiating: fence it if it binds to `name` (see above). */
  fenceOnBind(name: string): void {
    if (this.fencedNamesWhileNegotiating.length < 64) this.fencedNamesWhileNegotiating.push(name);
  }

  /** Every later request fails with ESHUTDOWN; resolves when none is in flight. */
  fence(): Promise<void> {
    if (!this.isFenced) this.log.info('export fenced');
    this.isFenced = true;
    if (this.datapath !== null) {
      // its I/O ends first; the requests it forwards from then on are refused here
      const datapath = this.datapath;
      return datapath.fence().then(() => this.whenIdle());
    }
    const idle = this.whenIdle();
    if (this.sender === null || this.inflight === 0) return idle;
    // a READ on the sender stays in flight until the client takes its bytes; one that does not
    // read must not hold the fence (and with it the catalog's reconcile) for ever
    const timer = setTimeout(() => {
      if (this.inflight > 0 && this.sender !== null && this.sender.pending > 0) {
        this.closeHard(null, 'fenced while the client was not taking replies');
      }
    }, LIMITS.nbdFenceSenderWaitMs);
    return idle.finally(() => clearTimeout(timer));
  }

  /**
   * The server's stall sweep (server.ts): a connection that holds at least
   * LIMITS.nbdStallHeldMin bytes while its client neither sends nor takes bytes for
   * limits.stallTimeoutMs is ended, and what it held comes back to the budget (budget.ts).
   * True when it ended the connection.
   */
  checkStall(now: number): boolean {
    if (this.phase === PHASE.CLOSED) return false;
    if (this.datapath !== null) {
      const [, bytesRead, bytesWritten] = this.datapath.stats();
      const mark = bytesRead! + bytesWritten!;
      if (mark !== this.progressMark) this.progressAt = now;
      this.progressMark = mark;
    }
    const held = this.heldBytes;
    if (held < LIMITS.nbdStallHeldMin) {
      this.progressAt = now; // the deadline counts from when it began to hold memory
      return false;
    }
    const idleMs = now - this.progressAt;
    if (idleMs < this.limits.stallTimeoutMs) return false;
    this.closeHard(new ProtocolError('ERR_NBD_STALLED', `transmission: the client took no ` +
      `bytes for ${idleMs} ms while the server held ${held} bytes for it`), 'client stalled');
    return true;
  }

  // --- closing ---

  /** Graceful: stop reading, let requests in flight finish, then end the stream. */
  beginClosing(reason: string): void {
    if (this.phase === PHASE.CLOSING || this.phase === PHASE.CLOSED) return;
    this.log.debug({ reason, inflight: this.inflight }, 'closing');
    this.closeReason = reason;
    this.setPhase(PHASE.CLOSING);
    this.unpark(); // never acknowledged: dropped with the connection
    this.input.pause();
    this.datapath?.setPaused(true);
    if (this.inflight === 0) this.finishClosing();
  }

  private closeReason = '';

  private finishClosing(): void {
    if (this.phase === PHASE.CLOSED) return;
    if (this.sender !== null && this.sender.pending > 0) return; // onSenderSettled calls again
    if (this.datapath !== null && !this.datapath.isStopped) {
      this.datapath.stop(false); // sends what is queued, then onDatapathStopped calls again
      return;
    }
    if (this.isCorked) this.uncork();
    const output = this.output;
    const input = this.input;
    this.markClosed(null, this.closeReason);
    // a client that never takes the last replies must not keep the stream for ever
    const lingerTimer = setTimeout(() => {
      input.destroy();
      output.destroy();
    }, this.limits.stallTimeoutMs);
    lingerTimer.unref();
    output.end(() => {
      clearTimeout(lingerTimer);
      if (!sameStream(input, output) || typeof (input as Socket).destroySoon !== 'function') return;
      (input as Socket).destroySoon();
    });
  }

  /**
   * A bug while serving this connection, not the client's doing: it is logged at error level
   * with its stack, counted (stats.faults, the server's connectionFaults), and ends this
   * connection only. The process and every other connection go on.
   */
  fault(error: unknown, where: string): void {
    this.counts.faults += 1;
    this.log.error({ err: error, where }, 'internal error: ending the connection');
    try {
      this.closeHard(error, `internal error in ${where}`);
    } catch (inner) {
      // closing itself failed: at least stop all traffic of this connection
      this.log.error({ err: inner }, 'internal error while closing');
      this.phase = PHASE.CLOSED;
      this.input.destroy();
      this.output.destroy();
    }
  }

  /** Hard close: destroy the streams now. */
  closeHard(error: unknown, reason: string): void {
    if (this.phase === PHASE.CLOSED) return;
    // replies queued in this turn (an error reply just before a fault) go to the kernel first
    if (this.isCorked) this.uncork();
    this.markClosed(error, reason);
    this.input.destroy();
    if (!this.isDuplex()) this.output.destroy();
  }

  private markClosed(error: unknown, reason: string): void {
    this.phase = PHASE.CLOSED;
    this.unpark();
    // graceful: the queue is empty; hard: what is queued completes with ECANCELED
    if (this.sender !== null) this.sender.close(this.sender.pending > 0);
    // graceful: stopped already; hard: stops at once (onDatapathStopped finalizes)
    if (this.datapath !== null) this.datapath.stop(true);
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.detachStreams();
    this.input.on('error', ignoreError);
    this.output.on('error', ignoreError);
    this.framer.dispose();
    const fields = { reason, inflight: this.inflight, ...this.stats };
    if (error !== null && error !== undefined) this.log.warn({ ...fields, err: error },
      'connection closed');
    else this.log.info(fields, 'connection closed');
    this.finalizeIfIdle();
  }

  private isFinalized = false;

  /** Once closed and idle: release the export handle and leave the server's registry. */
  private finalizeIfIdle(): void {
    if (this.phase !== PHASE.CLOSED || this.inflight > 0) return;
    if (this.datapath !== null && !this.datapath.isStopped) return; // it may still do I/O
    if (this.isOptionBusy) return; // an option handler may still bind; afterOption finalizes
    if (this.handle !== null) {
      const handle = this.handle;
      this.handle = null;
      handle.release();
    }
    if (this.isFinalized) return;
    this.isFinalized = true;
    // what is still counted is queued on a destroyed stream: it goes with it
    if (this.budgetBytes !== 0) this.budget.adjust(-this.budgetBytes);
    this.budgetBytes = 0;
    this.hooks.onClosed(this);
  }
}

function sameStream(a: object, b: object): boolean {
  return a === b;
}

function ignoreError(): void { /* after close, late stream errors are expected */ }
