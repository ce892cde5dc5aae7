/**
 * nbd/server-stats: what NbdServer.stats reports (connections, requests, bytes, the data-path
 * threads' share, the memory budget, faults, stalls and fences), how one connection's counts are
 * added to the totals (at close, and for every open connection when stats are read), and what
 * NbdServer.exportStats reports for `xvd status` and the metrics endpoint: per export, its open
 * connections (peer, domain, TLS, executor) and its request counts (request-stats.ts), those of
 * the connections that closed kept by ExportBook under the export's name.
 */
import type { Connection } from './connection';
import type { ConnectionStats } from './connection-options';
import type { Domain } from './provider';
import { RequestCounts } from './request-stats';
import { peerOf } from '../log-events';

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
  /** of `threadRequests`, the READs their reader threads read */
  readerRequests: number;
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
  /** exports fenced (fenceExport calls: a VD removed, deleted or expired while served) */
  fences: number;
}

type Totals = Pick<NbdServerStats, 'requests' | 'requestErrors' | 'bytesRead' | 'bytesWritten' |
  'threadRequests' | 'readerRequests' | 'busyPollHits' | 'busyPollMisses' |
  'connectionFaults'>;

export function addStats(totals: Totals, stats: ConnectionStats): void {
  totals.requests += stats.requests;
  totals.requestErrors += stats.errors;
  totals.bytesRead += stats.bytesRead;
  totals.bytesWritten += stats.bytesWritten;
  totals.threadRequests += stats.threadRequests;
  totals.readerRequests += stats.readerRequests;
  totals.busyPollHits += stats.busyPollHits;
  totals.busyPollMisses += stats.busyPollMisses;
  totals.connectionFaults += stats.faults;
}

/** One open connection as `xvd status` shows it. */
export interface ConnectionInfo {
  id: number;
  /** `HOST:PORT` over TCP, `unix` over a Unix socket, `stream` over a stream pair (stdio) */
  peer: string;
  domain: Domain;
  isTls: boolean;
  /** who serves its plain READs (and WRITEs) now: the data-path thread, the JS path with a
   * sender thread for large READs, or the JS path (dataplane/routes.ts) */
  executor: 'datapath' | 'sender' | 'js';
  /** routesOf's reason for that choice */
  reason: string;
  inflight: number;
  requests: number;
  bytesRead: number;
  bytesWritten: number;
}

/** One export: its open connections and the counts of every connection it ever had. */
export interface ExportStats {
  name: string;
  connections: ConnectionInfo[];
  /** requests the JS path is executing now for its connections */
  inflight: number;
  counts: RequestCounts;
}

type Executor = ConnectionInfo['executor'];

function executorOf(c: Connection): { executor: Executor; reason: string } {
  const routes = c.routes;
  if (routes === null) return { executor: 'js', reason: 'transmission not started' };
  if (c.datapath !== null && !c.datapath.isStopped) {
    return { executor: 'datapath', reason: routes.reason };
  }
  if (routes.read === 'sender') return { executor: 'sender', reason: routes.reason };
  const reason = routes.read === 'datapath' ? 'the data-path thread did not start or stopped'
    : routes.reason;
  return { executor: 'js', reason };
}

export function connectionInfoOf(c: Connection): ConnectionInfo {
  const stats = c.stats;
  return { id: c.id, peer: peerOf(c.socket), domain: c.domain, isTls: c.isTls, ...executorOf(c),
    inflight: c.inflight, requests: stats.requests, bytesRead: stats.bytesRead,
    bytesWritten: stats.bytesWritten };
}

/** `c`'s request counts with its data-path thread's, in a new RequestCounts. */
export function requestCountsOf(c: Connection): RequestCounts {
  const counts = new RequestCounts();
  counts.add(c.requestCounts);
  const datapath = c.datapath;
  if (datapath !== null) counts.addThread(datapath.stats(), datapath.latency());
  return counts;
}

/** The counts of closed connections: totals, and per export (kept while the server runs). */
export class ExportBook {
  readonly closed: Totals = { requests: 0, requestErrors: 0, bytesRead: 0, bytesWritten: 0,
    threadRequests: 0, readerRequests: 0, busyPollHits: 0, busyPollMisses: 0, connectionFaults: 0 };
  private readonly closedByExport = new Map<string, RequestCounts>();
  /** fenceExport calls so far */
  fences = 0;

  /** A connection left the registry: its counts join the totals and its export's. */
  addClosed(c: Connection): void {
    addStats(this.closed, c.stats);
    const name = c.exportName;
    if (name === null) return;
    const counts = this.closedByExport.get(name) ?? new RequestCounts();
    counts.add(requestCountsOf(c));
    this.closedByExport.set(name, counts);
  }

  /** Every export that has or had a connection, in name order, with `open`'s counts added. */
  exports(open: Iterable<Connection>): ExportStats[] {
    const byName = new Map<string, ExportStats>();
    const entryOf = (name: string): ExportStats => {
      let entry = byName.get(name);
      if (entry === undefined) {
        entry = { name, connections: [], inflight: 0, counts: new RequestCounts() };
        byName.set(name, entry);
      }
      return entry;
    };
    for (const [name, counts] of this.closedByExport) entryOf(name).counts.add(counts);
    for (const c of open) {
      const name = c.exportName;
      if (name === null) continue;
      const entry = entryOf(name);
      entry.connections.push(connectionInfoOf(c));
      entry.inflight += c.inflight;
      entry.counts.add(requestCountsOf(c));
    }
    return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}
