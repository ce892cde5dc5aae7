/**
 * serve/metrics: `xvd serve --metrics HOST:PORT` serves Prometheus metrics at /metrics, in the
 * text exposition format written by prom-client (a registry of this server's own; no default
 * process metrics).
 *
 * One source of truth: each scrape builds the status document once (status-document.ts, what
 * `xvd status` shows) and every metric's collect callback reads it; nothing is observed through
 * prom-client per request. Counters and gauges are set from the document's counts in collect.
 * The latency histograms are the counts' own log2 buckets (request-stats.ts), exported as they
 * are by BucketHistogram: le = each bucket's upper end in seconds (2 µs … 2^23 µs, then +Inf),
 * cumulative as the format wants. The data-path threads keep no sum of their times, so
 * xvd_datapath_request_duration_seconds has buckets and a count but no _sum. A histogram's
 * series appears once it has a time in it (a command the JS path never executed has none).
 *
 * Names follow Prometheus' conventions: the xvd_ prefix, base units (_seconds, _bytes), _total
 * on counters. Labels: export (DOMAIN/DEVICE), command (NBD_CMD name), errno (NBD errno name),
 * operation (the catalog write). Only GET /metrics is served; anything else is a 404.
 */
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, type MetricType } from 'prom-client';
import { XvdError } from '../errors';
import type { Logger } from '../log';
import { LATENCY_BUCKETS } from '../sys/index';
import type {
  CommandDocument, ExportDocument, LatencySummary, StatusDocument,
} from './status-document';

type Labels = Record<string, string>;
type Sample = readonly [Labels, number];

interface ScalarSpec {
  name: string;
  help: string;
  kind: 'counter' | 'gauge';
  labels: readonly string[];
  read(doc: StatusDocument): Sample[];
}

interface HistogramSpec {
  name: string;
  help: string;
  labels: readonly string[];
  read(doc: StatusDocument): (readonly [Labels, LatencySummary])[];
}

const one = (value: number): Sample[] => [[{}, value]];

/** Per export, one sample. */
function perExport(read: (e: ExportDocument) => number) {
  return (doc: StatusDocument): Sample[] =>
    doc.exports.map((e) => [{ export: e.name }, read(e)] as const);
}

/** Per export and command, one sample. */
function perCommand(read: (c: CommandDocument) => number) {
  return (doc: StatusDocument): Sample[] => doc.exports.flatMap((e) =>
    Object.entries(e.commands).map(([command, c]) =>
      [{ export: e.name, command }, read(c)] as const));
}

const SCALARS: readonly ScalarSpec[] = [
  { name: 'xvd_build_info', help: 'xvd\'s version (the value is 1)', kind: 'gauge',
    labels: ['version'], read: (doc) => [[{ version: doc.server.version }, 1]] },
  { name: 'xvd_start_time_seconds', help: 'when this server started, seconds since the epoch',
    kind: 'gauge', labels: [],
    read: (doc) => one(Date.parse(doc.server.startedAt) / 1000) },
  { name: 'xvd_connections_open', help: 'client connections open now', kind: 'gauge',
    labels: [], read: (doc) => one(doc.connections.open) },
  { name: 'xvd_connections_accepted_total', help: 'client connections accepted',
    kind: 'counter', labels: [], read: (doc) => one(doc.connections.accepted) },
  { name: 'xvd_connections_refused_total', help: 'connections closed at accept (server full ' +
    'or shutting down)', kind: 'counter', labels: [], read: (doc) => one(doc.connections.refused) },
  { name: 'xvd_connections_stalled_total', help: 'connections ended for holding memory while ' +
    'their client took and sent nothing', kind: 'counter', labels: [],
  read: (doc) => one(doc.connections.stalled) },
  { name: 'xvd_connection_faults_total', help: 'internal errors contained by ending one ' +
    'connection (each is a bug)', kind: 'counter', labels: [],
  read: (doc) => one(doc.connections.faults) },
  { name: 'xvd_export_connections', help: 'connections open now, by export', kind: 'gauge',
    labels: ['export'], read: perExport((e) => e.connections.length) },
  { name: 'xvd_requests_inflight', help: 'requests the JS path is executing now, by export',
    kind: 'gauge', labels: ['export'], read: perExport((e) => e.inflight) },
  { name: 'xvd_requests_total', help: 'requests answered, by export and command (data-path ' +
    'threads\' included)', kind: 'counter', labels: ['export', 'command'],
  read: perCommand((c) => c.requests) },
  { name: 'xvd_request_bytes_total', help: 'bytes of the requests that succeeded (read, ' +
    'written, trimmed, zeroed, cached, described), by export and command', kind: 'counter',
  labels: ['export', 'command'], read: perCommand((c) => c.bytes) },
  { name: 'xvd_request_errors_total', help: 'requests refused or failed, by export and NBD ' +
    'errno', kind: 'counter', labels: ['export', 'errno'],
  read: (doc) => doc.exports.flatMap((e) => Object.entries(e.errors)
    .map(([errno, value]) => [{ export: e.name, errno }, value] as const)) },
  { name: 'xvd_datapath_requests_total', help: 'plain READs and WRITEs a data-path thread ' +
    'served itself, by export (also in xvd_requests_total)', kind: 'counter',
  labels: ['export'], read: perExport((e) => e.datapath.requests) },
  { name: 'xvd_fences_total', help: 'exports fenced (a VD removed, deleted or expired while ' +
    'served)', kind: 'counter', labels: [], read: (doc) => one(doc.fences) },
  { name: 'xvd_leased_vds', help: 'VDs this server holds a catalog lease on now', kind: 'gauge',
    labels: [], read: (doc) => one(doc.leases) },
  { name: 'xvd_memory_budget_held_bytes', help: 'bytes clients make the server hold now ' +
    '(serve --memory-max)', kind: 'gauge', labels: [], read: (doc) => one(doc.budget.heldBytes) },
  { name: 'xvd_memory_budget_threads_bytes', help: 'of those, bytes the data-path threads hold',
    kind: 'gauge', labels: [], read: (doc) => one(doc.budget.threadsBytes) },
  { name: 'xvd_memory_budget_peak_bytes', help: 'the most bytes held at once', kind: 'gauge',
    labels: [], read: (doc) => one(doc.budget.peakBytes) },
  { name: 'xvd_memory_budget_max_bytes', help: 'the budget (serve --memory-max)', kind: 'gauge',
    labels: [], read: (doc) => one(doc.budget.maxBytes) },
  { name: 'xvd_memory_budget_waiting_requests', help: 'requests waiting for the budget now',
    kind: 'gauge', labels: [], read: (doc) => one(doc.budget.waiting) },
  { name: 'xvd_memory_budget_parked_total', help: 'requests that had to wait for the budget',
    kind: 'counter', labels: [], read: (doc) => one(doc.budget.parkedTotal) },
];

const HISTOGRAMS: readonly HistogramSpec[] = [
  { name: 'xvd_request_duration_seconds', help: 'service time of the requests the JS path ' +
    'executed, from the request whole to its reply handed on, by export and command',
  labels: ['export', 'command'], read: (doc) => doc.exports.flatMap((e) =>
    Object.entries(e.commands).filter(([, c]) => c.latency.count > 0).map(([command, c]) =>
      [{ export: e.name, command }, c.latency] as const)) },
  { name: 'xvd_datapath_request_duration_seconds', help: 'service time of the plain READs and ' +
    'WRITEs data-path threads served, framed to reply ready, by export (no _sum: the threads ' +
    'keep none)', labels: ['export'],
  read: (doc) => doc.exports.filter((e) => e.datapath.latency.count > 0)
    .map((e) => [{ export: e.name }, e.datapath.latency] as const) },
  { name: 'xvd_catalog_commit_duration_seconds', help: 'catalog writes (heartbeats, leases), ' +
    'from the request to the writer thread to its committed answer, by operation',
  labels: ['operation'], read: (doc) => Object.entries(doc.catalogCommits)
    .map(([operation, latency]) => [{ operation }, latency] as const) },
];

/** Bucket upper ends in seconds: 2^(i+1) µs for every bucket but the last, open-ended one. */
const BOUNDS_SECONDS = Array.from({ length: LATENCY_BUCKETS - 1 }, (_, i) => 2 ** (i + 1) / 1e6);

type HistogramValues = Awaited<ReturnType<Histogram['get']>>;

/**
 * A histogram whose buckets are counted elsewhere (request-stats.ts) and read at scrape time:
 * get() answers them in the shape prom-client's registry writes out, instead of observations.
 */
class BucketHistogram extends Histogram {
  constructor(private readonly spec: HistogramSpec, registry: Registry,
    private readonly documentNow: () => StatusDocument) {
    super({ name: spec.name, help: spec.help, labelNames: [...spec.labels],
      buckets: BOUNDS_SECONDS, registers: [registry] });
  }

  override async get(): Promise<HistogramValues> {
    const values: HistogramValues['values'] = [];
    for (const [labels, latency] of this.spec.read(this.documentNow())) {
      let cumulative = 0;
      latency.buckets.forEach((count, index) => {
        cumulative += count;
        const le = index < BOUNDS_SECONDS.length ? String(BOUNDS_SECONDS[index]) : '+Inf';
        values.push({ labels: { ...labels, le }, value: cumulative,
          metricName: `${this.spec.name}_bucket` });
      });
      if (latency.sumSeconds !== null) {
        values.push({ labels, value: latency.sumSeconds, metricName: `${this.spec.name}_sum` });
      }
      values.push({ labels, value: latency.count, metricName: `${this.spec.name}_count` });
    }
    // prom-client's typings number MetricType; at runtime, and in the format, it is a word
    const type = 'histogram' as unknown as MetricType;
    return { name: this.spec.name, help: this.spec.help, type, values, aggregator: 'sum',
      collect: () => undefined };
  }

  /** The registry prefers this to get() for the text format. */
  getForPromString(): Promise<HistogramValues> {
    return this.get();
  }
}

function registerScalar(spec: ScalarSpec, registry: Registry,
  documentNow: () => StatusDocument): void {
  const common = { name: spec.name, help: spec.help, labelNames: [...spec.labels],
    registers: [registry] };
  if (spec.kind === 'counter') {
    new Counter({ ...common, collect(this: Counter) {
      this.reset();
      for (const [labels, value] of spec.read(documentNow())) this.inc(labels, value);
    } });
  } else {
    new Gauge({ ...common, collect(this: Gauge) {
      this.reset();
      for (const [labels, value] of spec.read(documentNow())) this.set(labels, value);
    } });
  }
}

/** The registry of every xvd metric, each reading the document `documentNow` gives. */
export function metricsRegistryOf(documentNow: () => StatusDocument): Registry {
  const registry = new Registry();
  for (const spec of SCALARS) registerScalar(spec, registry, documentNow);
  for (const spec of HISTOGRAMS) new BucketHistogram(spec, registry, documentNow);
  return registry;
}

/** A listening metrics endpoint; close() stops it. */
export class MetricsEndpoint {
  private constructor(readonly address: string, private readonly listener: http.Server) {}

  /** Listens on host:port; each GET /metrics builds `document()` once and writes every metric. */
  static async start(host: string, port: number, document: () => StatusDocument, log: Logger,
  ): Promise<MetricsEndpoint> {
    let current: StatusDocument | null = null;
    const registry = metricsRegistryOf(() => (current ??= document()));
    const listener = http.createServer((request, response) => {
      if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
        response.writeHead(404, { 'Content-Type': 'text/plain' }).end('see /metrics\n');
        return;
      }
      current = null; // the collect callbacks run at once and share one document
      registry.metrics().then((text) => {
        response.writeHead(200, { 'Content-Type': registry.contentType }).end(text);
      }, (error: unknown) => {
        log.error({ err: error }, 'metrics: scrape failed');
        response.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
      });
    });
    await new Promise<void>((resolve, reject) => {
      const fail = (error: Error): void => reject(new XvdError('ERR_SERVE_METRICS',
        `serve: --metrics: ${host}:${port}: ${error.message}`, { cause: error }));
      listener.once('error', fail);
      listener.listen(port, host, () => {
        listener.off('error', fail);
        resolve();
      });
    });
    listener.on('error', (error) => log.error({ err: error }, 'metrics: listener error'));
    const bound = listener.address();
    const address = typeof bound === 'object' && bound !== null
      ? `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`
      : `${host}:${port}`;
    return new MetricsEndpoint(address, listener);
  }

  async close(): Promise<void> {
    this.listener.closeAllConnections();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }
}
