/**
 * Finding the cluster for rbd: members (src/ceph/client.ts): a missing, unreadable or bad
 * CEPH_CONF, one that names no monitors, and one whose monitor never answers each give exactly
 * one line on stderr, exit 1, no abort and no line of librados's own, and leave the catalog
 * unchanged. A malformed rbd: path is refused before anything connects. No cluster is needed:
 * the unreachable monitor is a closed port on 127.0.0.1 (CEPH_ARGS shortens the wait).
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { runXvd, snapshotCatalog, type CliResult } from '../helpers/cli';
import { freePort } from '../helpers/process';

function assertOneLine(t: Test, result: CliResult, pattern: RegExp): void {
  t.equal(result.code, 1, `exit 1: ${result.stderr.trim()}`);
  t.equal(result.signal, null, 'no signal (no abort)');
  t.equal(result.stdout, '', 'nothing on stdout');
  t.match(result.stderr, /^xvd: [^\n]+\n$/, 'exactly one line on stderr');
  t.match(result.stderr, pattern);
}

t.test('a bad CEPH_CONF is one clean line, the catalog unchanged', async (t) => {
  const dir = t.testdir();
  const catalog = path.join(dir, 'catalog.sqlite');
  const created = await runXvd(['list'], { catalog });
  t.equal(created.code, 0, 'the catalog exists');
  const before = snapshotCatalog(catalog);
  const garbage = path.join(dir, 'garbage.conf');
  fs.writeFileSync(garbage, 'mon host = 127.0.0.1\nthis [ is not\n\u0000 a ceph configuration\n');
  const noMon = path.join(dir, 'nomon.conf');
  fs.writeFileSync(noMon, '[global]\nkeyring = /nonexistent/keyring\n');
  const unreadable = path.join(dir, 'unreadable.conf');
  fs.writeFileSync(unreadable, '[global]\n');
  fs.chmodSync(unreadable, 0);
  const port = await freePort();
  const closed = path.join(dir, 'closed.conf');
  fs.writeFileSync(closed, `[global]\nmon host = v2:127.0.0.1:${port}\n` +
    `keyring = ${path.join(dir, 'keyring')}\n`);
  fs.writeFileSync(path.join(dir, 'keyring'),
    '[client.admin]\n\tkey = AQBcZ1Bnbm5LHxAA3E8iGD0W4ny9DWj9dX8ZYA==\n');

  const cases: { name: string; conf: string; pattern: RegExp; args?: Record<string, string> }[] = [
    { name: 'missing', conf: path.join(dir, 'missing.conf'),
      pattern: /missing\.conf: ENOENT: no readable Ceph configuration there.*CEPH_CONF/ },
    { name: 'a directory', conf: dir, pattern: /EINVAL: no readable Ceph configuration/ },
    { name: 'garbage', conf: garbage, pattern: /garbage\.conf: rados_conf_read_file: EINVAL/ },
    { name: 'without monitors', conf: noMon, pattern: /names no monitors \(mon host\)/ },
    { name: 'a monitor that never answers', conf: closed, args: { CEPH_ARGS: '' },
      pattern: /rados_connect: ETIMEDOUT: no monitor answered within 10s/ },
  ];
  if (process.getuid?.() !== 0) {
    cases.push({ name: 'unreadable', conf: unreadable, pattern: /EACCES: no readable/ });
  }
  for (const c of cases) {
    const result = await runXvd(['format', 'rbd:rbd/img', '--size', '64M'],
      { catalog, env: { CEPH_CONF: c.conf, ...c.args }, timeoutMs: 60_000 });
    assertOneLine(t, result, c.pattern);
    t.match(result.stderr, /^xvd: ceph: client\.admin with /, `${c.name}: names the client`);
    t.equal(snapshotCatalog(catalog), before, `${c.name}: the catalog is unchanged`);
  }
  const named = await runXvd(['--ceph-id', 'xvd', 'format', 'rbd:rbd/img'],
    { catalog, env: { CEPH_CONF: noMon } });
  assertOneLine(t, named, /^xvd: ceph: client\.xvd with /);
});

t.test('a malformed rbd: path is refused before connecting', async (t) => {
  const catalog = path.join(t.testdir(), 'catalog.sqlite');
  for (const bad of ['rbd:', 'rbd:pool', 'rbd:pool/', 'rbd:/image', 'rbd:p/i@snap', 'rbd:p/n/i']) {
    const result = await runXvd(['format', bad, '--size', '64M'],
      { catalog, env: { CEPH_CONF: '/nonexistent/ceph.conf' } });
    assertOneLine(t, result, new RegExp(`${bad.replace(/[/@]/g, '.')}: not rbd:POOL/IMAGE`));
  }
});
