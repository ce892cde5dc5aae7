/**
 * serve/catalog-writer-thread: CatalogWriter over a worker thread (node:worker_threads) that has
 * its own connection to the catalog file, so that the fsync of each commit, and any wait for the
 * write lock a CLI process holds, happen off the event loop that serves NBD connections.
 *
 * Requests carry an id and are answered in the order they were sent (the worker handles one
 * message at a time): a release followed by an acquire of the same VD commits in that order.
 * Errors come back as their own class (catalog-writer.ts). The worker is unref'd while nothing
 * is pending, so it never keeps the process alive, and ref'd while a request waits, so that an
 * awaited release (at stop) is not cut short by the process exiting under it.
 *
 * Where the worker's code is: the file next to this one, `catalog-writer-worker`, with this
 * module's own extension. Built, both are under dist/serve/ and the worker is plain JS. Under
 * the test runner this module is src/serve/catalog-writer-thread.ts, loaded through tap's
 * TypeScript loader (`--import` hooks in process.execArgv); a Worker inherits execArgv by
 * default, so the worker loads src/serve/catalog-writer-worker.ts through the same loader, and
 * tests that import src/serve run the same code the CLI runs, without a build or a .js shim.
 *
 * Commit times: every answered write is timed from the request sent to its answer (the commit,
 * and any wait for the lock or behind earlier requests), by operation, in the log2-µs buckets
 * of nbd/request-stats.ts (commitTimes, read by `xvd status` and the metrics endpoint).
 *
 * If the worker dies (an uncaught error, or terminated), every pending request and every later
 * one rejects with ERR_SERVE_CATALOG_WRITER and the death is logged once. The server carries on:
 * open exports keep serving (their leases stay in the catalog while this process lives, and
 * unregistering at stop, on the main thread's connection, deletes them), new opens of VD exports
 * fail cleanly, and heartbeats fail (logged). It is not restarted: a worker that dies is a bug.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { CowExtents, CowRemap, Lease } from '../catalog/index';
import { isCephCatalog } from '../catalog/location';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import type { Logger } from '../log';
import { LATENCY_BUCKETS } from '../sys/index';
import { latencyBucketOf } from '../nbd/index';
import {
  WRITER_OPEN_ID, errorOfWire, type CatalogWriter, type WriterData, type WriterReply,
  type WriterRequest,
} from './catalog-writer';

/** Each member of a union without its id (Omit on the union itself would merge them). */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
/** A request as the caller gives it; request() numbers it. */
type Request = WithoutId<WriterRequest>;

/** A successful answer. */
type OkReply = Extract<WriterReply, { isOk: true }>;

interface Pending {
  resolve(reply: OkReply): void;
  reject(error: Error): void;
  /** the write timed (commitTimes), and when it was sent (performance.now()) */
  op: TimedOp | null;
  startMs: number;
}

/** The writes whose commits are timed. */
export type TimedOp = 'heartbeat' | 'acquireLease' | 'releaseLease' | 'reserveCowExtents' |
  'commitCowRemaps';

/** One operation's commit times: how many, their sum, and LATENCY_BUCKETS log2-µs buckets. */
export interface CommitTimes {
  count: number;
  sumSeconds: number;
  buckets: Float64Array;
}

/** The worker's file: a sibling of this module, with this module's extension (.js or .ts). */
export function catalogWriterWorkerPath(): string {
  return path.join(__dirname, `catalog-writer-worker${path.extname(__filename)}`);
}

export class CatalogWriterThread implements CatalogWriter {
  /** the thread (tests terminate it to see the server survive its death) */
  readonly worker: Worker;
  private readonly log: Logger;
  private readonly pending = new Map<number, Pending>();
  private readonly exited: Promise<void>;
  private idNext = WRITER_OPEN_ID + 1;
  /** set once the worker is gone or closing: every later request rejects with it */
  private failure: XvdError | null = null;
  private isClosing = false;
  private errorLast: Error | null = null;
  /** answered writes' times by operation (see the header) */
  readonly commitTimes = new Map<TimedOp, CommitTimes>();

  private constructor(catalogPath: string, log: Logger) {
    this.log = log;
    const workerData: WriterData = { catalogPath: isCephCatalog(catalogPath) ? catalogPath
      : path.resolve(catalogPath) };
    this.worker = new Worker(catalogWriterWorkerPath(), { workerData });
    this.worker.on('message', (reply: WriterReply) => this.onReply(reply));
    this.worker.on('error', (error) => (this.errorLast = error));
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.onExit(code);
        resolve();
      });
    });
  }

  /** Starts the thread; resolves once its catalog connection is open (or rejects why not). */
  static async start(catalogPath: string, log: Logger): Promise<CatalogWriterThread> {
    const thread = new CatalogWriterThread(catalogPath, log);
    try {
      await thread.send(WRITER_OPEN_ID);
    } catch (error) {
      await thread.worker.terminate();
      throw error;
    }
    return thread;
  }

  async heartbeat(serverId: number): Promise<void> {
    await this.request({ op: 'heartbeat', serverId });
  }

  async acquireLease(serverId: number, vdId: number, generation?: number): Promise<Lease> {
    const lease = await this.request(generation === undefined ? { op: 'acquireLease', serverId,
      vdId } : { op: 'acquireLease', serverId, vdId, generation });
    if (lease === null) throw new Error('catalog writer: acquireLease answered without a lease');
    return lease;
  }

  async releaseLease(serverId: number, vdId: number): Promise<void> {
    await this.request({ op: 'releaseLease', serverId, vdId });
  }

  async takeOverServer(serverId: number, heartbeatAtMs: number): Promise<boolean> {
    return (await this.requestReply({ op: 'takeOverServer', serverId, heartbeatAtMs }))
      .isTaken === true;
  }

  async reserveCowExtents(serverId: number, vdId: number, extentSize: number, count: number):
  Promise<CowExtents[]> {
    const reply = await this.requestReply({ op: 'reserveCowExtents', serverId, vdId, extentSize,
      count });
    if (reply.runs === undefined) throw new Error('catalog writer: reserve answered no runs');
    return reply.runs;
  }

  async commitCowRemaps(serverId: number, vdId: number, remaps: readonly CowRemap[]):
  Promise<void> {
    await this.request({ op: 'commitCowRemaps', serverId, vdId, remaps });
  }

  /**
   * Closes the worker's connection after every request already sent, and ends the thread
   * (terminated if it has not ended within LIMITS.serveWriterCloseMs). Later requests reject.
   */
  async close(): Promise<void> {
    if (this.isClosing) return this.exited;
    const closed = this.failure === null ? this.request({ op: 'close' }) : Promise.resolve(null);
    this.isClosing = true;
    this.failure ??= new XvdError('ERR_SERVE_CATALOG_WRITER', 'catalog writer: closed');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LIMITS.serveWriterCloseMs);
    });
    try {
      await Promise.race([closed.then(() => this.exited), late]);
    } catch (error) {
      this.log.warn({ err: error }, 'catalog writer: close failed');
    } finally {
      clearTimeout(timer);
    }
    await this.worker.terminate();
    await this.exited;
  }

  /** Ends the thread without a word to its catalog (whose client may be blocklisted). */
  async abandon(): Promise<void> {
    this.isClosing = true;
    this.failure ??= new XvdError('ERR_SERVE_CATALOG_WRITER', 'catalog writer: abandoned');
    await this.worker.terminate();
    await this.exited;
  }

  private async request(request: Request): Promise<Lease | null> {
    return (await this.requestReply(request)).lease;
  }

  private requestReply(request: Request): Promise<OkReply> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const id = this.idNext++;
    const isTimed = request.op !== 'close' && request.op !== 'takeOverServer';
    const answer = this.send(id, isTimed ? request.op : null);
    this.worker.postMessage({ ...request, id });
    return answer;
  }

  /** A pending answer for `id`; the worker stays ref'd while any is pending. */
  private send(id: number, op: TimedOp | null = null): Promise<OkReply> {
    if (this.pending.size === 0) this.worker.ref();
    const startMs = performance.now();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, op, startMs });
    });
  }

  private timed(op: TimedOp, startMs: number): void {
    let times = this.commitTimes.get(op);
    if (times === undefined) {
      times = { count: 0, sumSeconds: 0, buckets: new Float64Array(LATENCY_BUCKETS) };
      this.commitTimes.set(op, times);
    }
    const elapsedMs = performance.now() - startMs;
    times.count += 1;
    times.sumSeconds += elapsedMs / 1000;
    times.buckets[latencyBucketOf(elapsedMs * 1000)]! += 1;
  }

  private settle(id: number): Pending | undefined {
    const pending = this.pending.get(id);
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
    return pending;
  }

  private onReply(reply: WriterReply): void {
    const pending = this.settle(reply.id);
    if (pending === undefined) {
      this.log.error({ id: reply.id }, 'catalog writer: an answer to no pending request');
      return;
    }
    if (pending.op !== null) this.timed(pending.op, pending.startMs);
    if (reply.isOk) pending.resolve(reply);
    else pending.reject(errorOfWire(reply.error));
  }

  private onExit(code: number): void {
    const isExpected = this.isClosing;
    const detail = this.errorLast === null ? '' : `: ${this.errorLast.message}`;
    const failure = new XvdError('ERR_SERVE_CATALOG_WRITER',
      `catalog writer: the worker thread exited (code ${code})${detail}`,
      this.errorLast === null ? undefined : { cause: this.errorLast });
    this.failure ??= failure;
    if (!isExpected) {
      this.log.error({ err: failure, pending: this.pending.size }, 'catalog writer thread died: '
        + 'opens of VD exports fail and leases are kept until the server stops');
    }
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(this.failure);
  }
}
