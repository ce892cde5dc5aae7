/**
 * nbd/request-stats: what the JS path counts for every request it answers, for `xvd status`
 * and `serve --metrics` (src/serve/status-document.ts builds both from these counts): requests,
 * bytes and service time by command, errors by NBD errno. The in-flight gauge is the
 * connection's own (Connection.inflight); what the data-path thread serves itself it counts
 * itself (sys.datapathStats, sys.datapathLatency) and addThread() adds it in when stats are read.
 *
 * Cost on the data path: a connection owns one RequestCounts, allocated with it. Per request,
 * request-intake.ts takes performance.now() once when it dispatches the request (its frame is
 * whole, as the thread starts its clock once a request is framed) and settled() takes it once
 * more when the reply was handed to the output; in between nothing is allocated, and settled()
 * is a handful of increments into typed arrays indexed by the command and the errno.
 *
 * Latency buckets: the thread's layout (sys.LATENCY_BUCKETS, native DP_LAT_BUCKETS), so the two
 * add up: log2 microseconds, bucket 0 is [0, 2) µs, bucket i [2^i, 2^(i+1)) µs, the last one
 * open-ended. Percentiles are read from the buckets (latencyQuantileUs), never kept per request.
 */
import assert from 'node:assert';
import { LATENCY_BUCKETS } from '../sys/index';
import { NBD_CMD, NBD_E } from './constants';

/** Slots by NBD_CMD value, and one (COMMAND_OTHER) for a type that names no command. */
export const COMMAND_SLOTS = 9;
export const COMMAND_OTHER = 8;
/** Errors are kept by NBD errno value; every NBD_E value is below this. */
export const ERRNO_SLOTS = 128;

for (const value of Object.values(NBD_CMD)) assert(value < COMMAND_OTHER);
for (const value of Object.values(NBD_E)) assert(value < ERRNO_SLOTS);

/** The bucket of a service time of `micros` µs (see the header). */
export function latencyBucketOf(micros: number): number {
  const whole = micros >= 1 ? Math.min(micros, 0x7fffffff) | 0 : 0;
  const bucket = 31 - Math.clz32(whole); // floor(log2), -1 for 0
  if (bucket < 1) return 0;
  return bucket < LATENCY_BUCKETS ? bucket : LATENCY_BUCKETS - 1;
}

/** The upper end of bucket `index` in µs (Infinity for the last, open-ended one). */
export function latencyBucketEndUs(index: number): number {
  return index >= LATENCY_BUCKETS - 1 ? Infinity : 2 ** (index + 1);
}

/**
 * The q-quantile (0 < q <= 1) of the times in `buckets` (LATENCY_BUCKETS counts), as the upper
 * end in µs of the bucket that holds it (the last bucket answers its lower end, 2^23 µs); null
 * when there are none.
 */
export function latencyQuantileUs(buckets: ArrayLike<number>, q: number): number | null {
  assert(q > 0 && q <= 1);
  assert.equal(buckets.length, LATENCY_BUCKETS);
  let total = 0;
  for (let index = 0; index < LATENCY_BUCKETS; index++) total += buckets[index]!;
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let index = 0; index < LATENCY_BUCKETS; index++) {
    seen += buckets[index]!;
    if (seen >= rank) {
      return index === LATENCY_BUCKETS - 1 ? 2 ** index : latencyBucketEndUs(index);
    }
  }
  return 2 ** (LATENCY_BUCKETS - 1);
}

function slotOf(type: number): number {
  return type < COMMAND_OTHER ? type : COMMAND_OTHER;
}

/** One connection's counts, or a sum of several (add). */
export class RequestCounts {
  /** requests answered, by command slot */
  readonly requests = new Float64Array(COMMAND_SLOTS);
  /** the lengths of those that succeeded: bytes read, written, trimmed, zeroed, cached or
   * described, by command slot */
  readonly bytes = new Float64Array(COMMAND_SLOTS);
  /** refused or failed requests, by NBD errno value */
  readonly errors = new Float64Array(ERRNO_SLOTS);
  /** service times of the requests the JS path executed: LATENCY_BUCKETS per command slot */
  readonly latency = new Float64Array(COMMAND_SLOTS * LATENCY_BUCKETS);
  readonly latencySumSeconds = new Float64Array(COMMAND_SLOTS);
  /** what data-path threads served themselves (plain READs and WRITEs; also in requests and
   * bytes): their count and service times, LATENCY_BUCKETS (no sum: the threads keep none) */
  threadRequests = 0;
  readonly threadLatency = new Float64Array(LATENCY_BUCKETS);

  /** A request the JS path executed, dispatched at `startMs` (performance.now()). */
  settled(type: number, length: number, errno: number, startMs: number): void {
    const slot = slotOf(type);
    const elapsedMs = performance.now() - startMs;
    this.requests[slot]! += 1;
    if (errno === 0) this.bytes[slot]! += length;
    else this.errors[errno & (ERRNO_SLOTS - 1)]! += 1;
    this.latency[slot * LATENCY_BUCKETS + latencyBucketOf(elapsedMs * 1000)]! += 1;
    this.latencySumSeconds[slot]! += elapsedMs / 1000;
  }

  /** A request answered with an error without being executed (validation, a fence). */
  refused(type: number, errno: number): void {
    this.requests[slotOf(type)]! += 1;
    this.errors[errno & (ERRNO_SLOTS - 1)]! += 1;
  }

  /**
   * Adds what a data-path thread served: `stats` as sys.datapathStats gives it (READs, their
   * bytes, WRITEs, their bytes at 7..10; an addon that counts none of them gives 7 values and
   * adds only its request count), `latency` as sys.datapathLatency.
   */
  addThread(stats: Float64Array, latency: Float64Array | null): void {
    this.threadRequests += stats[0] ?? 0;
    if (stats.length >= 11) {
      this.requests[NBD_CMD.READ]! += stats[7]!;
      this.bytes[NBD_CMD.READ]! += stats[8]!;
      this.requests[NBD_CMD.WRITE]! += stats[9]!;
      this.bytes[NBD_CMD.WRITE]! += stats[10]!;
    }
    if (latency === null || latency.length !== LATENCY_BUCKETS) return;
    for (let index = 0; index < LATENCY_BUCKETS; index++) {
      this.threadLatency[index]! += latency[index]!;
    }
  }

  add(other: RequestCounts): void {
    addInto(this.requests, other.requests);
    addInto(this.bytes, other.bytes);
    addInto(this.errors, other.errors);
    addInto(this.latency, other.latency);
    addInto(this.latencySumSeconds, other.latencySumSeconds);
    this.threadRequests += other.threadRequests;
    addInto(this.threadLatency, other.threadLatency);
  }

  /** Every service time, the JS path's (all commands) and the threads', in one set of buckets. */
  allLatency(): Float64Array {
    const all = Float64Array.from(this.threadLatency);
    for (let slot = 0; slot < COMMAND_SLOTS; slot++) {
      for (let index = 0; index < LATENCY_BUCKETS; index++) {
        all[index]! += this.latency[slot * LATENCY_BUCKETS + index]!;
      }
    }
    return all;
  }

  /** One command slot's JS-path buckets. */
  latencyOf(slot: number): Float64Array {
    return this.latency.subarray(slot * LATENCY_BUCKETS, (slot + 1) * LATENCY_BUCKETS);
  }
}

function addInto(target: Float64Array, source: Float64Array): void {
  assert.equal(target.length, source.length);
  for (let index = 0; index < target.length; index++) target[index]! += source[index]!;
}
