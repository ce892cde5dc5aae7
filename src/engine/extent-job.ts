/**
 * engine/extent-job: one read or write request of an ExtentExport in flight.
 *
 * A Job counts its pieces (`pending` starts at 1 for the issuing call itself, so the request
 * cannot settle while pieces are still being issued), keeps the first error, and settles once,
 * through its finisher (extent-read finishRead, extent-write finishWrite), after every piece has
 * settled: nothing writes into the caller's buffer after the promise settles. Settling tells the
 * owner (the export's in-flight count) through leave().
 *
 * One Job per request and no closure per piece: pieces are issued by ExtentMap.visit with a
 * module-level visitor and the Job as its context.
 */
import { IoError } from '../errors';
import type { PooledBacking } from '../backing/pool';
import type { PieceVisitor } from './extent-map';
import type { ExtentState } from './extent-state';

/** What a Job reports to when it settles: the export's in-flight count. */
export interface JobOwner {
  /** one request on `state` settled */
  leave(state: ExtentState): void;
}

/** The pooled backings a write touched: none, one, or several (no array for the usual one). */
export type Touched = PooledBacking | PooledBacking[] | null;

export class Job {
  pending = 1;
  error: Error | null = null;
  touched: Touched = null;
  /** a FUA write: `resolve` syncs first and leaves the owner itself */
  isFua = false;
  constructor(
    readonly owner: JobOwner,
    readonly state: ExtentState,
    readonly buffer: Buffer,
    readonly bufferBase: number,
    readonly length: number,
    readonly resolve: () => void,
    readonly reject: (error: Error) => void,
  ) {}

  touch(entry: PooledBacking): void {
    if (this.touched === null) this.touched = entry;
    else if (this.touched === entry) return;
    else if (Array.isArray(this.touched)) {
      if (!this.touched.includes(entry)) this.touched.push(entry);
    } else this.touched = [this.touched, entry];
  }
}

/** The IoError a failed piece reports: an IoError as is, a system error wrapped. */
export function pieceError(cause: unknown, syscall: string): IoError {
  return cause instanceof IoError ? cause : IoError.fromSystem(cause, syscall);
}

/** Issues every piece; a throw (a broken map: a bug) still settles the job once. */
export function visitSafely(
  job: Job,
  offset: number,
  length: number,
  visitor: PieceVisitor<Job>,
): void {
  try {
    job.state.map.visit(offset, length, visitor, job);
  } catch (error) {
    job.error ??= error instanceof Error ? error : new Error(String(error));
  }
}

/** Waits for every run; rejects with the first failure (as an IoError) once all settled. */
export async function settleAll(runs: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(runs);
  for (const result of results) {
    if (result.status === 'rejected') throw pieceError(result.reason, 'io');
  }
}
