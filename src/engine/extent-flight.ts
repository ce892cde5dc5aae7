/**
 * engine/extent-flight: the requests an ExtentExport has in flight, counted in total (close()
 * waits for none) and per ExtentState (copy-on-write waits until none runs on a map it replaced:
 * engine/cow.ts).
 *
 * Contract: enter(state) when a request starts on `state`, leave(state) once when it settled;
 * retire(state) when the export stops starting requests on `state` (a map swap). drained()
 * resolves when nothing is in flight; drainedBefore() when every request on a state retired
 * before the call has settled (requests on the current state do not count). Nothing here
 * allocates per request.
 */
import assert from 'node:assert';
import type { ExtentState } from './extent-state';

interface Waiter {
  readonly states: Set<ExtentState>;
  readonly resolve: () => void;
}

export class FlightTracker {
  /** requests started and not yet settled */
  count = 0;
  private onIdle: (() => void) | null = null;
  /** retired states that still have requests in flight */
  private readonly retired = new Set<ExtentState>();
  private waiters: Waiter[] = [];

  enter(state: ExtentState): void {
    state.flight.count++;
    this.count++;
  }

  leave(state: ExtentState): void {
    assert(this.count > 0, 'a request leaves once, after it entered');
    assert(state.flight.count > 0, 'a request leaves the state it entered');
    this.count--;
    state.flight.count--;
    if (state.flight.count === 0 && this.retired.delete(state)) this.settleWaiters(state);
    if (this.count === 0 && this.onIdle !== null) {
      const idle = this.onIdle;
      this.onIdle = null;
      idle();
    }
  }

  retire(state: ExtentState): void {
    if (state.flight.count > 0) this.retired.add(state);
  }

  drained(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const before = this.onIdle;
      this.onIdle = () => {
        before?.();
        resolve();
      };
    });
  }

  drainedBefore(): Promise<void> {
    if (this.retired.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push({ states: new Set(this.retired), resolve });
    });
  }

  private settleWaiters(state: ExtentState): void {
    const left: Waiter[] = [];
    for (const waiter of this.waiters) {
      waiter.states.delete(state);
      if (waiter.states.size === 0) waiter.resolve();
      else left.push(waiter);
    }
    this.waiters = left;
  }
}
