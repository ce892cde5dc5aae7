/**
 * nbd/connection: one client from greeting to close (proto.md "Protocol phases"). The
 * connection owns the socket, its phase (phase.ts: every state it can be in), the negotiated
 * features, the bound export and the counts; the work of each phase is elsewhere:
 * - handshake.ts: client flags, option framing and handlers, STARTTLS;
 * - request-intake.ts: request headers decoded, validated and dispatched, WRITE payloads,
 *   the memory budget's parking; transmission.ts executes and replies;
 * - reply-channel.ts: the output, one channel per executor that writes the socket;
 * - executors.ts: at the start of transmission, routesOf (dataplane/routes.ts) decides once
 *   which code serves each kind of request, and the data-path or sender thread is started;
 * - teardown.ts: graceful and hard close, fencing, the stall check.
 *
 * Bytes arrive into a Receiver (a Framer fed by 'data' events, or an ArenaReceiver the socket
 * reads into, calling onSocketRead(); with a data-path thread, the bytes it forwards) and
 * pump() advances the phase machine as far as buffered bytes allow. Reading stops (socket or
 * thread paused) while the connection has limits.inflightMax requests or inflightBytesMax
 * bytes in flight, while replies not yet written out hold inflightBytesMax bytes, while the
 * reply channel is blocked (drain, a sender's queue), or while a request waits for the budget:
 * that is the only memory a client can make the server hold (at most twice
 * inflightBytesMax plus one request).
 */
import assert from 'node:assert';
import net, { type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { ProtocolError } from '../errors';
import type { DataPlaneSource, Export } from '../engine/export';
import type { Logger } from '../log';
import type { MemoryBudget } from './budget';
import type {
  ConnectionHooks, ConnectionLimits, ConnectionOptions, ConnectionStats, TlsUpgrader,
} from './connection-options';
import { NBD_FLAG } from './constants';
import type { Datapath } from '../dataplane/datapath';
import { type ExecutorSettings, type Routes, statsOf } from './executors';
import { Framer, type Receiver } from './framer';
import type { ArenaReceiver } from './arena-receiver';
import { bindExport, stepClientFlags, stepOptionHeader, stepOptionPayload } from './handshake';
import type { MetaContextState, OptionSession } from './options/index';
import {
  PHASE, PHASE_INITIAL, type Phase, isClosedPhase, isReadingPhase, nextPhase,
} from './phase';
import type { Domain, ExportHandle, ExportProvider } from './provider';
import { guarded, type ReplyChannel, type ReplyHost } from './reply-channel';
import { StreamChannel } from './reply-stream';
import { RequestCounts } from './request-stats';
import {
  resumeParked, stepRequestHeader, stepWriteDiscard, stepWritePayload,
} from './request-intake';
import * as teardown from './teardown';
import type { TransmissionContext } from './transmission';
import { type Request, type ValidateContext, transmissionFlagsOf } from './validate';
import { encodeGreeting, encodeOptionReply } from './wire-writer';
import { LIMITS } from '../limits';

export type {
  ConnectionHooks, ConnectionLimits, ConnectionOptions, ConnectionStats, TlsUpgrader,
} from './connection-options';

/**
 * The connection's state is shared with the phase modules listed in the header (as nbdkit's
 * protocol files share `struct connection`); only they and the server use it.
 */
export class Connection implements OptionSession, TransmissionContext, ReplyHost {
  readonly id: number;
  log: Logger;
  readonly provider: ExportProvider;
  input: Readable;
  output: Writable;
  socket: Socket | null;
  readonly limits: ConnectionLimits;
  readonly tls: TlsUpgrader | null;
  readonly executors: ExecutorSettings;
  readonly hooks: ConnectionHooks;
  readonly isServerShuttingDown: () => boolean;
  readonly budget: MemoryBudget;
  framer: Receiver;
  /** bytes arrive through onSocketRead() rather than 'data' events */
  readonly isSelfReading: boolean;
  /** the stream's reply channel, and the one replies go through (executors.ts may wrap it) */
  stream: StreamChannel;
  channel: ReplyChannel;
  /** the data-path thread (executors.ts), kept after it stopped until finalized */
  datapath: Datapath | null = null;
  /** the export's data plane (Export.dataPlane), taken at the start of transmission; opaque
   * here: only src/dataplane looks inside */
  dataPlane: DataPlaneSource | undefined = undefined;

  phase: Phase = PHASE_INITIAL;
  domain: Domain = null;
  isTls = false;
  noZeroes = false;
  isFixedNewstyle = false;
  isStructured = false;
  metaContext: MetaContextState | null = null;
  optionCount = 0;
  option = 0;
  optionLength = 0;
  handshakeTimer: NodeJS.Timeout | null = null;

  handle: ExportHandle | null = null;
  boundExport: Export | null = null;
  /** what validate.ts checks requests against, set at bind (the size before each request) */
  readonly validateContext: ValidateContext = { eflags: 0, size: 0, isStructured: false,
    hasBaseAllocation: false, blockSizeMin: 1 };
  /** a WRITE whose payload is being received or skipped, and its errno when refused */
  pending: Request | null = null;
  discardRemaining = 0;
  pendingErrno = 0;
  /** a validated READ or WRITE waiting for the budget (reading stops meanwhile) */
  parked: Request | null = null;

  inflight = 0;
  inflightBytes = 0;
  /** the length of the WRITE whose payload is being received (taken from the budget) */
  writeReserveBytes = 0;
  /** what this connection holds in the server's budget (budget.ts): see heldBytes */
  budgetBytes = 0;
  isFenced = false;
  idleWaiters: (() => void)[] = [];
  private isPumping = false;
  readonly counts = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0, faults: 0 };
  readonly requestCounts = new RequestCounts(); // by command and errno (request-stats.ts)
  /** routesOf's answer, set when transmission starts (executors.ts) */
  routes: Routes | null = null;
  /** Date.now() when the client last sent bytes or took reply bytes (the stall deadline) */
  progressAt = Date.now();
  progressMark = 0;
  closeReason = '';
  /** names fenced while negotiating: binding to one makes the connection fenced */
  fencedNamesWhileNegotiating: string[] = [];

  constructor(options: ConnectionOptions) {
    this.id = options.id;
    this.input = options.input;
    this.output = options.output;
    this.socket = options.socket;
    this.provider = options.provider;
    this.log = options.log;
    this.limits = options.limits;
    this.tls = options.tls;
    this.executors = options.executors;
    this.hooks = options.hooks;
    this.isServerShuttingDown = options.isShuttingDown;
    this.budget = options.budget;
    const receiver = options.receiver ?? null;
    this.framer = receiver ?? new Framer();
    this.isSelfReading = receiver !== null;
    assert(!this.isSelfReading || this.tls === null, 'connection: STARTTLS needs the Framer');
    this.stream = new StreamChannel(this.output, this, this.counts, this.limits.inflightBytesMax);
    this.channel = this.stream;
  }

  /** Requests, refusals and bytes so far, the data-path thread's included (executors.ts). */
  get stats(): ConnectionStats {
    return statsOf(this);
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

  /** one stream both ways (a socket), rather than a pair such as stdin/stdout */
  get isDuplex(): boolean {
    return (this.input as object) === this.output;
  }

  start(): void {
    this.attachStreams();
    this.handshakeTimer = setTimeout(this.onHandshakeTimeout, this.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.channel.send(encodeGreeting(NBD_FLAG.FIXED_NEWSTYLE | NBD_FLAG.NO_ZEROES));
    this.log.info('connection opened');
    this.pump(); // starts reading (a listener's sockets arrive paused)
  }

  isClosed(): boolean {
    return isClosedPhase(this.phase);
  }

  setPhase(next: Phase): void {
    this.phase = nextPhase(this.phase, next);
  }

  // --- streams ---

  attachStreams(): void {
    if (!this.isSelfReading) this.input.on('data', this.onData);
    this.input.on('end', this.onEnd);
    this.input.on('error', this.onStreamError);
    this.input.on('close', this.onInputClose);
    if (!this.isDuplex) this.output.on('error', this.onStreamError);
  }

  detachStreams(): void {
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.off('error', this.onStreamError);
    this.input.off('close', this.onInputClose);
    if (!this.isDuplex) this.output.off('error', this.onStreamError);
    this.channel.detach();
  }

  private readonly onData = guarded(this, 'onData', (chunk: Buffer): void => {
    this.counts.bytesRead += chunk.length;
    this.progressAt = Date.now();
    (this.framer as Framer).push(chunk);
    this.pump();
  });

  /** The socket's onread callback: `length` bytes landed in the receiver's tail `target`. */
  onSocketRead(length: number, target: Buffer): void {
    if (this.isClosed() || this.datapath !== null) return;
    this.counts.bytesRead += length;
    this.progressAt = Date.now();
    (this.framer as ArenaReceiver).received(length, target);
    this.pump();
  }

  /** the client half-closed: finish what is in flight, then close (fio closes without DISC) */
  readonly onEnd = guarded(this, 'onEnd', (): void => this.beginClosing('client closed'));

  private readonly onInputClose = guarded(this, 'onInputClose', (): void => {
    if (!this.isClosed()) this.closeHard(null, 'stream closed');
  });

  private readonly onStreamError = guarded(this, 'onStreamError', (error: Error): void => {
    this.closeHard(null, `stream error: ${error.message}`);
  });

  private readonly onHandshakeTimeout = guarded(this, 'onHandshakeTimeout', (): void => {
    this.handshakeTimer = null;
    this.closeHard(new ProtocolError('ERR_NBD_HANDSHAKE_TIMEOUT',
      `handshake: not finished after ${this.limits.handshakeTimeoutMs} ms`), 'handshake timeout');
  });

  // --- output (OptionSession) and its accounting (ReplyHost) ---

  /** A socket (TCP, Unix, TLS) has copied a chunk once its write callback runs. */
  get canReuseBuffers(): boolean {
    return this.output instanceof net.Socket;
  }

  sendRaw(frame: Buffer): void {
    this.channel.send(frame);
  }

  reply(option: number, type: number, payload?: Buffer): void {
    this.channel.send(encodeOptionReply(option, type, payload));
  }

  replyError(option: number, type: number, message: string): void {
    const text = Buffer.from(message, 'utf8').subarray(0, LIMITS.nbdEchoLengthMax);
    this.channel.send(encodeOptionReply(option, type, text));
  }

  /**
   * What this connection makes the server hold (budget.ts): requests in flight, replies not yet
   * written out, and the WRITE payload being received.
   */
  get heldBytes(): number {
    return this.inflightBytes + this.channel.replyBytes + this.writeReserveBytes;
  }

  /** Brings the server's budget up to date with heldBytes (after every change of it). */
  syncBudget(): void {
    if (this.phase === PHASE.FINALIZED) return; // gave everything back
    const held = this.heldBytes;
    const delta = held - this.budgetBytes;
    this.budgetBytes = held;
    if (delta !== 0) this.budget.adjust(delta);
  }

  onReplyReleased(isUnblocked: boolean): void {
    this.progressAt = Date.now(); // the client (or its socket buffer) took bytes
    this.syncBudget();
    if (isUnblocked && !this.isClosed() && this.phase !== PHASE.CLOSING) this.pump();
  }

  onWritable(): void {
    this.pump();
  }

  onThreadSettled(): void {
    if (this.phase === PHASE.CLOSING) {
      if (this.channel.pendingOnThread === 0 && this.inflight === 0) teardown.finishClosing(this);
    } else if (!this.isClosed()) {
      this.pump(); // reading may have stopped at the sender's caps (isReadBlocked)
    }
  }

  /** The stream a thread owns broke (errno name `code`): the connection ends (teardown.ts). */
  onStreamBroken(code: string, error?: Error): void {
    teardown.streamBroken(this, code, error);
  }

  // --- the phase machine ---

  private isReadBlocked(): boolean {
    if (this.phase !== PHASE.REQUEST_HEADER) return !isReadingPhase(this.phase);
    return this.parked !== null || this.inflight >= this.limits.inflightMax ||
      this.inflightBytes >= this.limits.inflightBytesMax || this.channel.isBlocked ||
      this.channel.replyBytes >= this.limits.inflightBytesMax;
  }

  pump(): void {
    if (this.isPumping || this.isClosed()) return;
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

  readonly pumpLater = guarded(this, 'pumpLater', (): void => this.pump());

  /** Consumes one frame if it is buffered; false when more bytes are needed. */
  private step(): boolean {
    switch (this.phase) {
      case PHASE.CLIENT_FLAGS:
        return stepClientFlags(this);
      case PHASE.OPTION_HEADER:
        return stepOptionHeader(this);
      case PHASE.OPTION_PAYLOAD:
        return stepOptionPayload(this);
      case PHASE.REQUEST_HEADER:
        return stepRequestHeader(this);
      case PHASE.WRITE_PAYLOAD:
        return stepWritePayload(this);
      case PHASE.WRITE_DISCARD:
        return stepWriteDiscard(this);
      default:
        return false;
    }
  }

  /** The budget's waiter: resumes the parked request once it may take its bytes. */
  readonly onBudget = (): boolean => resumeParked(this);

  // --- option-session services ---

  eflagsFor(handle: ExportHandle): number {
    return transmissionFlagsOf(handle.export, this.isStructured);
  }

  bind(handle: ExportHandle, blockSizeMin: number): void {
    bindExport(this, handle, blockSizeMin);
  }

  // --- closing and fencing (teardown.ts) ---

  /** For a connection still negotiating: fence it if it binds to `name`. */
  fenceOnBind(name: string): void {
    if (this.fencedNamesWhileNegotiating.length < 64) this.fencedNamesWhileNegotiating.push(name);
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  fence(): Promise<void> {
    return teardown.fence(this);
  }

  checkStall(now: number): boolean {
    return teardown.checkStall(this, now);
  }

  beginClosing(reason: string): void {
    teardown.beginClosing(this, reason);
  }

  closeHard(error: unknown, reason: string): void {
    teardown.closeHard(this, error, reason);
  }

  fault(error: unknown, where: string): void {
    teardown.fault(this, error, where);
  }
}
