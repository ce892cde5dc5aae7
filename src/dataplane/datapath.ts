/**
 * dataplane/datapath: a connection's data-path thread (native/src/dp-*.c), which reads the
 * client's requests itself, serves plain READs and WRITEs from the backing descriptors, and
 * hands every other request to the connection as the bytes it came in ("forwarded").
 *
 * Why: on the JS path every request costs hand-offs between the socket, the JS thread and the
 * I/O threads, and the one JS thread does every copy; nbdcopy and 1 MiB writes were limited by
 * that. The thread does what nbdkit's file plugin does per connection: recv, pread or pwrite,
 * send, with several replies gathered into one sendmsg.
 *
 * What it serves from: the export's data plane (engine/export.ts DataPlaneSource), whose map
 * start() takes and whose replacement it follows (handOff); the connection hands the source
 * over without looking inside.
 *
 * Ownership: from start() the thread reads the socket (the JS socket stays paused, which in
 * onread mode stops libuv reading it) and is the only writer: every JS reply goes through
 * submit(), whole. Forwarded bytes go into the connection's Framer in stream order, so the
 * connection's phase machine, validation and error replies run as before for them.
 *
 * Consistency: a WRITE sets its pool entries' dirty flags (shared memory) before its reply, so
 * a FLUSH on any connection covers it (multi-conn). fence() stops I/O on the backings (later
 * requests are forwarded, and the connection refuses them) and resolves once none is under way.
 * A replaced map (copy-on-write swapped an extent, an enlarge, a clone) is handed to the thread
 * (follow: datapathRemap), and its promise resolves once the thread serves from it, so that the
 * write that swapped it is answered only then; a map the thread cannot take, or a thread that
 * has not taken it within LIMITS.cowThreadSwapWaitMs (held in a send by a client that takes no
 * replies), hands everything to JS instead (handOff), which resolves once no I/O is under way.
 * The thread stops when the connection closes: gracefully after the frames queued (bounded by
 * LIMITS.nbdFenceSenderWaitMs against a client that takes no replies), or at once; `onStopped`
 * runs once it has been joined, and only then may the export's descriptors be released.
 *
 * Whether a connection gets a thread is decided by routesOf (dataplane/routes.ts).
 */
import { getSystemErrorName } from 'node:util';
import type { DataPlaneSource } from '../engine/export';
import { LIMITS } from '../limits';
import * as sys from '../sys/index';

/** What the thread needs beyond the export's map. */
export interface DatapathSettings {
  isStructured: boolean;
  /** the minimum block size advertised (1 when none was) */
  blockSizeMin: number;
  isTcp: boolean;
  /** busy-poll budget in microseconds, 0: off (native/src/dp-loop.c spin()) */
  spinMicros: number;
  /** large READs are read by a reader thread while the reply before is sent (dp-reader.c):
   * while a CPU is free (true), or always */
  hasReader: boolean | 'always';
}

/** Why start() started no thread: no map now (nothing taken), or the thread failed. */
export type DatapathRefusal = 'no-map' | 'no-thread';

export interface DatapathHandlers {
  /** stream bytes the connection must handle itself, in order */
  onForward(bytes: Buffer): void;
  /** the client closed its side */
  onEof(): void;
  /** the socket failed (errno name): the stream is broken */
  onError(code: string): void;
  /** the thread was joined */
  onStopped(): void;
  /** start() could not start the thread (it returns 'no-thread') */
  onStartFailed(error: unknown): void;
}

export class Datapath {
  isStopped = false;
  private isStopping = false;
  private isFenced = false;
  private fenceWaiters: (() => void)[] = [];
  private stopTimer: NodeJS.Timeout | null = null;
  private isPaused = false;

  private unsubscribeMap: (() => void) | null = null;
  private remapSequence = 0;
  private remapWaiters: { sequence: number; resolve: () => void }[] = [];

  private constructor(private readonly native: sys.NativeDatapath) {}

  /**
   * Starts the thread on the socket `socketFd` over `source`'s map; `takeInitial` gives the
   * bytes already received (called only once the map is there). 'no-map': nothing was taken;
   * 'no-thread': handlers.onStartFailed was told (and what takeInitial gave is gone).
   */
  static start(socketFd: number, source: DataPlaneSource, settings: DatapathSettings,
    takeInitial: () => Buffer | null, handlers: DatapathHandlers): Datapath | DatapathRefusal {
    const map = source.datapathMap();
    if (map === null) return 'no-map';
    const initial = takeInitial();
    let datapath: Datapath | null = null;
    const onEvent: sys.DatapathEventHandler = (kind, bytes, value) => {
      datapath?.deliver(kind, bytes, value, handlers);
    };
    try {
      datapath = new Datapath(sys.createDatapath(socketFd, { ...map, ...settings }, initial,
        onEvent));
    } catch (error) {
      handlers.onStartFailed(error); // e.g. EAGAIN from pthread_create
      return 'no-thread';
    }
    const started = datapath;
    started.unsubscribeMap = source.onMapReplaced(() => started.follow(source));
    return started;
  }

  private deliver(kind: number, bytes: Buffer | null, value: number,
    handlers: DatapathHandlers): void {
    switch (kind) {
      case sys.DATAPATH_EVENT.forward:
        if (bytes !== null) handlers.onForward(bytes);
        return;
      case sys.DATAPATH_EVENT.eof:
        handlers.onEof();
        return;
      case sys.DATAPATH_EVENT.error:
        handlers.onError(value > 0 ? getSystemErrorName(-value) : `errno ${value}`);
        return;
      case sys.DATAPATH_EVENT.fenced:
        this.releaseFence();
        return;
      case sys.DATAPATH_EVENT.remapped:
        this.releaseRemaps(value);
        return;
      case sys.DATAPATH_EVENT.stopped:
        this.isStopped = true;
        this.clearStopTimer();
        this.releaseFence();
        if (this.unsubscribeMap !== null) this.unsubscribeMap();
        this.unsubscribeMap = null;
        handlers.onStopped();
        return;
      default:
        return;
    }
  }

  /** sys.datapathStats: [requests served by the thread, bytes received, bytes sent, busy-polls
   * that found a request, busy-polls that found none, receive and reply buffer capacities, READs
   * served, their bytes, WRITEs served, their bytes, READs its reader read] so far (the last
   * counts once stopped). */
  stats(): Float64Array {
    return sys.datapathStats(this.native);
  }

  /** sys.datapathLatency: the thread's service times in sys.LATENCY_BUCKETS log2-µs buckets. */
  latency(): Float64Array {
    return sys.datapathLatency(this.native);
  }

  /** Queues a whole frame; `done(error)` once it was sent or could not be. */
  submit(frame: Buffer, done: (error: Error | null) => void): void {
    sys.datapathSubmit(this.native, frame, done);
  }

  /** Stops or resumes reading; the thread hears only changes (each one is a wake-up). */
  setPaused(isPaused: boolean): void {
    if (this.isStopped || isPaused === this.isPaused) return;
    this.isPaused = isPaused;
    sys.datapathPause(this.native, isPaused);
  }

  /**
   * No more I/O on the backings from the thread (every later request is forwarded); resolves
   * once none is under way. The thread tells once when an I/O it was doing ended (`fenced`).
   */
  fence(): Promise<void> {
    if (this.isStopped || this.isFenced) return Promise.resolve();
    if (sys.datapathFence(this.native)) {
      this.isFenced = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.fenceWaiters.push(resolve));
  }

  /**
   * The export's map changed: every later request goes to the JS path (which has the new one).
   * Resolves once no I/O on the old map is under way (copy-on-write waits for it before the
   * write that swapped the map is answered: engine/cow.ts).
   */
  handOff(): Promise<void> {
    if (this.isStopped || this.isFenced) return Promise.resolve();
    if (sys.datapathFence(this.native)) {
      this.isFenced = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.fenceWaiters.push(resolve));
  }

  /**
   * The source's map changed: the thread takes the new one (see the header). Resolves once no
   * I/O of the thread uses the old one.
   */
  follow(source: DataPlaneSource): Promise<void> {
    if (this.isStopped || this.isFenced) return Promise.resolve();
    const map = source.datapathMap();
    if (map === null) return this.handOff();
    const sequence = ++this.remapSequence;
    try {
      sys.datapathRemap(this.native, map, sequence);
    } catch {
      return this.handOff();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => void this.handOff().then(settle), LIMITS.cowThreadSwapWaitMs);
      function settle(): void {
        clearTimeout(timer);
        resolve();
      }
      this.remapWaiters.push({ sequence, resolve: settle });
    });
  }

  /** The thread serves from the map of `sequence` (and so of every earlier one). */
  private releaseRemaps(sequence: number): void {
    const left = [];
    for (const waiter of this.remapWaiters) {
      if (waiter.sequence <= sequence) waiter.resolve();
      else left.push(waiter);
    }
    this.remapWaiters = left;
  }

  private releaseFence(): void {
    this.releaseRemaps(Number.MAX_SAFE_INTEGER); // a fenced thread does no I/O at all
    this.isFenced = true;
    const waiters = this.fenceWaiters;
    this.fenceWaiters = [];
    for (const waiter of waiters) waiter();
  }

  /**
   * Stops the thread: at once (`abort`: queued frames fail with ECANCELED, the socket is shut
   * down), or after the queued frames, turning into an abort once LIMITS.nbdFenceSenderWaitMs
   * pass without a byte sent (a client taking no replies must not hold the connection open; a
   * slow one keeps it). onStopped follows either way.
   */
  stop(abort: boolean): void {
    if (this.isStopped) return;
    if (abort) {
      this.clearStopTimer();
      sys.datapathStop(this.native, true);
      return;
    }
    if (this.isStopping) return;
    this.isStopping = true;
    sys.datapathStop(this.native, false);
    let sent = this.stats()[2];
    const check = (): void => {
      this.stopTimer = null;
      if (this.isStopped) return;
      const now = this.stats()[2]!;
      if (now === sent) {
        sys.datapathStop(this.native, true);
        return;
      }
      sent = now;
      this.stopTimer = setTimeout(check, LIMITS.nbdFenceSenderWaitMs);
    };
    this.stopTimer = setTimeout(check, LIMITS.nbdFenceSenderWaitMs);
  }

  private clearStopTimer(): void {
    if (this.stopTimer !== null) clearTimeout(this.stopTimer);
    this.stopTimer = null;
  }
}
