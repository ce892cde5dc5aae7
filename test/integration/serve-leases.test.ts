/**
 * Leases of a real `xvd serve` process (the built CLI, so its catalog writer thread runs from
 * dist/): an export opened, closed and reopened in quick succession, and opened by several
 * clients at once, leaves exactly the leases it should (one while any client is connected, none
 * after the last one left); `xvd check` finds nothing wrong; SIGTERM releases every lease and
 * unregisters the server. A serve that cannot listen exits at once (its writer thread closed),
 * registered nowhere.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { runXvd, startServeOnSocket } from '../helpers/cli';
import { connectUnix, type ScriptedClient } from '../helpers/nbd-client';
import { shortTempDir, stopChild } from '../helpers/process';
import { makeServedCatalog, serversAndLeases, type CatalogServers } from '../helpers/serve-catalog';

const REOPENS = 20;
const CONCURRENT = 4;
const SETTLE_MS_MAX = 10_000;

async function openRead(socket: string, name: string): Promise<ScriptedClient> {
  const client = await connectUnix(socket);
  await client.handshake({ name });
  await client.readData(0, 4096);
  return client;
}

/** Disconnects cleanly (NBD_CMD_DISC) and waits for the server to close the socket. */
async function disconnect(client: ScriptedClient): Promise<void> {
  client.request({ type: 2 });
  await client.waitClosed();
}

/** Polls until the catalog's leases are `vdIds` (bounded), and returns what it last saw. */
async function leasesSettle(catalog: string, vdIds: number[]): Promise<CatalogServers> {
  const deadline = Date.now() + SETTLE_MS_MAX;
  for (;;) {
    const seen = serversAndLeases(catalog);
    const leased = seen.leases.map((lease) => lease.vd_id);
    if (JSON.stringify(leased) === JSON.stringify(vdIds) || Date.now() > deadline) return seen;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function checkClean(t: Test, catalog: string, when: string): Promise<void> {
  const check = await runXvd(['check'], { catalog });
  t.equal(check.code, 0, `xvd check passes ${when}: ${check.stdout}${check.stderr}`);
}

t.test('open, close and reopen in quick succession leave exactly the leases expected',
  async (t) => {
    const catalog = await makeServedCatalog(t.testdir(), 2);
    const socket = path.join(shortTempDir(t), 'nbd.sock');
    const server = await startServeOnSocket(t, catalog, socket);

    for (let round = 0; round < REOPENS; round++) {
      const client = await openRead(socket, '1/xvda');
      if (round % 2 === 0) await disconnect(client);
      else client.end(); // abrupt: no NBD_CMD_DISC
    }
    const held = await openRead(socket, '1/xvdb');
    const settled = await leasesSettle(catalog, [2]);
    t.equal(settled.servers.length, 1, 'one server registered');
    t.same(settled.leases.map((lease) => lease.vd_id), [2],
      'after the reopens only the export still open is leased');
    await checkClean(t, catalog, 'while serving');

    const clients = await Promise.all(Array.from({ length: CONCURRENT },
      () => openRead(socket, '1/xvda')));
    t.same((await leasesSettle(catalog, [1, 2])).leases.map((lease) => lease.vd_id), [1, 2],
      'concurrent opens of one export share one lease');
    await Promise.all(clients.slice(1).map(disconnect));
    t.same(serversAndLeases(catalog).leases.map((lease) => lease.vd_id), [1, 2],
      'held while one client is left');
    await disconnect(clients[0]!);
    await disconnect(held);
    t.same((await leasesSettle(catalog, [])).leases, [], 'released after the last client left');
    await checkClean(t, catalog, 'after the clients left');

    const again = await openRead(socket, '1/xvda');
    await stopChild(server);
    t.equal(server.exitCode, 0, 'serve exits 0 on SIGTERM');
    again.end();
    t.same(serversAndLeases(catalog), { servers: [], leases: [] },
      'stop released every lease and unregistered');
    await checkClean(t, catalog, 'after stop');
  });

t.test('a serve that cannot listen exits with its usage error and leaves no server behind',
  async (t) => {
    const catalog = await makeServedCatalog(t.testdir(), 1);
    const notSocket = path.join(shortTempDir(t), 'file');
    fs.writeFileSync(notSocket, 'not a socket');
    const started = Date.now();
    const served = await runXvd(['serve', '--socket', notSocket], { catalog, timeoutMs: 20_000 });
    t.equal(served.code, 2, `exit 2: ${served.stderr}`);
    t.match(served.stderr, /exists and is not a socket/);
    t.ok(Date.now() - started < 15_000, 'promptly: nothing kept the process alive');
    t.same(serversAndLeases(catalog), { servers: [], leases: [] }, 'registered nowhere');
  });
