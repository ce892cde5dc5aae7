/**
 * catalog/location: where a catalog lives, read from the text a user gives (--catalog or
 * XVD_CATALOG). Anything but `ceph:…` is a local SQLite file, the embedded default that
 * single-host users keep. `ceph:POOL/NAME` (or `ceph:POOL/NAMESPACE/NAME`) is a database kept in
 * RADOS through Ceph's libcephsqlite (ceph-sqlite.ts), shared by every host that names it.
 *
 * Names are what libcephsqlite accepts: pool, namespace and name of letters, digits, `.`, `_`
 * and `-`. A local file whose name starts with `ceph:` is still reachable as `./ceph:…`.
 */
import { UsageError } from '../errors';

export type CatalogLocation =
  | { kind: 'file'; path: string }
  | { kind: 'ceph'; pool: string; namespace: string; name: string };

const CEPH_PREFIX = 'ceph:';
const CEPH_SPEC = /^ceph:([A-Za-z0-9._-]+)\/(?:([A-Za-z0-9._-]+)\/)?([A-Za-z0-9._-]+)$/;

/** Whether the catalog text names a catalog in RADOS. */
export function isCephCatalog(text: string): boolean {
  return text.startsWith(CEPH_PREFIX);
}

export function catalogLocationOf(text: string): CatalogLocation {
  if (!isCephCatalog(text)) return { kind: 'file', path: text };
  const match = CEPH_SPEC.exec(text);
  if (match === null || match[1] === undefined || match[3] === undefined) {
    throw new UsageError('ERR_USAGE', `catalog: ${text}: expected ceph:POOL/NAME or ` +
      'ceph:POOL/NAMESPACE/NAME (letters, digits, ".", "_", "-")');
  }
  return { kind: 'ceph', pool: match[1], namespace: match[2] ?? '', name: match[3] };
}

/** The file name the ceph VFS parses: `POOL:NAMESPACE/NAME`. */
export function cephFileNameOf(location: { pool: string; namespace: string; name: string },
): string {
  return `${location.pool}:${location.namespace}/${location.name}`;
}
