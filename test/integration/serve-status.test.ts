/**
 * `xvd status` against real `xvd serve` processes and a real NBD client (python3-libnbd): the
 * server's identity and listeners, and per export the requests, bytes, errors, connections and
 * latency that client caused, on the data-path thread and on the JS path; a fence counted; the
 * control socket private, beside the catalog or in the runtime directory, and gone at exit; a
 * killed server skipped with a note and its socket swept by the next one.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runXvd } from '../helpers/cli';
import { PYTHON_LIBNBD, runTool } from '../helpers/nbd-client';
import { shortTempDir, stopChild } from '../helpers/process';
import {
  READ_BYTES, READS, WRITE_BYTES, WRITES, makeStatusCatalog, startClient, startServe, statusOf,
  statusUntil,
} from '../helpers/serve-status';
import type { StatusReport } from '../../src/cli/status-view';
import type { ExportDocument } from '../../src/serve/status-document';

/** the client's requests that execute: writes, reads, a FLUSH and a TRIM */
const EXECUTED = WRITES + READS + 2;

const VERSION = (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'),
  'utf8')) as { version: string }).version;

function xvda(report: StatusReport): ExportDocument | undefined {
  return report.servers[0]?.exports.find((e) => e.name === '1/xvda');
}

/** Every request of the client is counted (the counts settle just after each reply). */
function isCounted(report: StatusReport): boolean {
  const e = xvda(report);
  return e !== undefined && e.commands['TRIM']?.requests === 1 &&
    e.commands['READ']?.requests === READS + 1;
}

async function skipWithoutLibnbd(): Promise<boolean> {
  return (await runTool(PYTHON_LIBNBD, ['-c', 'import nbd'])).code !== 0;
}

t.test('status shows the server and what a real client did, served by the data-path thread',
  async (t) => {
    if (await skipWithoutLibnbd()) return t.skip('python3-libnbd missing', () => undefined);
    const dir = shortTempDir(t);
    const catalog = await makeStatusCatalog(dir);
    const serve = await startServe(t, catalog);
    const server = serve.document.server;
    t.equal(server.pid, serve.child.pid);
    t.equal(server.version, VERSION);
    t.equal(server.host, os.hostname());
    t.equal(server.tls, 'off');
    t.match(server.listeners[0], /^127\.0\.0\.1:\d+$/);
    t.equal(server.controlPath, path.join(dir, '.xvd-control', `${serve.child.pid}.sock`));
    t.equal(fs.statSync(server.controlPath ?? '').mode & 0o777, 0o600, 'socket 0600');
    t.equal(fs.statSync(path.join(dir, '.xvd-control')).mode & 0o777, 0o700, 'its dir 0700');

    const client = startClient(t, serve.uri);
    t.equal(await client.waitFor(/^past the end/), 'past the end: errno EINVAL');
    await client.waitFor(/^ready$/);
    const report = await statusUntil(catalog, isCounted);
    const e = xvda(report);
    if (e === undefined) throw new Error('no export 1/xvda in status');
    t.same(Object.fromEntries(Object.entries(e.commands).map(([name, c]) =>
      [name, [c.requests, c.bytes]])), {
      READ: [READS + 1, READS * READ_BYTES], WRITE: [WRITES, WRITES * WRITE_BYTES],
      FLUSH: [1, 0], TRIM: [1, 1024 * 1024], CACHE: [0, 0], WRITE_ZEROES: [0, 0],
      BLOCK_STATUS: [0, 0],
    }, 'requests and bytes by command');
    t.same(e.errors, { EINVAL: 1 }, 'the refused READ, by errno');
    t.equal(e.inflight, 0);
    t.equal(e.connections.length, 1);
    const connection = e.connections[0];
    t.match(connection, { peer: /^127\.0\.0\.1:\d+$/, domain: null, tls: false,
      executor: 'datapath', requests: EXECUTED + 1 });
    t.ok(e.datapath.requests > 0, 'the thread served plain requests itself');
    const timed = (name: string): number => e.commands[name]?.latency.count ?? -1;
    t.equal(timed('READ') + timed('WRITE') + e.datapath.requests, READS + WRITES,
      'every plain READ and WRITE timed once, by one executor or the other');
    t.equal(e.latency.count, EXECUTED, 'the export\'s latency holds every executed request');
    t.ok((e.latency.p50Us ?? 0) >= 2 && (e.latency.p99Us ?? 0) >= (e.latency.p50Us ?? 0));
    t.equal(report.servers[0]?.leases, 1, 'the VD is leased while a client uses it');
    t.ok((report.servers[0]?.catalogCommits['acquireLease']?.count ?? 0) >= 1);

    const human = await runXvd(['status'], { catalog });
    t.equal(human.code, 0, human.stderr);
    t.match(human.stdout, /export 1\/xvda {2}1 connection/);
    t.match(human.stdout, new RegExp(`WRITE +${WRITES} +320\\.0 KiB`));
    t.match(human.stdout, /errors EINVAL 1/);
    t.match(human.stdout, /127\.0\.0\.1:\d+ +- +no +datapath/);

    t.equal(await client.close(), 0);
    const after = await statusUntil(catalog, (r) => xvda(r)?.connections.length === 0);
    t.equal(xvda(after)?.commands['WRITE']?.requests, WRITES, 'a closed connection stays counted');
    await stopChild(serve.child);
    t.equal(serve.child.exitCode, 0);
    t.notOk(fs.existsSync(server.controlPath ?? ''), 'the control socket is removed at stop');
    t.same(await statusOf(catalog), { catalog, servers: [], notes: [] });
  });

t.test('on the JS path every request is timed there, and a fence and its refusals are counted',
  async (t) => {
    if (await skipWithoutLibnbd()) return t.skip('python3-libnbd missing', () => undefined);
    const dir = t.testdir();
    const runtimeDir = shortTempDir(t);
    const catalog = await makeStatusCatalog(dir);
    const serve = await startServe(t, catalog, [],
      { XVD_DATAPATH: 'off', XDG_RUNTIME_DIR: runtimeDir });
    const beside = path.join(dir, '.xvd-control', `${serve.child.pid}.sock`);
    const expected = Buffer.byteLength(beside) <= 107 ? beside
      : path.join(runtimeDir, `xvd-control-${process.getuid?.() ?? 0}`, `${serve.child.pid}.sock`);
    t.equal(serve.document.server.controlPath, expected, 'too long beside: in the runtime dir');

    const client = startClient(t, serve.uri);
    await client.waitFor(/^ready$/);
    const e = xvda(await statusUntil(catalog, isCounted));
    t.match(e?.connections[0], { executor: 'js', reason: 'XVD_DATAPATH=off' });
    t.equal(e?.datapath.requests, 0);
    t.equal(e?.commands['READ']?.latency.count, READS, 'each executed READ timed by JS');
    t.equal(e?.commands['WRITE']?.latency.count, WRITES);
    t.equal(e?.commands['FLUSH']?.latency.count, 1);
    t.ok((e?.latency.sumSeconds ?? 0) > 0, 'JS keeps the sum of its times');

    const removed = await runXvd(['vbd', 'remove', 'xvda', '--domain', '1'], { catalog });
    t.equal(removed.code, 0, removed.stderr);
    // the server fences when its catalog poll sees the VBD gone
    const fencedNow = await statusUntil(catalog, (r) => r.servers[0]?.fences === 1);
    t.equal(fencedNow.servers[0]?.fences, 1, 'the fence is counted');
    client.send('again');
    t.equal(await client.waitFor(/^again/), 'again: errno ESHUTDOWN');
    const fenced = await statusUntil(catalog, (r) => xvda(r)?.errors['ESHUTDOWN'] === 1);
    t.same(xvda(fenced)?.errors, { EINVAL: 1, ESHUTDOWN: 1 });
    await client.close();
    await stopChild(serve.child);
    t.notOk(fs.existsSync(expected));
  });

t.test('a TLS client shows as such, with the domain its PSK identity names', async (t) => {
  if (await skipWithoutLibnbd()) return t.skip('python3-libnbd missing', () => undefined);
  const dir = shortTempDir(t);
  const catalog = await makeStatusCatalog(dir);
  const psk = path.join(dir, 'keys.psk');
  fs.writeFileSync(psk, `1:${'ab'.repeat(32)}\n`);
  const serve = await startServe(t, catalog, ['--tls', 'require', '--tls-psk', psk]);
  t.equal(serve.document.server.tls, 'require');
  const uri = serve.uri.replace('nbd://', 'nbds://1@') + `?tls-psk-file=${psk}`;
  const client = startClient(t, uri);
  await client.waitFor(/^ready$/);
  const e = xvda(await statusUntil(catalog, isCounted));
  t.match(e?.connections[0], { tls: true, domain: 1, executor: 'js', reason: 'TLS' });
  t.equal(e?.commands['WRITE']?.requests, WRITES);
  await client.close();
  await stopChild(serve.child);
});

t.test('a killed server is skipped with a note; the next server sweeps its socket', async (t) => {
  const dir = shortTempDir(t);
  const catalog = await makeStatusCatalog(dir);
  const first = await startServe(t, catalog);
  const socket = first.document.server.controlPath ?? '';
  first.child.kill('SIGKILL');
  await new Promise((resolve) => first.child.once('exit', resolve));
  const report = await statusOf(catalog);
  t.same(report.servers, []);
  t.match(report.notes, [new RegExp(`^server \\d+ \\(pid ${first.child.pid}\\) is not running`)]);
  t.ok(fs.existsSync(socket), 'a killed server leaves its socket');
  const human = await runXvd(['status'], { catalog });
  t.match(human.stdout, /^no server is running on .*\nnote: server \d+ \(pid \d+\) is not running/);

  const second = await startServe(t, catalog);
  t.notOk(fs.existsSync(socket), 'the next server removed it');
  const now = await statusOf(catalog);
  t.same(now.servers.map((s) => s.server.pid), [second.child.pid]);
  t.same(now.notes, [], 'the dead row went when the second server registered');
  await stopChild(second.child);
});

t.test('--watch with --json is refused as one line, exit 2', async (t) => {
  const catalog = await makeStatusCatalog(t.testdir());
  const result = await runXvd(['status', '--watch', '--json'], { catalog });
  t.equal(result.code, 2);
  t.match(result.stderr, /^xvd: status: --watch is a view for people: not with --json\n$/);
});
