/**
 * `xvd check` on VBD and lease rows: a healthy catalog with every kind of VBD (vd:, phy:,
 * extents:, shared at expert levels 1, dangling) and leases (a running server, a server that is
 * not running) checks clean; each corruption, made with raw SQL on a copy of that SQLite file
 * (foreign keys and CHECK constraints off, as a bad tool or a damaged file would), is reported
 * as one `fault:` line and exits 4. Stale leases of a server that is not running are a note
 * and exit 0.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { openCatalog } from '../../src/catalog';
import { makeImage, runXvd, type CliResult } from '../helpers/cli';

const MIB = 1024 * 1024;

async function ok(args: string[], catalog: string): Promise<string> {
  const result = await runXvd(args, { catalog });
  if (result.code !== 0) throw new Error(`xvd ${args.join(' ')}: ${result.code}: ${result.stderr}`);
  return result.stdout.trim();
}

interface Healthy {
  catalog: string;
  pool: string;
  raw: string;
}

/**
 * Pool a.img of 16 extents of 1 MiB: VD 1 [0, 3), VD 2 [3, 5) (deleted, its VBD dangles),
 * VD 3 [5, 6) deleted and taken by VD 4 [6, 15) + [5, 6); [15, 16) under an extents: VBD.
 * raw.img (4 MiB, not in the pool) under a writable phy: VBD and a read-only extents: VBD.
 */
async function healthy(dir: string): Promise<Healthy> {
  const catalog = path.join(dir, 'c.sqlite');
  const pool = fs.realpathSync(makeImage(path.join(dir, 'a.img'), 16 * MIB));
  const raw = fs.realpathSync(makeImage(path.join(dir, 'raw.img'), 4 * MIB));
  await ok(['format', pool, '--extent-size', '1M'], catalog);
  for (const size of ['3M', '2M', '1M']) await ok(['create', size], catalog);
  const add = (source: string, device: string, domain: string, mode: string, expert = '0') =>
    ok(['vbd', 'add', source, device, '--domain', domain, '--mode', mode, '--expert', expert],
      catalog);
  await add('vd:1', 'xvda', '1', 'w');
  await add('vd:1', 'xvdb', '2', 'r', '1');
  await add(`phy:${raw}`, 'xvdc', '1', 'w');
  await add(`extents:${raw}:0+1M`, 'xvdd', '3', 'r', '1');
  await add('vd:2', 'xvde', '4', 'w');
  await add(`extents:${pool}:15M+1M`, 'xvdf', '5', 'r');
  await ok(['delete', '3'], catalog);
  await ok(['create', '10M'], catalog);
  await ok(['delete', '2'], catalog);
  const opened = openCatalog(catalog, { create: false });
  const server = opened.registerServer(); // this test process: a running server
  opened.acquireLease(server, 1);
  opened.acquireLease(server, 4);
  opened.close();
  return { catalog, pool, raw };
}

/** A copy of the healthy catalog with `sql` applied, constraints off. */
function corrupted(t: Test, source: string, sql: string): string {
  const file = path.join(t.testdir(), 'c.sqlite');
  fs.copyFileSync(source, file);
  const db = new Database(file);
  db.pragma('foreign_keys = OFF');
  db.pragma('ignore_check_constraints = ON');
  db.exec(sql);
  db.close();
  return file;
}

function faultsOf(result: CliResult): string[] {
  return result.stdout.split('\n').filter((line) => line.startsWith('fault: '));
}

let base: Healthy;

t.before(async () => {
  const dir = path.join(t.testdir(), 'healthy');
  fs.mkdirSync(dir);
  base = await healthy(dir);
  const db = new Database(base.catalog);
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
});

t.test('the healthy catalog checks clean: exit 0, no faults, no notes', async (t) => {
  const result = await runXvd(['check'], { catalog: base.catalog });
  t.equal(result.code, 0, result.stdout + result.stderr);
  t.equal(result.stdout, 'catalog ok\n');
  t.equal(result.stderr, '');
  const json = await runXvd(['check', '--json'], { catalog: base.catalog });
  t.same(JSON.parse(json.stdout), { ok: true, faults: [], notes: [] });
  const db = new Database(base.catalog, { readonly: true });
  t.same(db.prepare('SELECT device, expert FROM vbds ORDER BY id').all(),
    [['xvda', 0], ['xvdb', 1], ['xvdc', 0], ['xvdd', 1], ['xvde', 0], ['xvdf', 0]]
      .map(([device, expert]) => ({ device, expert })), 'each VBD keeps its expert level');
  t.equal((db.prepare('SELECT COUNT(*) AS n FROM vd_losses WHERE vd_id = 3').get() as
    { n: number }).n, 1, 'VD 3 lost its extent to VD 4');
  db.close();
});

interface Case {
  name: string;
  sql: (h: Healthy) => string;
  fault: RegExp;
}

const vbdId = (device: string) => `(SELECT id FROM vbds WHERE device = '${device}')`;

const cases: Case[] = [
  { name: 'a vd: VBD names a VD that does not exist',
    sql: () => "UPDATE vbds SET vd_id = 99 WHERE device = 'xvda'",
    fault: /^fault: VBD 1\/xvda: names VD 99, which does not exist$/ },
  { name: 'a vd: VBD carries extent ranges',
    sql: (h) => `INSERT INTO vbd_ranges VALUES (${vbdId('xvda')}, 0, '${h.raw}', 0, 512)`,
    fault: /^fault: VBD 1\/xvda: a vd: source carries a path, size or extent ranges$/ },
  { name: 'a phy: VBD carries extent ranges',
    sql: (h) => `INSERT INTO vbd_ranges VALUES (${vbdId('xvdc')}, 0, '${h.raw}', 0, 512)`,
    fault: /^fault: VBD 1\/xvdc: a phy: source carries a VD or extent ranges$/ },
  { name: 'a phy: VBD without a path',
    sql: () => "UPDATE vbds SET phy_path = '' WHERE device = 'xvdc'",
    fault: /^fault: VBD 1\/xvdc: a phy: source without a path$/ },
  { name: 'a phy: VBD without a size',
    sql: () => "UPDATE vbds SET phy_size = NULL WHERE device = 'xvdc'",
    fault: /^fault: VBD 1\/xvdc: range .*raw\.img offset 0 length 0 is not a byte range$/ },
  { name: 'a phy: VBD of a pool member larger than the member',
    sql: (h) => "DELETE FROM vbd_ranges; DELETE FROM vbds WHERE device <> 'xvdc'; "
      + `UPDATE vbds SET phy_path = '${h.pool}', phy_size = ${17 * MIB}, expert = 2 `
      + "WHERE device = 'xvdc'",
    fault: /^fault: VBD 1\/xvdc: range .*a\.img \[0, 17825792\) ends past pool member 1 /},
  { name: 'an extents: VBD range past the end of its pool member',
    sql: () => `UPDATE vbd_ranges SET length = ${2 * MIB} WHERE vbd_id = ${vbdId('xvdf')}`,
    fault: /^fault: VBD 5\/xvdf: range .*a\.img \[15728640, 17825792\) ends past pool member 1 \(16777216 bytes\)$/ },
  { name: 'an extents: VBD range offset beyond a safe integer',
    sql: () => `UPDATE vbd_ranges SET offset = 9007199254740993 WHERE vbd_id = ${vbdId('xvdd')}`,
    fault: /^fault: VBD 3\/xvdd: range .*raw\.img offset 9007199254740992 length 1048576 is not a byte range$/ },
  { name: 'an extents: VBD with no ranges',
    sql: () => `DELETE FROM vbd_ranges WHERE vbd_id = ${vbdId('xvdd')}`,
    fault: /^fault: VBD 3\/xvdd: holds 0 extent ranges, not 1 to 65536$/ },
  { name: 'an extents: VBD with ranges misnumbered',
    sql: () => `UPDATE vbd_ranges SET seq = 3 WHERE vbd_id = ${vbdId('xvdd')}`,
    fault: /^fault: VBD 3\/xvdd: extent ranges are not numbered 0 to 0$/ },
  { name: 'an extents: VBD carrying a size',
    sql: () => "UPDATE vbds SET phy_size = 4096 WHERE device = 'xvdd'",
    fault: /^fault: VBD 3\/xvdd: an extents: source carries a VD, path or size$/ },
  { name: 'extent ranges of a VBD row that does not exist',
    sql: (h) => `INSERT INTO vbd_ranges VALUES (77, 0, '${h.raw}', 0, 512)`,
    fault: /^fault: extent ranges name VBD row 77, which does not exist$/ },
  { name: 'a device name with a slash',
    sql: () => "UPDATE vbds SET device = 'xv/da' WHERE device = 'xvda'",
    fault: /^fault: VBD 1\/xv\/da: device name 'xv\/da' is not one vbd add accepts$/ },
  { name: 'an expert level out of range',
    sql: () => "UPDATE vbds SET expert = 7 WHERE device = 'xvdb'",
    fault: /^fault: VBD 2\/xvdb: expert level 7 is not 0, 1 or 2$/ },
  { name: 'an unknown source kind',
    sql: () => "UPDATE vbds SET source_kind = 'nfs' WHERE device = 'xvdb'",
    fault: /^fault: VBD 2\/xvdb: unknown source kind 'nfs'$/ },
  { name: 'a reader sharing a writer\'s VD at expert level 0',
    sql: () => "UPDATE vbds SET expert = 0 WHERE device = 'xvdb'",
    fault: /^fault: VBD 2\/xvdb \(r\) shares .*a\.img \[0, 3145728\) with VBD 1\/xvda \(w\): needs expert level 1, was added with 0$/ },
  { name: 'two writers on one phy: file at expert level 1',
    sql: () => "UPDATE vbds SET mode = 'w' WHERE device = 'xvdd'",
    fault: /^fault: VBD 3\/xvdd \(w\) shares .*raw\.img \[0, 1048576\) with VBD 1\/xvdc \(w\): needs expert level 2, was added with 1$/ },
  { name: 'an extents: VBD over a live VD\'s extents at expert level 0',
    sql: () => `UPDATE vbd_ranges SET offset = ${14 * MIB} WHERE vbd_id = ${vbdId('xvdf')}`,
    fault: /^fault: VBD 5\/xvdf \(r\) shares .*a\.img \[14680064, 15728640\) with pool VD 4: needs expert level 1, was added with 0$/ },
  { name: 'a lease by a server that does not exist',
    sql: () => 'UPDATE leases SET server_id = 42 WHERE vd_id = 1',
    fault: /^fault: lease of VD 1 by server 42: the server does not exist$/ },
  { name: 'a lease of a VD that does not exist',
    sql: () => 'UPDATE leases SET vd_id = 42 WHERE vd_id = 1',
    fault: /^fault: lease of VD 42 by server 1: the VD does not exist$/ },
  { name: 'a lease at a generation the VD never had',
    sql: () => 'UPDATE leases SET generation = 1000 WHERE vd_id = 1',
    fault: /^fault: lease of VD 1 by server 1: generation 1000 is not one the VD has had \(1 to \d+\)$/ },
  { name: 'a running server\'s lease on a VD whose extents went to another VD',
    sql: () => 'INSERT INTO leases VALUES (1, 3, 1)',
    fault: /^fault: lease of VD 3 by server 1: the server is running, yet extents of the VD went to VD 4 \(invariant 2\)$/ },
];

for (const c of cases) {
  t.test(`check reports ${c.name} and exits 4`, async (t) => {
    const catalog = corrupted(t, base.catalog, c.sql(base));
    const result = await runXvd(['check'], { catalog });
    t.equal(result.code, 4, result.stdout + result.stderr);
    t.match(faultsOf(result), [c.fault], result.stdout);
    t.equal(faultsOf(result).length, 1, 'that fault only');
    t.match(result.stderr, /^xvd: check: 1 fault\(s\) found\n$/);
  });
}

t.test('leases of a server that is not running are a note, not a fault: exit 0', async (t) => {
  const catalog = corrupted(t, base.catalog, "UPDATE servers SET pid_start_time = 'gone'");
  const result = await runXvd(['check'], { catalog });
  t.equal(result.code, 0, result.stdout + result.stderr);
  t.match(result.stdout, /^note: server 1 \(pid \d+\) is not running: its leases of VD 1, 4 are stale and hold nothing; the next xvd serve removes it\ncatalog ok\n$/);
  const json = await runXvd(['check', '--json'], { catalog });
  const report = JSON.parse(json.stdout) as { ok: boolean; faults: string[]; notes: string[] };
  t.same([report.ok, report.faults, report.notes.length], [true, [], 1]);
});

t.test('a VBD added before expert levels were recorded is not judged', async (t) => {
  const catalog = corrupted(t, base.catalog,
    "UPDATE vbds SET expert = NULL, mode = 'w' WHERE device = 'xvdb'");
  const result = await runXvd(['check'], { catalog });
  t.equal(result.code, 0, result.stdout + result.stderr);
});
