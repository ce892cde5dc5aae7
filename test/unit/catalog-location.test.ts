/**
 * catalog/location.ts and the pure parts of catalog/ceph-sqlite.ts: `ceph:POOL/NAME` and
 * `ceph:POOL/NAMESPACE/NAME` name a catalog in RADOS, anything else a local file, a malformed
 * ceph: text is a usage error; the configuration is CEPH_CONF (default /etc/ceph/ceph.conf)
 * unless CEPH_ARGS names the monitors; CEPH_ARGS gets xvd's mount timeout unless the user set it.
 * Opening one without a configuration fails in one line, before libcephsqlite could abort.
 */
import t from 'tap';
import { openCatalog } from '../../src/catalog';
import { cephArgsOf, cephConfOf } from '../../src/catalog/ceph-sqlite';
import { catalogLocationOf, cephFileNameOf, isCephCatalog } from '../../src/catalog/location';

t.test('catalog texts', async (t) => {
  t.same(catalogLocationOf('/var/lib/xvd/catalog.sqlite'),
    { kind: 'file', path: '/var/lib/xvd/catalog.sqlite' });
  t.same(catalogLocationOf('./ceph:x'), { kind: 'file', path: './ceph:x' });
  const plain = catalogLocationOf('ceph:rbd/xvd-catalog');
  t.same(plain, { kind: 'ceph', pool: 'rbd', namespace: '', name: 'xvd-catalog' });
  const spaced = catalogLocationOf('ceph:pool.1/ns_2/cat.db');
  t.same(spaced, { kind: 'ceph', pool: 'pool.1', namespace: 'ns_2', name: 'cat.db' });
  if (plain.kind === 'ceph' && spaced.kind === 'ceph') {
    t.equal(cephFileNameOf(plain), 'rbd:/xvd-catalog');
    t.equal(cephFileNameOf(spaced), 'pool.1:ns_2/cat.db');
  }
  for (const bad of ['ceph:', 'ceph:rbd', 'ceph:rbd/', 'ceph:/x', 'ceph:a/b/c/d', 'ceph:a b/c']) {
    t.throws(() => catalogLocationOf(bad), { code: 'ERR_USAGE' }, bad);
  }
  t.ok(isCephCatalog('ceph:rbd/x'));
  t.notOk(isCephCatalog('/ceph:rbd/x'));
});

t.test('where the Ceph configuration is, and the CEPH_ARGS xvd adds', async (t) => {
  t.equal(cephConfOf({}), '/etc/ceph/ceph.conf');
  t.equal(cephConfOf({ CEPH_CONF: '/tmp/c.conf' }), '/tmp/c.conf');
  t.equal(cephConfOf({ CEPH_ARGS: '--mon_host 127.0.0.1:3300 --keyring k' }), null);
  t.equal(cephConfOf({ CEPH_ARGS: '-m 127.0.0.1' }), null);
  t.equal(cephArgsOf(''), '--client_mount_timeout=5');
  t.equal(cephArgsOf(' --id xvd '), '--id xvd --client_mount_timeout=5');
  t.equal(cephArgsOf('--id xvd --client-mount-timeout=30'), '--id xvd --client-mount-timeout=30');
});

t.test('a catalog in RADOS without a Ceph configuration fails in one line', async (t) => {
  const saved = process.env['CEPH_CONF'];
  process.env['CEPH_CONF'] = `${t.testdir()}/missing.conf`;
  t.teardown(() => {
    if (saved === undefined) delete process.env['CEPH_CONF'];
    else process.env['CEPH_CONF'] = saved;
  });
  t.throws(() => openCatalog('ceph:rbd/xvd'), { code: 'ERR_CATALOG_OPEN',
    message: /^catalog: ceph:rbd\/xvd: no Ceph configuration: .*missing\.conf is missing/ });
});
