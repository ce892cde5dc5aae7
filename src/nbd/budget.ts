/**
 * nbd/budget: one memory budget for every connection of a server (ARCHITECTURE.md invariant 6:
 * no client grows the server's memory without bound).
 *
 * What counts: the bytes a connection makes the server hold on its behalf. A READ's length from
 * the moment it is accepted until its reply was written out (the reply buffer), a WRITE's length
 * from the moment its header is accepted until the write settled (the arena or Framer bytes its
 * payload lands in), and every other reply frame until it was written out. Per connection that
 * is inflightBytes + replyBytes + the write being received (connection.ts heldBytes).
 *
 * The rule, checked before a READ or WRITE is accepted (its cost is its length):
 * - a connection that would still hold at most `floorBytes` may always go on: a well-behaved
 *   client with small requests is never starved by others that hold the budget;
 * - otherwise the request may go on only while the total stays within `maxBytes` and nobody is
 *   waiting before it;
 * - else the connection parks that request, stops reading (the bytes stay in the kernel's socket
 *   buffer, not in ours) and waits in FIFO order: as bytes come back, parked requests resume
 *   oldest first, so a large request is not starved by a stream of small ones.
 * So connections that hold the most are the ones that stop. What is counted is what is really
 * allocated, so it can pass maxBytes by what requests already accepted grow to: a READ counts
 * its length while it runs and then its whole pooled reply buffer (a size class, up to twice
 * the length: replies.ts bufferPool) until written out. Reading stops as soon as the total is
 * past maxBytes, so it is at most about 2 × maxBytes + connections × floorBytes. What keeps a
 * parked connection from waiting for ever is the stall deadline in server.ts: a connection that
 * holds memory and whose client neither sends nor takes bytes for LIMITS.nbdStallTimeoutMs is
 * ended, and its bytes come back.
 *
 * The data-path threads (native/src/budget.c) count in the same total: their buffers grown
 * above their first sizes and the bytes they forwarded that JS has not taken. `sync` tells the
 * addon what JS holds and the limit, and returns what the threads hold; it runs when what JS
 * holds moved by SYNC_STEP_BYTES or fell to 0, on every change while requests wait, and then
 * also every LIMITS.nbdBudgetRetryMs (the threads give bytes back without telling JS). A thread
 * that cannot grow waits as a parked request does.
 */
import assert from 'node:assert';

/** JS tells the data-path threads what it holds when it moved by this much (see adjust()). */
const SYNC_STEP_BYTES = 256 * 1024;

/**
 * A full budget is reported (the `budget-wait` log line, log-events.ts) at most this often: a
 * budget under pressure parks requests many times a second, and one line in ten seconds says
 * it with the count since the last.
 */
const WAIT_REPORT_INTERVAL_MS = 10_000;

/** A parked request: resumes when it may take its cost now (it takes it), false: still waits. */
export type BudgetWaiter = () => boolean;

/** Reports what JS holds and the limit to the data-path threads; returns what they hold. */
export type BudgetSync = (jsHeldBytes: number, maxBytes: number) => number;

export class MemoryBudget {
  private held = 0;
  /** what the threads were last told JS holds (refresh) */
  private heldReported = 0;
  private threadsHeld = 0;
  private peak = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly waiters: BudgetWaiter[] = [];
  private isDraining = false;
  /** requests that had to park, over the server's life */
  parkedTotal = 0;
  private waitReportedAtMs = -Infinity;
  private waitReportedParked = 0;

  constructor(readonly maxBytes: number, readonly floorBytes: number,
    private readonly sync: BudgetSync = () => 0, private readonly retryMs = 20) {
    assert(Number.isSafeInteger(maxBytes) && maxBytes > 0);
    assert(Number.isSafeInteger(floorBytes) && floorBytes >= 0);
    this.refresh();
  }

  /** What JS holds and what the data-path threads hold, together. */
  get heldBytes(): number {
    return this.held + this.threadsHeld;
  }

  get threadsHeldBytes(): number {
    return this.threadsHeld;
  }

  /** Exchanges counts with the data-path threads (see the header). */
  refresh(): void {
    this.threadsHeld = this.sync(this.held, this.maxBytes);
    this.heldReported = this.held;
    this.notePeak();
  }

  private notePeak(): void {
    this.peak = Math.max(this.peak, this.held + this.threadsHeld);
  }

  get peakBytes(): number {
    return this.peak;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** May a connection that holds `ownBytes` take `costBytes` more now (see the header)? */
  canTake(ownBytes: number, costBytes: number): boolean {
    assert(ownBytes >= 0 && costBytes >= 0);
    if (this.waiters.length > 0) return ownBytes + costBytes <= this.floorBytes;
    return this.canResume(ownBytes, costBytes);
  }

  /**
   * The same for the waiter at the head of the queue, deciding from within drain() whether it
   * may go on: nobody waits before it.
   */
  canResume(ownBytes: number, costBytes: number): boolean {
    return ownBytes + costBytes <= this.floorBytes || this.heldBytes + costBytes <= this.maxBytes;
  }

  /** A connection's held bytes changed by `deltaBytes` (negative: given back). */
  adjust(deltaBytes: number): void {
    this.held += deltaBytes;
    assert(this.held >= 0, 'MemoryBudget: more bytes given back than taken');
    // the threads are told of every change past SYNC_STEP_BYTES (one addon call per request
    // would cost the small-request rows), and of every change while anyone waits
    if (Math.abs(this.held - this.heldReported) >= SYNC_STEP_BYTES || this.waiters.length > 0 ||
      this.held === 0) {
      this.refresh();
    } else {
      this.notePeak();
    }
    if (deltaBytes < 0 && this.waiters.length > 0) this.drain();
  }

  park(waiter: BudgetWaiter): void {
    this.parkedTotal += 1;
    this.waiters.push(waiter);
    if (this.retryTimer === null) {
      // the threads give bytes back without telling JS: look again while anyone waits
      this.retryTimer = setInterval(this.retry, this.retryMs);
      this.retryTimer.unref();
    }
  }

  /**
   * After a park: the requests parked since the last report when one is due now (at most once
   * per WAIT_REPORT_INTERVAL_MS), else null.
   */
  waitReportDue(nowMs: number): number | null {
    if (nowMs - this.waitReportedAtMs < WAIT_REPORT_INTERVAL_MS) return null;
    const parked = this.parkedTotal - this.waitReportedParked;
    this.waitReportedAtMs = nowMs;
    this.waitReportedParked = this.parkedTotal;
    return parked;
  }

  private readonly retry = (): void => {
    this.refresh();
    this.drain();
    if (this.waiters.length === 0 && this.retryTimer !== null) {
      clearInterval(this.retryTimer);
      this.retryTimer = null;
    }
  };

  /** A parked connection closed: it waits no more (its waiter is dropped). */
  unpark(waiter: BudgetWaiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
    if (index === 0) this.drain();
  }

  /** Resumes parked requests oldest first while the head may take its cost. */
  private drain(): void {
    if (this.isDraining) return;
    this.isDraining = true;
    try {
      while (this.waiters.length > 0) {
        const head = this.waiters[0]!;
        if (!head()) break;
        if (this.waiters[0] === head) this.waiters.shift();
      }
    } finally {
      this.isDraining = false;
    }
  }
}
