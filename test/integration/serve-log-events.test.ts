/**
 * The operator's log lines (src/log-events.ts) from a real `xvd serve` process: its stderr is
 * read as pino JSON lines, and each happening must give exactly one line with its stable
 * `event` and the fields the README's "Log events" table promises: a takeover of a dead
 * server's rows at start, an export refused, a lease taken, a connection refused over
 * --max-connections, a fence (`xvd vbd remove` under a connected client) with its
 * connection-fenced line, the lease released after the drain, and a lease lost when the
 * server's catalog row disappears. A second server with --tls require refuses a plain client.
 * The memory-budget lines come from an NBD server in this process with a small budget and stall
 * deadline (as test/errors/errors-client-stall.test.ts), its log captured. The README's table
 * and LOG_EVENT must name the same events.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { LOG_EVENT } from '../../src/log-events';
import { ROOT, runXvd, spawnXvd } from '../helpers/cli';
import { ScriptedClient, memoryDisk, startServer } from '../helpers/nbd-client';
import { freePort, stopChild } from '../helpers/process';
import { captureLog, makeServedCatalog } from '../helpers/serve-catalog';
import { eventually } from '../helpers/waits';
import { CMD } from '../helpers/wire';

type Line = Record<string, unknown> & { level: number; msg: string };

interface Served {
  child: ChildProcess;
  port: number;
  lines: Line[];
  /** the lines whose `event` is `event` */
  events(event: string): Line[];
}

/** `xvd serve` on a free port with info-level JSON logs, parsed as they come. */
async function serve(t: Test, catalog: string, flags: string[]): Promise<Served> {
  const port = await freePort();
  const child = spawnXvd(['serve', '--listen', `127.0.0.1:${port}`, ...flags], { catalog,
    env: { XVD_LOG_LEVEL: 'info', XVD_LOG_PRETTY: '0' } });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: Line[] = [];
  let partial = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const part of parts) if (part.startsWith('{')) lines.push(JSON.parse(part) as Line);
  });
  const events = (event: string): Line[] => lines.filter((line) => line.event === event);
  const isUp = await eventually(() => lines.some((line) => line.msg === 'xvd serve: listening') ||
    child.exitCode !== null, 30_000);
  t.ok(isUp && child.exitCode === null, 'serve is listening');
  return { child, port, lines, events };
}

/** A TCP client and the peer name the server gives it ("127.0.0.1:PORT"). */
async function connect(port: number): Promise<{ client: ScriptedClient; peer: string }> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const connected = net.connect(port, '127.0.0.1', () => resolve(connected));
    connected.once('error', reject);
  });
  return { client: new ScriptedClient(socket, socket), peer: `127.0.0.1:${socket.localPort}` };
}

/** A server row of a process that does not run, holding the lease of VD 2. */
function addDeadServer(catalog: string): number {
  const db = new Database(catalog, { fileMustExist: true });
  try {
    const row = db.prepare('INSERT INTO servers (pid, pid_start_time, heartbeat_at, ' +
      "started_at) VALUES (2147483646, 'gone', 0, 0)").run();
    db.prepare('INSERT INTO leases (server_id, vd_id, generation) VALUES (?, 2, 0)')
      .run(row.lastInsertRowid);
    return Number(row.lastInsertRowid);
  } finally {
    db.close();
  }
}

function deleteServerRows(catalog: string): void {
  const db = new Database(catalog, { fileMustExist: true });
  try {
    db.prepare('DELETE FROM servers').run();
  } finally {
    db.close();
  }
}

/** Exactly one line of `event`; its fields as far as `fields` names them. */
function one(t: Test, served: Served, event: string, fields: Record<string, unknown>): Line {
  const found = served.events(event);
  t.equal(found.length, 1, `one ${event} line: ${JSON.stringify(found)}`);
  t.match(found[0] ?? {}, fields, event);
  return found[0] ?? { level: 0, msg: '' };
}

const INFO = 30;
const WARN = 40;
const ERROR = 50;

t.test('refusals, leases, a fence and a takeover each give one line with their fields',
  async (t) => {
    const dir = t.testdir();
    const catalog = await makeServedCatalog(dir, 2);
    const deadServerId = addDeadServer(catalog);
    const served = await serve(t, catalog, ['--max-connections', '1']);
    one(t, served, LOG_EVENT.takeover, { level: WARN, deadServerId, deadPid: 2147483646 });

    const unknown = await connect(served.port);
    await t.rejects(unknown.client.handshake({ name: '1/nope' }), /GO failed/);
    unknown.client.end();
    t.ok(await unknown.client.waitClosed(), 'the refused client is let go');
    t.ok(await eventually(() => served.events(LOG_EVENT.exportRefused).length > 0));
    one(t, served, LOG_EVENT.exportRefused, { level: WARN, export: '1/nope', domain: null,
      peer: unknown.peer, option: 'GO', reason: 'unknown' });

    const user = await connect(served.port);
    await user.client.handshake({ name: '1/xvda' });
    one(t, served, LOG_EVENT.leaseTaken, { level: INFO, vd: 1, export: '1/xvda' });

    const extra = await connect(served.port);
    t.ok(await extra.client.waitClosed(), 'over --max-connections: closed at once');
    t.ok(await eventually(() => served.events(LOG_EVENT.connectionRefused).length > 0));
    one(t, served, LOG_EVENT.connectionRefused, { level: WARN, peer: extra.peer,
      reason: 'too many connections', max: 1 });

    const removed = await runXvd(['vbd', 'remove', 'xvda', '--domain', '1'], { catalog });
    t.equal(removed.code, 0, removed.stderr);
    t.ok(await eventually(() => served.events(LOG_EVENT.leaseReleased).length > 0, 20_000));
    one(t, served, LOG_EVENT.fence, { level: INFO, export: '1/xvda', vd: 1,
      reason: 'VBD removed', connections: 1 });
    one(t, served, LOG_EVENT.connectionFenced, { level: INFO, export: '1/xvda', domain: null,
      peer: user.peer });
    one(t, served, LOG_EVENT.leaseReleased, { level: INFO, vd: 1, export: '1/xvda' });
    user.client.end();
    const fencedConn = served.events(LOG_EVENT.connectionFenced)[0]?.conn;
    t.ok(await eventually(() => served.lines.some((line) => line.conn === fencedConn &&
      line.msg === 'connection closed')), 'the fenced client is gone: a connection is free');
    await leaseLost(t, served, catalog);
    await stopChild(served.child);
    t.equal(served.child.exitCode, 0, 'SIGTERM: a clean exit');
  });

/** A served VD, then the server's catalog row deleted: one lease-lost line at the heartbeat. */
async function leaseLost(t: Test, served: Served, catalog: string): Promise<void> {
  const user = await connect(served.port);
  await user.client.handshake({ name: '1/xvdb' });
  t.equal(served.events(LOG_EVENT.leaseTaken).length, 2, 'xvdb\'s lease taken');
  deleteServerRows(catalog);
  // the heartbeat (every LIMITS.serveHeartbeatMs, 5 s) finds the row gone
  t.ok(await eventually(() => served.events(LOG_EVENT.leaseLost).length > 0, 20_000));
  one(t, served, LOG_EVENT.leaseLost, { level: ERROR, vds: 1 });
  user.client.end();
}

t.test('--tls require: a plain client that asks for an export gets one tls-refused line',
  async (t) => {
    const dir = t.testdir();
    const catalog = await makeServedCatalog(dir, 1);
    const psk = path.join(dir, 'keys.psk');
    fs.writeFileSync(psk, `1:${'ab'.repeat(32)}\n`);
    const served = await serve(t, catalog, ['--tls', 'require', '--tls-psk', psk]);
    const plain = await connect(served.port);
    await t.rejects(plain.client.handshake({ name: '1/xvda' }), /GO failed: 0x80000005/);
    plain.client.end();
    t.ok(await eventually(() => served.events(LOG_EVENT.tlsRefused).length > 0));
    one(t, served, LOG_EVENT.tlsRefused, { level: WARN, peer: plain.peer, option: 'GO',
      reason: 'TLS required' });
    t.equal(served.events(LOG_EVENT.leaseTaken).length, 0, 'nothing was opened');
    await stopChild(served.child);
  });

t.test('a client that holds the budget and reads nothing: one budget-wait, one budget-stall',
  async (t) => {
    const MiB = 1024 * 1024;
    const { log, lines } = captureLog('info');
    const limits = { budgetBytesMax: 8 * MiB, budgetFloorBytes: 256 * 1024, stallTimeoutMs: 500 };
    const { connect, server } = await startServer(t, [memoryDisk('disk', 64 * MiB)],
      { limits, log });
    const client = await connect();
    await client.handshake();
    client.pause();
    for (let index = 0; index < 64; index++) {
      client.request({ type: CMD.READ, offset: index * MiB, length: MiB, cookie: BigInt(index) });
    }
    t.ok(await eventually(() => server.stats.connectionsStalled === 1, 20_000), 'ended');
    const events = (event: string): Record<string, unknown>[] =>
      (lines as unknown as Record<string, unknown>[]).filter((line) => line.event === event);
    t.equal(events(LOG_EVENT.budgetWait).length, 1, 'one budget-wait line');
    t.match(events(LOG_EVENT.budgetWait)[0], { level: WARN, export: 'disk', domain: null,
      peer: /^127\.0\.0\.1:\d+$/, command: 'READ', length: MiB,
      budgetMaxBytes: limits.budgetBytesMax });
    t.equal(events(LOG_EVENT.budgetStall).length, 1, 'one budget-stall line');
    t.match(events(LOG_EVENT.budgetStall)[0], { level: WARN, export: 'disk', domain: null,
      reason: 'no progress while holding memory', heldBytes: Number });
  });

t.test('the README\'s "Log events" table names exactly the events of LOG_EVENT', async (t) => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('### Log events');
  t.ok(start >= 0, 'the README has the section');
  const rest = readme.slice(start + 1);
  const section = rest.slice(0, rest.search(/\n##/));
  const named = [...section.matchAll(/^\| `([a-z-]+)` \|/gm)].map((match) => match[1]);
  t.same(named.sort(), Object.values(LOG_EVENT).sort());
});
