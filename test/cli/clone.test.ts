/**
 * `xvd clone` through the built CLI in spawned processes, on a real SQLite catalog: the new id at
 * once (a 1 TiB origin included), clones of clones, `show` with shared and own bytes, `free`
 * counting each extent once, `check` clean; the refusals (deleted, zeroing, unknown origin) are
 * one line, exit 1, and leave the catalog unchanged; and the live handshake, with a lease row
 * this test controls: `xvd clone` of a leased origin prints its id only once the lease shows the
 * origin's new generation, and deletes the clone when it never does.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { openCatalog } from '../../src/catalog';
import { LIMITS } from '../../src/limits';
import { makeImage, runXvd, snapshotCatalog, spawnXvd } from '../helpers/cli';

const MIB = 1024 * 1024;

async function ok(args: string[], catalog: string): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.code}: ${result.stderr}`);
  return result.stdout.trim();
}

async function pool(dir: string, sizeBytes = 64 * MIB): Promise<string> {
  const catalog = path.join(dir, 'c.sqlite');
  makeImage(path.join(dir, 'pool.img'), sizeBytes);
  await ok(['format', path.join(dir, 'pool.img'), '--extent-size', '1M'], catalog);
  return catalog;
}

t.test('clone, clone of a clone, show, free and check', async (t) => {
  const catalog = await pool(t.testdir());
  const a = await ok(['create', '10M', '--name', 'golden'], catalog);
  const b = await ok(['clone', a, '--name', 'b'], catalog);
  const c = await ok(['clone', b, '--expiry', '3600'], catalog);
  t.same([a, b, c], ['1', '2', '3'], 'each prints only its id');
  const shown = JSON.parse(await ok(['show', c, '--json'], catalog)) as Record<string, unknown>;
  t.equal(shown['shared_bytes'], 10 * MIB);
  t.equal(shown['own_bytes'], 0);
  t.equal(shown['origin'], 2);
  t.not(shown['expires_at'], null);
  const human = await ok(['show', b], catalog);
  t.match(human, /shared 10\.00 MiB, own 0 B, clone of VD 1/);
  const free = JSON.parse(await ok(['free', '--json'], catalog)) as { free: number };
  t.equal(free.free, 54 * MIB, 'shared extents count once');
  t.equal(await ok(['check'], catalog), 'catalog ok');
  await ok(['delete', a], catalog);
  await ok(['delete', b], catalog);
  t.equal((JSON.parse(await ok(['free', '--json'], catalog)) as { free: number }).free, 54 * MIB,
    'the live clone keeps every extent out of the pool');
  await ok(['undelete', a], catalog);
  t.equal(await ok(['check'], catalog), 'catalog ok');
});

t.test('a 1 TiB origin clones in one short transaction', async (t) => {
  const catalog = await pool(t.testdir(), 1024 * 1024 * MIB + MIB);
  const a = await ok(['create', '1T', '--no-zero'], catalog);
  const started = process.hrtime.bigint();
  const b = await ok(['clone', a], catalog);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.equal(b, '2');
  t.ok(ms < 10_000, `clone of 1 TiB took ${Math.round(ms)} ms, process start included`);
  const shown = JSON.parse(await ok(['show', b, '--json'], catalog)) as Record<string, unknown>;
  t.equal(shown['shared_bytes'], 1024 * 1024 * MIB);
});

t.test('a clone of an unusable origin is refused in one line, the catalog unchanged',
  async (t) => {
    const catalog = await pool(t.testdir());
    const dead = await ok(['create', '1M'], catalog);
    await ok(['delete', dead], catalog);
    const handle = openCatalog(catalog);
    const zeroing = handle.createVd({ size: MIB }).id;
    handle.close();
    const before = snapshotCatalog(catalog);
    for (const [id, why] of [[dead, /is deleted/], [String(zeroing), /still being zeroed/],
      ['77', /no VD 77/], ['x', /./]] as const) {
      const result = await runXvd(['clone', id], { catalog });
      t.not(result.code, 0, `clone ${id} fails`);
      t.equal(result.stdout, '');
      t.match(result.stderr, why);
      t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
      t.equal(snapshotCatalog(catalog), before, 'unchanged');
    }
  });

t.test('clone of a leased origin waits for the lease to show the new generation', async (t) => {
  const catalog = await pool(t.testdir());
  const a = Number(await ok(['create', '4M'], catalog));
  const server = openCatalog(catalog);
  t.teardown(() => server.close());
  const serverId = server.registerServer();
  server.acquireLease(serverId, a);
  const child = spawnXvd(['clone', String(a)], { catalog });
  let stdout = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const deadline = Date.now() + 20_000;
  while (server.listVds({ all: true }).length < 2 && Date.now() < deadline) await sleep(20);
  const cloneId = server.listVds({ all: true })[1]!.id;
  await sleep(300);
  t.equal(child.exitCode, null, 'still waiting while the lease shows the old generation');
  t.equal(stdout, '');
  t.equal(server.isCloneSwitched(cloneId), false);
  server.acquireLease(serverId, a); // what a server does once it switched to copy-on-write
  t.equal(await exited, 0);
  t.equal(stdout.trim(), String(cloneId), 'then prints the id');
});

t.test('clone deletes its clone when the origin\'s server never switches', async (t) => {
  const catalog = await pool(t.testdir());
  const a = Number(await ok(['create', '4M'], catalog));
  const server = openCatalog(catalog);
  t.teardown(() => server.close());
  server.acquireLease(server.registerServer(), a);
  const result = await runXvd(['clone', String(a)], { catalog,
    timeoutMs: LIMITS.cloneSwitchWaitMs + 30_000 });
  t.equal(result.code, 1);
  t.match(result.stderr, /did not switch it to copy-on-write within 10 s; the clone \(VD 2\) was/);
  t.equal(server.getVd(2).state, 'deleted');
  t.equal(await ok(['check'], catalog), 'catalog ok');
});

t.test('check reports a wrong owner count, and a lost reserve, as faults (exit 4)', async (t) => {
  const catalog = await pool(t.testdir());
  const a = await ok(['create', '3M'], catalog);
  await ok(['clone', a], catalog);
  const db = new Database(catalog);
  db.pragma('foreign_keys = OFF'); // as a bad tool or a damaged file would
  db.prepare('UPDATE extent_owners SET owners = 5').run();
  db.prepare('INSERT INTO cow_reserve VALUES (9, 1, 40, 2)').run();
  db.close();
  const result = await runXvd(['check'], { catalog });
  t.equal(result.code, 4);
  t.match(result.stdout, /extents \[0, 3\) have owner count 5, yet 2 VDs map them/);
  t.match(result.stdout, /extents \[40, 42\) are owned by both free and the reserve of VD 9/);
  t.match(result.stdout, /a reserve names VD 9, which does not exist/);
});
