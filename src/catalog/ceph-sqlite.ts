/**
 * catalog/ceph-sqlite: opens a catalog kept in RADOS (`ceph:POOL/NAME`, location.ts) with
 * better-sqlite3 12 through Ceph's libcephsqlite (Debian: libsqlite3-mod-ceph), which registers
 * a `ceph` VFS that stores the database striped over RADOS objects and serialises every access
 * with a RADOS lock on its first object.
 *
 * Opening: better-sqlite3 12 builds SQLite with SQLITE_USE_URI=0 and takes no VFS name, so
 * `file:///pool:/name?vfs=ceph` would be a local path. xvd's own loadable extension
 * (native/src/sqlite-vfs.c, built beside the addon against the header better-sqlite3 ships, with
 * no Ceph dependency) adds xvd_default_vfs(NAME): the opener makes `ceph` the default VFS, opens
 * `POOL:NAMESPACE/NAME`, and at once makes the previous default (`unix`) the default again; the
 * connection stays on ceph and local files keep working. The default VFS is process-wide: the
 * switch lasts one synchronous constructor call, and no other catalog opens meanwhile in this
 * thread (the catalog writer thread opens its own only after the main thread's). Both
 * extensions are loaded into a bootstrap in-memory connection kept open for the life of the
 * thread: closing it would unload them with the VFS still registered. better-sqlite3 checks
 * that a file's directory exists locally; that check is skipped for this one call.
 *
 * Before libcephsqlite is loaded: it calls abort() when it finds no configuration or cannot
 * connect (an unreachable cluster after its 300 s mount timeout, a missing keyring, a refused
 * key), taking the process with it. So the configuration must be there (as
 * Ceph's tools find it: CEPH_CONF, by default /etc/ceph/ceph.conf, or --mon_host in CEPH_ARGS;
 * the keyring the configuration names, CEPH_KEYRING, and `--id` in CEPH_ARGS as usual), and
 * CEPH_ARGS gets client_mount_timeout (LIMITS.cephMountTimeoutS) unless the user set it;
 * libcephsqlite reads it once per process, at the first open. And the first open in a process
 * is tried in a child process first (probe(): one Node start and one connection, about 0.3 s),
 * so that whatever would abort is one line of error instead (XVD_CEPH_PROBED tells the threads
 * and children this process starts that it was done). The database lock keeps Ceph's
 * settings (Ceph 16 refuses every value of cephsqlite_lock_renewal_timeout: "below minimum
 * 100"): a process that dies or freezes holding it holds every host's catalog for up to 30 s,
 * after which the next locker breaks the lock and has the monitors blocklist the old holder
 * (cephsqlite_blocklist_dead_locker), and a holder that finds its lock lost aborts.
 *
 * Settings for RADOS latencies (one auto-committed write costs about 20 ms): rollback journal
 * in PERSIST mode (WAL needs EXCLUSIVE locking, which would shut every other host out; DELETE
 * would remove the journal's objects at every commit), 64 KiB pages for a new database (fewer
 * object operations), a larger page cache, temporary tables in memory (the ceph VFS has no
 * temporary files), busy_timeout as for files. Every mutator is already one transaction.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { cephFileNameOf, type CatalogLocation } from './location';

type Db = Database.Database;
type CephLocation = Extract<CatalogLocation, { kind: 'ceph' }>;

const DEFAULT_CONF = '/etc/ceph/ceph.conf';
const LIBCEPHSQLITE = 'libcephsqlite.so';

/** The extensions loaded into this thread's SQLite (see the header); null until first needed. */
let bootstrap: Db | null = null;

/** The Ceph configuration file this process uses, or null when CEPH_ARGS names the monitors. */
export function cephConfOf(env: NodeJS.ProcessEnv): string | null {
  const args = env['CEPH_ARGS'] ?? '';
  if (/(^|\s)(--mon[_-]host|-m)(\s|=)/.test(args)) return null;
  const conf = env['CEPH_CONF'];
  return conf === undefined || conf === '' ? DEFAULT_CONF : conf;
}

/** CEPH_ARGS with xvd's defaults added for the settings the user did not give. */
export function cephArgsOf(args: string): string {
  const defaults: [string, number][] = [['client_mount_timeout', LIMITS.cephMountTimeoutS]];
  const added = defaults
    .filter(([name]) => !new RegExp(`--${name.replace(/_/g, '[_-]')}\\b`).test(args))
    .map(([name, value]) => `--${name}=${value}`);
  return [args.trim(), ...added].filter((part) => part !== '').join(' ');
}

function failure(text: string, detail: string, cause?: unknown): XvdError {
  return new XvdError('ERR_CATALOG_OPEN', `catalog: ${text}: ${detail}`,
    cause === undefined ? undefined : { cause });
}

/** Refuses, in one line, what would make libcephsqlite abort the process. */
function checkConfiguration(text: string): void {
  const conf = cephConfOf(process.env);
  if (conf === null) return;
  try {
    fs.accessSync(conf, fs.constants.R_OK);
  } catch {
    throw failure(text, `no Ceph configuration: ${conf} is missing or unreadable ` +
      '(set CEPH_CONF, or --mon_host in CEPH_ARGS)');
  }
}

/** The probe: opens the catalog as the parent would (which connects; reading would wait for the
 * database lock, up to 30 s after a holder died). */
const PROBE = `
const fs = require('node:fs');
const Database = require(process.argv[1]);
const boot = new Database(':memory:');
boot.loadExtension(process.argv[2]);
boot.loadExtension('${LIBCEPHSQLITE}');
boot.prepare("SELECT xvd_default_vfs('ceph')").get();
fs.existsSync = () => true;
new Database(process.argv[3]).close();
`;

/** The line of a failed probe's output that says why (Ceph's own, when it said one). */
function probeReason(output: string, signal: string | null): string {
  const lines = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  const said = lines.find((line) => /error|failed|denied|timed out|cannot|unable/i.test(line) &&
    !/^\d+:|^ceph version|abort_msg/.test(line));
  if (said !== undefined) return said.replace(/^\S*\s\S*\s+-?\d*\s*/, '').slice(0, 300);
  return signal === 'SIGABRT' ? 'libcephsqlite aborted: the cluster is unreachable or refused ' +
    'this client (its monitors, keyring or caps)' : (lines[lines.length - 1] ?? 'no output');
}

/** Refuses in one line, in a child process, what would make libcephsqlite abort this one. */
function probe(text: string, location: CephLocation): void {
  if (process.env['XVD_CEPH_PROBED'] === '1') return;
  const result = spawnSync(process.execPath, ['-e', PROBE, require.resolve('better-sqlite3'),
    vfsExtensionPath(), cephFileNameOf(location)], { encoding: 'utf8',
    timeout: (LIMITS.cephMountTimeoutS + LIMITS.cephProbeSlackS) * 1000,
    env: { ...process.env, CEPH_ARGS: cephArgsOf(process.env['CEPH_ARGS'] ?? '') } });
  if (result.status !== 0) {
    const why = result.error !== undefined ? result.error.message
      : probeReason(`${result.stderr}\n${result.stdout}`, result.signal);
    throw failure(text, `cannot open it in RADOS (CEPH_CONF=${cephConfOf(process.env) ??
      'none'}): ${why}`);
  }
  process.env['XVD_CEPH_PROBED'] = '1';
}

function vfsExtensionPath(): string {
  return path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'xvd_sqlite_vfs.node');
}

function loadExtensions(text: string): Db {
  if (bootstrap !== null) return bootstrap;
  process.env['CEPH_ARGS'] = cephArgsOf(process.env['CEPH_ARGS'] ?? '');
  const db = new Database(':memory:');
  try {
    db.loadExtension(vfsExtensionPath()); // entry point sqlite3_xvdsqlitevfs_init, from the name
  } catch (cause) {
    db.close();
    throw failure(text, `xvd's SQLite extension is not built (npm run build:native): ` +
      `${(cause as Error).message}`, cause);
  }
  try {
    db.loadExtension(LIBCEPHSQLITE);
  } catch (cause) {
    db.close();
    throw failure(text, `cannot load ${LIBCEPHSQLITE} (install libsqlite3-mod-ceph): ` +
      `${(cause as Error).message}`, cause);
  }
  bootstrap = db;
  return db;
}

function setDefaultVfs(db: Db, name: string): string {
  return db.prepare('SELECT xvd_default_vfs(?)').pluck().get(name) as string;
}

/** Opens the catalog database in RADOS (connects on first use; see the header). */
export function openCephDatabase(text: string, location: CephLocation, isReadonly: boolean,
  isCreate: boolean): Db {
  checkConfiguration(text);
  probe(text, location);
  const boot = loadExtensions(text);
  const previous = setDefaultVfs(boot, 'ceph');
  const existsSync = fs.existsSync;
  try {
    fs.existsSync = (): boolean => true;
    return new Database(cephFileNameOf(location), { readonly: isReadonly,
      fileMustExist: !isCreate || isReadonly });
  } finally {
    fs.existsSync = existsSync;
    setDefaultVfs(boot, previous);
  }
}

/** Pragmas of a catalog in RADOS (see the header); `isNew`: no schema yet. */
export function setCephPragmas(db: Db, isReadonly: boolean, isNew: boolean): void {
  db.pragma(`busy_timeout = ${LIMITS.catalogBusyTimeoutMs}`);
  db.pragma('temp_store = MEMORY');
  db.pragma(`cache_size = ${LIMITS.cephCachePages}`);
  if (!isReadonly) {
    if (isNew) db.pragma('page_size = 65536');
    const mode = db.pragma('journal_mode = PERSIST', { simple: true });
    if (mode !== 'persist') throw new Error(`journal_mode is ${String(mode)}, not persist`);
  }
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
}

/** The RADOS client address libcephsqlite uses in this process (`SELECT ceph_status()`). */
export function cephSqliteAddress(db: Db): string {
  const status = JSON.parse(db.prepare('SELECT ceph_status()').pluck().get() as string) as
    { addr?: unknown };
  if (typeof status.addr !== 'string') throw new Error('ceph_status() gave no address');
  return status.addr;
}
