/**
 * `xvd serve --metrics HOST:PORT` scraped for real: after a real NBD client (python3-libnbd)
 * sent a known mix of requests, an HTTP GET of /metrics gives the counters, histograms and
 * gauges those requests imply, the same figures `xvd status` shows (one source of truth), and
 * Prometheus' own checker (promtool check metrics) accepts the exposition. A fence shows in
 * xvd_fences_total. A bad --metrics address is a usage error, a taken port a one-line failure.
 */
import t from 'tap';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { runXvd } from '../helpers/cli';
import { PYTHON_LIBNBD, hasTool, runTool } from '../helpers/nbd-client';
import { stopChild } from '../helpers/process';
import {
  READ_BYTES, READS, WRITE_BYTES, WRITES, makeStatusCatalog, startClient, startServe,
  statusUntil,
} from '../helpers/serve-status';
import type { StatusReport } from '../../src/cli/status-view';

/** `name{labels} value` lines → value by `name{labels}` (no HELP/TYPE lines). */
function samplesOf(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

async function scrape(address: string, route = '/metrics'): Promise<{ status: number;
  type: string; text: string }> {
  const response = await fetch(`http://${address}${route}`);
  return { status: response.status, type: response.headers.get('content-type') ?? '',
    text: await response.text() };
}

function isCounted(report: StatusReport): boolean {
  const e = report.servers[0]?.exports.find((x) => x.name === '1/xvda');
  return e?.commands['TRIM']?.requests === 1 && e.commands['READ']?.requests === READS + 1;
}

t.test('a scrape after real traffic gives the counts it implies, and promtool accepts it',
  async (t) => {
    if ((await runTool(PYTHON_LIBNBD, ['-c', 'import nbd'])).code !== 0) {
      return t.skip('python3-libnbd missing', () => undefined);
    }
    const catalog = await makeStatusCatalog(t.testdir());
    const serve = await startServe(t, catalog, ['--metrics', '127.0.0.1:0', '--memory-max', '64M']);
    const address = serve.document.server.metrics ?? '';
    t.match(address, /^127\.0\.0\.1:\d+$/, 'status names the metrics endpoint');
    const client = startClient(t, serve.uri);
    await client.waitFor(/^ready$/);
    const report = await statusUntil(catalog, isCounted);
    const scraped = await scrape(address);
    t.equal(scraped.status, 200);
    t.match(scraped.type, /^text\/plain; version=0\.0\.4/);
    const m = samplesOf(scraped.text);
    const x = (name: string, labels = ''): number | undefined =>
      m.get(`${name}{export="1/xvda"${labels}}`);
    t.equal(x('xvd_requests_total', ',command="WRITE"'), WRITES);
    t.equal(x('xvd_request_bytes_total', ',command="WRITE"'), WRITES * WRITE_BYTES);
    t.equal(x('xvd_requests_total', ',command="READ"'), READS + 1, 'the refused READ counts');
    t.equal(x('xvd_request_bytes_total', ',command="READ"'), READS * READ_BYTES);
    t.equal(x('xvd_request_bytes_total', ',command="TRIM"'), 1024 * 1024);
    t.equal(x('xvd_request_errors_total', ',errno="EINVAL"'), 1);
    t.equal(x('xvd_request_duration_seconds_count', ',command="FLUSH"'), 1);
    t.equal(x('xvd_request_duration_seconds_bucket', ',command="FLUSH",le="+Inf"'), 1);
    const timedPlain = (x('xvd_request_duration_seconds_count', ',command="READ"') ?? 0) +
      (x('xvd_request_duration_seconds_count', ',command="WRITE"') ?? 0) +
      (x('xvd_datapath_request_duration_seconds_count') ?? 0);
    t.equal(timedPlain, READS + WRITES, 'every plain READ and WRITE in one histogram or other');
    t.equal(x('xvd_export_connections'), 1);
    t.equal(m.get('xvd_connections_open'), 1);
    t.equal(m.get('xvd_leased_vds'), 1);
    t.equal(m.get('xvd_memory_budget_max_bytes'), 64 * 1024 * 1024);
    t.equal(m.get('xvd_fences_total'), 0);
    t.ok((m.get('xvd_catalog_commit_duration_seconds_count{operation="acquireLease"}') ?? 0) >= 1);
    t.equal(m.get(`xvd_build_info{version="${serve.document.server.version}"}`), 1);
    const e = report.servers[0]?.exports[0];
    t.equal(x('xvd_requests_total', ',command="WRITE"'), e?.commands['WRITE']?.requests,
      'the same figure as status');

    if (hasTool('promtool')) {
      const checked = spawnSync('promtool', ['check', 'metrics'], { input: scraped.text,
        encoding: 'utf8', timeout: 30_000 });
      t.equal(checked.status, 0, `promtool: ${checked.stdout}${checked.stderr}`);
    } else {
      t.skip('promtool missing (Debian prometheus)', () => undefined);
    }
    t.equal((await scrape(address, '/')).status, 404, 'only /metrics is served');

    const removed = await runXvd(['vbd', 'remove', 'xvda', '--domain', '1'], { catalog });
    t.equal(removed.code, 0, removed.stderr);
    await statusUntil(catalog, (r) => r.servers[0]?.fences === 1);
    t.equal(samplesOf((await scrape(address)).text).get('xvd_fences_total'), 1, 'a fence');
    await client.close();
    await stopChild(serve.child);
    t.equal(serve.child.exitCode, 0);
  });

t.test('--metrics: a bad address is a usage error, a taken port a one-line failure',
  async (t) => {
    const catalog = await makeStatusCatalog(t.testdir());
    const bad = await runXvd(['serve', '--listen', '127.0.0.1:0', '--metrics', 'nowhere'],
      { catalog });
    t.equal(bad.code, 2);
    t.equal(bad.stderr, 'xvd: serve: --metrics: expected HOST:PORT, not nowhere\n');
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    t.teardown(() => taken.close());
    const port = (taken.address() as net.AddressInfo).port;
    const busy = await runXvd(['serve', '--listen', '127.0.0.1:0', '--metrics',
      `127.0.0.1:${port}`], { catalog });
    t.equal(busy.code, 1);
    t.match(busy.stderr, /^xvd: serve: --metrics: 127\.0\.0\.1:\d+: .*EADDRINUSE.*\n$/);
    const after = await statusUntil(catalog, () => true);
    t.same(after.servers, [], 'it left the catalog');
  });
