/**
 * nbd/server-stats: what NbdServer.stats reports (connections, requests, bytes, the data-path
 * threads' share, the memory budget, faults and stalls), and how one connection's counts are
 * added to the totals (at close, and for every open connection when stats are read).
 */
import type { ConnectionStats } from './connection-options';

export interface NbdServerStats {
  connectionsAccepted: number;
  connectionsRefused: number;
  connectionsOpen: number;
  /** accepted sockets read through arenas (the rest through stream chunks) */
  connectionsArena: number;
  requests: number;
  requestErrors: number;
  bytesRead: number;
  bytesWritten: number;
  /** of `requests`, those data-path threads served themselves (plain READs and WRITEs) */
  threadRequests: number;
  /** data-path threads' busy-polls that found a request, and those that found none */
  busyPollHits: number;
  busyPollMisses: number;
  /** internal errors contained by ending one connection (should stay 0: each is a bug) */
  connectionFaults: number;
  /** bytes connections hold in the memory budget now (data-path threads included), of those
   * the threads', and the most held at once */
  budgetHeldBytes: number;
  budgetThreadsBytes: number;
  budgetPeakBytes: number;
  /** requests waiting for the budget now, and those that ever had to wait */
  budgetWaiting: number;
  budgetParkedTotal: number;
  /** connections ended for holding memory while their client took and sent nothing */
  connectionsStalled: number;
}

type Totals = Pick<NbdServerStats, 'requests' | 'requestErrors' | 'bytesRead' | 'bytesWritten' |
  'threadRequests' | 'busyPollHits' | 'busyPollMisses' | 'connectionFaults'>;

export function addStats(totals: Totals, stats: ConnectionStats): void {
  totals.requests += stats.requests;
  totals.requestErrors += stats.errors;
  totals.bytesRead += stats.bytesRead;
  totals.bytesWritten += stats.bytesWritten;
  totals.threadRequests += stats.threadRequests;
  totals.busyPollHits += stats.busyPollHits;
  totals.busyPollMisses += stats.busyPollMisses;
  totals.connectionFaults += stats.faults;
}
