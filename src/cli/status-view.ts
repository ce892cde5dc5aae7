/**
 * status-view: how `xvd status` shows servers to people (pure: documents in, lines out). One
 * StatusReport is what every running server of the catalog answered (src/serve/
 * status-document.ts) with notes about those that did not; `--json` prints it as it is.
 *
 * - reportLines: the snapshot. Per server, a heading (id, pid, host, version, uptime, TLS,
 *   listeners), its totals (connections, memory budget, leases, fences, catalog commits), then
 *   per export a table of commands (requests, bytes, p50 and p99 of the JS path's service
 *   times), the data-path threads' share, errors by errno, and its open connections (peer,
 *   domain, TLS, executor and why).
 * - watchLines: `--watch`, as `iostat -x` for exports: per export, rates over the interval
 *   between two reports (r/s, w/s, rMiB/s, wMiB/s, other requests/s, errors/s), requests in
 *   flight, and the p50 and p99 of the requests answered in that interval (the difference of
 *   the latency buckets).
 *
 * Latency figures are the upper ends of log2 buckets (request-stats.ts): "p99 128µs" means the
 * 99th percentile was below 128 µs (and at least 64).
 */
import { latencyQuantileUs } from '../nbd/request-stats';
import { formatSize } from '../size';
import type {
  ExportDocument, LatencySummary, StatusDocument,
} from '../serve/status-document';
import { formatTable } from './output';

export interface StatusReport {
  catalog: string;
  servers: StatusDocument[];
  /** servers registered but not shown, and why (not running, no control socket, no answer) */
  notes: string[];
}

/** One report and when it was taken (performance.now()). */
export interface StatusSample {
  atMs: number;
  report: StatusReport;
}

/** `512µs`, `2.0ms`, `8.4s`; `-` for none. */
export function formatMicros(micros: number | null): string {
  if (micros === null) return '-';
  if (micros < 1000) return `${micros}µs`;
  if (micros < 1_000_000) return `${(micros / 1000).toFixed(1)}ms`;
  return `${(micros / 1_000_000).toFixed(1)}s`;
}

/** `42s`, `5m02s`, `3h07m`, `2d04h`. */
export function formatUptime(seconds: number): string {
  const s = Math.floor(seconds);
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor(s / 3600) % 24)}h`;
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

function percentiles(latency: LatencySummary): string {
  if (latency.count === 0) return 'no requests timed';
  return `p50 ${formatMicros(latency.p50Us)}  p90 ${formatMicros(latency.p90Us)}  ` +
    `p99 ${formatMicros(latency.p99Us)}  max ${formatMicros(latency.maxUs)}`;
}

function serverHeading(doc: StatusDocument): string[] {
  const s = doc.server;
  const commits = Object.entries(doc.catalogCommits)
    .map(([op, latency]) => `${op} ${latency.count} (p99 ${formatMicros(latency.p99Us)})`);
  const c = doc.connections;
  return [
    `server ${s.id ?? '?'}  pid ${s.pid}  host ${s.host}  xvd ${s.version}  ` +
      `up ${formatUptime(s.uptimeSeconds)}  tls ${s.tls}`,
    `  listening ${s.listeners.join(', ') || '-'}` +
      (s.metrics === null ? '' : `  metrics http://${s.metrics}/metrics`),
    `  connections ${c.open} open, ${c.accepted} accepted, ${c.refused} refused, ` +
      `${c.stalled} stalled, ${c.faults} faults`,
    `  memory ${formatSize(doc.budget.heldBytes)} held of ${formatSize(doc.budget.maxBytes)} ` +
      `(peak ${formatSize(doc.budget.peakBytes)}, ${doc.budget.waiting} waiting)  ` +
      `${plural(doc.leases, 'VD')} leased  ${plural(doc.fences, 'fence')}`,
    `  catalog commits ${commits.join(', ') || 'none yet'}`,
  ];
}

function commandRows(e: ExportDocument): string[][] {
  const rows = Object.entries(e.commands).filter(([, c]) => c.requests > 0)
    .map(([name, c]) => [name, String(c.requests), formatSize(c.bytes),
      formatMicros(c.latency.p50Us), formatMicros(c.latency.p99Us)]);
  if (e.datapath.requests > 0) {
    const latency = e.datapath.latency;
    rows.push(['READ+WRITE by thread', String(e.datapath.requests), '',
      formatMicros(latency.p50Us), formatMicros(latency.p99Us)]);
  }
  return rows;
}

function exportLines(e: ExportDocument): string[] {
  const lines = [`  export ${e.name}  ${plural(e.connections.length, 'connection')}  ` +
    `${e.inflight} in flight  ${percentiles(e.latency)}`];
  const rows = commandRows(e);
  if (rows.length > 0) {
    lines.push(...indent(formatTable(['command', 'requests', 'bytes', 'p50', 'p99'], rows)));
  }
  const errors = Object.entries(e.errors).map(([name, count]) => `${name} ${count}`);
  if (errors.length > 0) lines.push(`    errors ${errors.join(', ')}`);
  if (e.connections.length > 0) {
    const table = formatTable(['conn', 'peer', 'domain', 'tls', 'executor', 'in flight',
      'requests', 'why'], e.connections.map((c) => [String(c.id), c.peer,
      c.domain === null ? '-' : String(c.domain), c.tls ? 'yes' : 'no', c.executor,
      String(c.inflight), String(c.requests), c.reason]));
    lines.push(...indent(table));
  }
  return lines;
}

function indent(text: string): string[] {
  return text.split('\n').map((line) => `    ${line}`);
}

/** The snapshot of every server (see the header). */
export function reportLines(report: StatusReport): string[] {
  const lines: string[] = [];
  for (const doc of report.servers) {
    if (lines.length > 0) lines.push('');
    lines.push(...serverHeading(doc));
    for (const e of doc.exports) lines.push('', ...exportLines(e));
    if (doc.exports.length === 0) lines.push('', '  no export has been opened yet');
  }
  if (report.servers.length === 0) lines.push(`no server is running on ${report.catalog}`);
  for (const note of report.notes) lines.push(`note: ${note}`);
  return lines;
}

// --- --watch ---

function keyOf(doc: StatusDocument, e: ExportDocument): string {
  return `${doc.server.pid}:${doc.server.id ?? '?'}:${e.name}`;
}

function exportsByKey(report: StatusReport): Map<string, ExportDocument> {
  const map = new Map<string, ExportDocument>();
  for (const doc of report.servers) {
    for (const e of doc.exports) map.set(keyOf(doc, e), e);
  }
  return map;
}

function requestsOf(e: ExportDocument | undefined, command: string): number {
  return e?.commands[command]?.requests ?? 0;
}

function bytesOf(e: ExportDocument | undefined, command: string): number {
  return e?.commands[command]?.bytes ?? 0;
}

function totalOf(record: Record<string, number> | undefined): number {
  return Object.values(record ?? {}).reduce((sum, value) => sum + value, 0);
}

/** The latency of the requests answered between `before` and `now` (bucket differences). */
function intervalLatency(now: ExportDocument, before: ExportDocument | undefined): number[] {
  return now.latency.buckets.map((count, index) =>
    Math.max(0, count - (before?.latency.buckets[index] ?? 0)));
}

function rate(now: number, before: number, seconds: number): number {
  return Math.max(0, now - before) / seconds;
}

function watchRow(name: string, e: ExportDocument, before: ExportDocument | undefined,
  seconds: number | null): string[] {
  if (seconds === null) {
    return [name, String(e.connections.length), '-', '-', '-', '-', '-', '-',
      String(e.inflight), '-', '-'];
  }
  const others = Object.keys(e.commands).filter((c) => c !== 'READ' && c !== 'WRITE');
  const otherNow = others.reduce((sum, c) => sum + requestsOf(e, c), 0);
  const otherBefore = others.reduce((sum, c) => sum + requestsOf(before, c), 0);
  const mib = 1024 * 1024;
  const buckets = intervalLatency(e, before);
  return [name, String(e.connections.length),
    rate(requestsOf(e, 'READ'), requestsOf(before, 'READ'), seconds).toFixed(0),
    rate(requestsOf(e, 'WRITE'), requestsOf(before, 'WRITE'), seconds).toFixed(0),
    (rate(bytesOf(e, 'READ'), bytesOf(before, 'READ'), seconds) / mib).toFixed(1),
    (rate(bytesOf(e, 'WRITE'), bytesOf(before, 'WRITE'), seconds) / mib).toFixed(1),
    rate(otherNow, otherBefore, seconds).toFixed(0),
    rate(totalOf(e.errors), totalOf(before?.errors), seconds).toFixed(0),
    String(e.inflight), formatMicros(latencyQuantileUs(buckets, 0.5)),
    formatMicros(latencyQuantileUs(buckets, 0.99))];
}

/** One screen of `--watch` (see the header); `previous` null on the first. */
export function watchLines(previous: StatusSample | null, current: StatusSample,
  clock: string): string[] {
  const seconds = previous === null ? null
    : Math.max(0.001, (current.atMs - previous.atMs) / 1000);
  const lines = [`xvd status --watch  ${current.report.catalog}  ${clock}  ` +
    'every 1 s, q quits'];
  for (const doc of current.report.servers) {
    const s = doc.server;
    lines.push(`server ${s.id ?? '?'}  pid ${s.pid}  ${s.host}  xvd ${s.version}  ` +
      `up ${formatUptime(s.uptimeSeconds)}  ${plural(doc.connections.open, 'connection')}  ` +
      `memory ${formatSize(doc.budget.heldBytes)}  ${plural(doc.leases, 'lease')}  ` +
      `${plural(doc.fences, 'fence')}`);
  }
  const before = previous === null ? new Map<string, ExportDocument>()
    : exportsByKey(previous.report);
  const isMany = current.report.servers.length > 1;
  const rows = current.report.servers.flatMap((doc) => doc.exports.map((e) =>
    watchRow(isMany ? `${doc.server.id ?? '?'}:${e.name}` : e.name, e,
      before.get(keyOf(doc, e)), seconds)));
  lines.push('', ...formatTable(['export', 'conns', 'r/s', 'w/s', 'rMiB/s', 'wMiB/s',
    'other/s', 'err/s', 'inflight', 'p50', 'p99'], rows).split('\n'));
  if (current.report.servers.length === 0) lines.push('no server is running');
  for (const note of current.report.notes) lines.push(`note: ${note}`);
  return lines;
}
