/**
 * serve/status-document: what a running server says about itself, as one JSON document, built
 * when it is asked (the control socket, control.ts, for `xvd status`; the metrics endpoint,
 * metrics.ts, reads the same document at each scrape: one source of truth). Nothing here runs
 * per request: it reads the counts nbd keeps (NbdServer.stats, exportStats(): request-stats.ts)
 * and the catalog writer's commit times, and derives the percentiles from their buckets.
 *
 * The shape (`format` 1; times in µs are bucket ends, see LatencySummary):
 * - server: id in the catalog, pid, host, version, startedAt (ISO 8601), uptimeSeconds,
 *   listeners, tls mode, controlPath, metrics (HOST:PORT or null);
 * - connections: open, accepted, refused, stalled, faults; budget: the memory budget's bytes
 *   held (heldBytes, of them threadsBytes), peakBytes, maxBytes, requests waiting, parkedTotal;
 *   leases (VDs leased now), fences (exports fenced so far), catalogCommits by write;
 * - exports[]: name, inflight, connections[] (id, peer, domain, tls, executor, reason, inflight,
 *   requests, bytesRead, bytesWritten), commands (READ … BLOCK_STATUS: requests, bytes, and the
 *   JS path's latency), errors (by errno name, only those seen), datapath (what data-path
 *   threads served themselves: requests and latency, no sum), latency (every request of the
 *   export, both executors).
 */
import os from 'node:os';
import { version } from '../version';
import { LATENCY_BUCKETS } from '../sys/index';
import { NBD_CMD, NBD_E, nameOf } from '../nbd/constants';
import {
  COMMAND_OTHER, latencyQuantileUs, type ConnectionInfo, type ExportStats, type NbdServer,
  type RequestCounts,
} from '../nbd/index';
import type { CatalogProvider } from './catalog-provider';
import { STATUS_FORMAT } from './control';
import type { CommitTimes, TimedOp } from './catalog-writer-thread';

export { STATUS_FORMAT };

/**
 * A set of service times: their count, sum (null when unknown: the threads keep none), the
 * LATENCY_BUCKETS log2-µs buckets, and read from them the p50, p90 and p99 and the highest
 * bucket used, each as the upper end in µs of its bucket (2^23 for the last, open-ended one);
 * null when there are none.
 */
export interface LatencySummary {
  count: number;
  sumSeconds: number | null;
  p50Us: number | null;
  p90Us: number | null;
  p99Us: number | null;
  maxUs: number | null;
  buckets: number[];
}

export interface CommandDocument {
  requests: number;
  bytes: number;
  /** of the requests the JS path executed (data-path threads time theirs in `datapath`) */
  latency: LatencySummary;
}

export type ConnectionDocument = Omit<ConnectionInfo, 'isTls'> & { tls: boolean };

export interface ExportDocument {
  name: string;
  inflight: number;
  connections: ConnectionDocument[];
  /** by NBD_CMD name (OTHER: request types that name no command, all refused) */
  commands: Record<string, CommandDocument>;
  /** refused or failed requests by errno name (EIO, ESHUTDOWN, …), those seen */
  errors: Record<string, number>;
  datapath: { requests: number; latency: LatencySummary };
  latency: LatencySummary;
}

export interface StatusDocument {
  format: typeof STATUS_FORMAT;
  server: {
    id: number | null;
    pid: number;
    host: string;
    version: string;
    startedAt: string;
    uptimeSeconds: number;
    listeners: string[];
    tls: string;
    controlPath: string | null;
    metrics: string | null;
  };
  connections: { open: number; accepted: number; refused: number; stalled: number;
    faults: number };
  budget: { heldBytes: number; threadsBytes: number; peakBytes: number; maxBytes: number;
    waiting: number; parkedTotal: number };
  leases: number;
  fences: number;
  catalogCommits: Record<string, LatencySummary>;
  exports: ExportDocument[];
}

/** What the document is built from (serve/index.ts). */
export interface StatusSources {
  server: NbdServer;
  provider: CatalogProvider;
  commitTimes: ReadonlyMap<TimedOp, CommitTimes>;
  listeners: string[];
  tls: string;
  controlPath: string | null;
  metrics: string | null;
  startedAtMs: number;
}

export function latencySummaryOf(buckets: ArrayLike<number>, sumSeconds: number | null,
): LatencySummary {
  const list = Array.from(buckets);
  let count = 0;
  let top = -1;
  list.forEach((value, index) => {
    count += value;
    if (value > 0) top = index;
  });
  const maxUs = top < 0 ? null : 2 ** (top === LATENCY_BUCKETS - 1 ? top : top + 1);
  return { count, sumSeconds, p50Us: latencyQuantileUs(list, 0.5),
    p90Us: latencyQuantileUs(list, 0.9), p99Us: latencyQuantileUs(list, 0.99), maxUs,
    buckets: list };
}

function commandsOf(counts: RequestCounts): Record<string, CommandDocument> {
  const commands: Record<string, CommandDocument> = {};
  const slots = Object.values(NBD_CMD).filter((slot) => slot !== NBD_CMD.DISC);
  for (const slot of [...slots, COMMAND_OTHER]) {
    const requests = counts.requests[slot]!;
    if (slot === COMMAND_OTHER && requests === 0) continue;
    const name = slot === COMMAND_OTHER ? 'OTHER' : nameOf(NBD_CMD, slot);
    commands[name] = { requests, bytes: counts.bytes[slot]!,
      latency: latencySummaryOf(counts.latencyOf(slot), counts.latencySumSeconds[slot]!) };
  }
  return commands;
}

function errorsOf(counts: RequestCounts): Record<string, number> {
  const errors: Record<string, number> = {};
  counts.errors.forEach((value, errno) => {
    if (value > 0) errors[nameOf(NBD_E, errno)] = value;
  });
  return errors;
}

export function exportDocumentOf(stats: ExportStats): ExportDocument {
  const counts = stats.counts;
  let jsSumSeconds = 0;
  for (const value of counts.latencySumSeconds) jsSumSeconds += value;
  return {
    name: stats.name,
    inflight: stats.inflight,
    connections: stats.connections.map(({ isTls, ...rest }) => ({ ...rest, tls: isTls })),
    commands: commandsOf(counts),
    errors: errorsOf(counts),
    datapath: { requests: counts.threadRequests,
      latency: latencySummaryOf(counts.threadLatency, null) },
    latency: latencySummaryOf(counts.allLatency(),
      counts.threadRequests > 0 ? null : jsSumSeconds),
  };
}

/** The document, now. */
export function statusDocumentOf(sources: StatusSources): StatusDocument {
  const { server, provider } = sources;
  const stats = server.stats;
  const catalogCommits: Record<string, LatencySummary> = {};
  for (const [op, times] of sources.commitTimes) {
    catalogCommits[op] = latencySummaryOf(times.buckets, times.sumSeconds);
  }
  return {
    format: STATUS_FORMAT,
    server: { id: provider.registeredId, pid: process.pid, host: os.hostname(),
      version: version(), startedAt: new Date(sources.startedAtMs).toISOString(),
      uptimeSeconds: Math.round((Date.now() - sources.startedAtMs) / 100) / 10,
      listeners: sources.listeners, tls: sources.tls, controlPath: sources.controlPath,
      metrics: sources.metrics },
    connections: { open: stats.connectionsOpen, accepted: stats.connectionsAccepted,
      refused: stats.connectionsRefused, stalled: stats.connectionsStalled,
      faults: stats.connectionFaults },
    budget: { heldBytes: stats.budgetHeldBytes, threadsBytes: stats.budgetThreadsBytes,
      peakBytes: stats.budgetPeakBytes, maxBytes: server.limits.budgetBytesMax,
      waiting: stats.budgetWaiting, parkedTotal: stats.budgetParkedTotal },
    leases: provider.leasedVds,
    fences: stats.fences,
    catalogCommits,
    exports: server.exportStats().map(exportDocumentOf),
  };
}
