/**
 * serve-status helper, for the tests of `xvd status` and `serve --metrics`: a catalog with one
 * writable 16 MiB VD attached as `1/xvda`; a real `xvd serve` child on it (ports chosen by the
 * kernel, 127.0.0.1:0), found through `xvd status --json` itself; status polled until it says
 * what a test waits for (bounded); and a libnbd client (python3-libnbd) that sends a known mix
 * of requests, then stays connected until the test tells it to go on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { StatusDocument } from '../../src/serve/status-document';
import type { StatusReport } from '../../src/cli/status-view';
import { makeImage, runXvd, spawnXvd } from './cli';
import { PYTHON_LIBNBD } from './nbd-client';

const MiB = 1024 * 1024;

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** A catalog in `dir` whose 16 MiB VD 1 is attached writable as 1/xvda. */
export async function makeStatusCatalog(dir: string): Promise<string> {
  const catalog = path.join(dir, 'catalog.sqlite');
  const image = makeImage(path.join(dir, 'pool.img'), 64 * MiB);
  for (const args of [['format', image], ['create', '16M'],
    ['vbd', 'add', 'vd:1', 'xvda', '--domain', '1', '--mode', 'w']]) {
    const result = await runXvd(args, { catalog });
    if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.stderr}`);
  }
  return catalog;
}

/** `xvd status --json`, parsed. */
export async function statusOf(catalog: string, env: Record<string, string> = {},
): Promise<StatusReport> {
  const result = await runXvd(['status', '--json'], { catalog, env });
  if (result.code !== 0) throw new Error(`xvd status: ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as StatusReport;
}

/** Polls status (every 100 ms, at most timeoutMs) until `isDone`; the last report. */
export async function statusUntil(catalog: string, isDone: (report: StatusReport) => boolean,
  timeoutMs = 30_000): Promise<StatusReport> {
  const deadline = Date.now() + timeoutMs;
  let report = await statusOf(catalog);
  while (!isDone(report) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    report = await statusOf(catalog);
  }
  return report;
}

export interface ServeChild {
  child: ChildProcess;
  /** what status said once the server answered */
  document: StatusDocument;
  /** nbd://127.0.0.1:PORT/1/xvda */
  uri: string;
}

/** Starts `xvd serve --listen 127.0.0.1:0 ARGS` and waits until status shows it. */
export async function startServe(t: Teardown, catalog: string, args: string[] = [],
  env: Record<string, string> = {}): Promise<ServeChild> {
  const child = spawnXvd(['serve', '--listen', '127.0.0.1:0', ...args], { catalog, env });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const report = await statusUntil(catalog, (r) =>
    child.exitCode !== null || r.servers.some((s) => s.server.pid === child.pid));
  const document = report.servers.find((s) => s.server.pid === child.pid);
  if (document === undefined) throw new Error(`serve did not show up in status: ${stderr}`);
  const port = /:(\d+)$/.exec(document.server.listeners[0] ?? '')?.[1];
  return { child, document, uri: `nbd://127.0.0.1:${port ?? '?'}/1/xvda` };
}

/** What the client sends before it says `ready` (see CLIENT). */
export const WRITES = 5;
export const READS = 7;
export const WRITE_BYTES = 65536;
export const READ_BYTES = 4096;

/**
 * WRITES writes of 64 KiB, READS reads of 4 KiB, a FLUSH, a TRIM of 1 MiB, and a READ past the
 * end (strict mode off, so the server refuses it: EINVAL); then `ready`. On the line `again`
 * it reads once more and prints the outcome; on any other line (or EOF) it disconnects.
 */
const CLIENT = `
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
for i in range(${WRITES}):
    h.pwrite(b'w' * ${WRITE_BYTES}, i * ${WRITE_BYTES})
for i in range(${READS}):
    h.pread(${READ_BYTES}, i * ${READ_BYTES})
h.flush()
h.trim(1048576, 1048576)
try:
    h.pread(4096, h.get_size())
    print('past the end: read', flush=True)
except nbd.Error as e:
    print('past the end: errno', e.errno, flush=True)
print('ready', flush=True)
while True:
    line = sys.stdin.readline().strip()
    if line != 'again':
        break
    try:
        h.pread(4096, 0)
        print('again: read', flush=True)
    except nbd.Error as e:
        print('again: errno', e.errno, flush=True)
h.shutdown()
`;

export interface Client {
  /** the lines it printed so far */
  lines: string[];
  /** resolves once a printed line matches (rejects when it exits first, or after 60 s) */
  waitFor(pattern: RegExp): Promise<string>;
  send(line: string): void;
  /** disconnects and resolves once the process exited */
  close(): Promise<number | null>;
}

export function startClient(t: Teardown, uri: string): Client {
  const child = spawn(PYTHON_LIBNBD, ['-c', CLIENT, uri], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const waitFor = async (pattern: RegExp): Promise<string> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const found = lines.find((line) => pattern.test(line));
      if (found !== undefined) return found;
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`client: no line like ${pattern} (exit ${child.exitCode}): ${stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { lines, waitFor, send: (line) => child.stdin.write(`${line}\n`),
    close: () => {
      child.stdin.end();
      return exited;
    } };
}
