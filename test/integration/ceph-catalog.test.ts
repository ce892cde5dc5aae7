/**
 * A catalog in RADOS (`--catalog ceph:POOL/NAME`, catalog/ceph-sqlite.ts) on a real cluster,
 * through the built CLI: format (an RBD member), create, vbd add, list and check work as on a
 * file, and XVD_CATALOG names it too; another process sees every row; two creates at once get
 * two VDs (transactions serialise on the database's RADOS lock). Without a Ceph configuration, or with a cluster that cannot be reached, a
 * command fails in one line with exit 3 (catalog unusable), within seconds, instead of
 * libcephsqlite aborting the process or waiting 300 s.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { runXvd } from '../helpers/cli';
import { startCeph } from '../helpers/ceph';

const FAIL_FAST_MS = 20_000;

t.test('the catalog in RADOS, shared by processes, and its failures', async (t) => {
  const cluster = await startCeph(t);
  const catalog = `ceph:${cluster.pool}/xvd-catalog`;
  const env = cluster.env;
  const xvd = (args: string[], extra: Record<string, string> = {}): ReturnType<typeof runXvd> =>
    runXvd(args, { catalog, env: { ...env, ...extra } });

  const format = await xvd(['format', `rbd:${cluster.pool}/catalog-pool`, '--size', '64M']);
  t.equal(format.code, 0, `format an RBD member: ${format.stderr}`);
  const created = await xvd(['create', '8M', '--name', 'first']);
  t.equal(created.code, 0, `create: ${created.stderr}`);
  t.equal(created.stdout.trim(), '1', 'prints the new id');
  const added = await xvd(['vbd', 'add', 'vd:1', 'xvda', '--domain', '1', '--mode', 'w']);
  t.equal(added.code, 0, `vbd add: ${added.stderr}`);

  const both = await Promise.all([xvd(['create', '4M']), xvd(['create', '4M'])]);
  t.same(both.map((result) => result.code), [0, 0], 'two creates at once both succeed');
  t.same(both.map((result) => result.stdout.trim()).sort(), ['2', '3'], 'with two ids');

  const listed = await runXvd(['list', '--json'], { env: { ...env, XVD_CATALOG: catalog } });
  t.equal(listed.code, 0, 'XVD_CATALOG names it too');
  const vds = JSON.parse(listed.stdout) as { id: number; name: string | null }[];
  t.same(vds.map((vd) => vd.id), [1, 2, 3], 'another process sees every VD');
  t.equal(vds[0]?.name, 'first');
  const vbds = await xvd(['vbd', 'list']);
  t.match(vbds.stdout, /1\/xvda/, 'and the VBD');
  const check = await xvd(['check']);
  t.equal(check.code, 0, `xvd check: ${check.stdout}${check.stderr}`);
  t.match(check.stdout, /catalog ok/);

  const free = await xvd(['free']);
  t.match(free.stdout, /rbd:.*catalog-pool/, 'free lists the member');
});

t.test('no configuration, or an unreachable cluster: one line, exit 3, in seconds', async (t) => {
  const dir = t.testdir();
  const missing = path.join(dir, 'missing.conf');
  let started = Date.now();
  const none = await runXvd(['list'], { catalog: 'ceph:rbd/xvd', env: { CEPH_CONF: missing } });
  t.equal(none.code, 3, 'exit 3: the catalog is unusable');
  t.equal(none.stderr.trim().split('\n').length, 1, `one line: ${none.stderr}`);
  t.match(none.stderr, /no Ceph configuration: .*missing\.conf is missing/);
  t.ok(Date.now() - started < FAIL_FAST_MS);

  const conf = path.join(dir, 'unreachable.conf');
  fs.writeFileSync(conf, '[global]\nmon host = v2:127.0.0.1:9\nauth client required = none\n');
  started = Date.now();
  const down = await runXvd(['list'], { catalog: 'ceph:rbd/xvd', env: { CEPH_CONF: conf } });
  const tookMs = Date.now() - started;
  t.equal(down.code, 3, 'exit 3');
  t.equal(down.stderr.trim().split('\n').length, 1, `one line: ${down.stderr}`);
  t.match(down.stderr, /^xvd: catalog: ceph:rbd\/xvd: cannot open it in RADOS/);
  t.notMatch(down.stderr, /ceph_abort|Aborted/, 'no abort of the process');
  t.ok(tookMs < FAIL_FAST_MS, `within seconds (${tookMs} ms), not 300 s`);
});
