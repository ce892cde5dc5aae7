/**
 * ceph/client: the process's one RADOS client, shared by every RBD backing and by whatever else
 * talks to the cluster (hosts, leases and fencing across hosts). It is found the way Ceph's own
 * tools find the cluster: the configuration file CEPH_CONF (default /etc/ceph/ceph.conf), the
 * keyring that file names, CEPH_ARGS, and a client name (`--ceph-id NAME`, default admin, so
 * client.admin). The layers below cli/ read no environment: the CLI calls configureCeph() with
 * what it found before anything connects.
 *
 * The API (small on purpose):
 *   configureCeph({ conf?, id?, mountTimeoutSeconds?, cephArgs? })  before first use (defaults
 *       above; a monitor that does not answer fails the connect after mountTimeoutSeconds,
 *       default 10; cephArgs is CEPH_ARGS, which librados reads itself)
 *   connectCeph(): Promise<void>   connects once; callers meanwhile share the attempt; resolves
 *       at once when connected. A missing or unreadable configuration is refused before librados
 *       sees it (some Ceph code aborts the process on one). Every failure is one line,
 *       ERR_CEPH_CLIENT, naming the configuration and the client; the next call tries again.
 *   cephAddress(): string          this client's own addresses (rados_getaddrs), what
 *       `osd blocklist add` takes; throws ENOTCONN when not connected
 *   cephMonCommand(command, input?): Promise<{ out, outs }>  one monitor command (connects
 *       first): `command` is the JSON object the monitors take, e.g. { prefix: 'osd blocklist',
 *       blocklistop: 'add', addr: ADDR, expire: 3600 }. Rejects with IoError (the monitor's text).
 *   shutdownCeph(): Promise<void>  ends the client once no RBD image is open (EBUSY otherwise).
 *       A blocklisted client can never write again: end it, and the next connectCeph makes a new
 *       client with a new address.
 * The client has librbd's cache off (rbd_cache=false, CEPH_ARGS may say otherwise): several hosts
 * write one image, each its own extents, and an extent may come back to a host after another
 * host wrote it.
 */
import fs from 'node:fs';
import { IoError, UsageError } from '../errors';
import * as sys from '../sys/index';

export interface CephSettings {
  conf: string;
  id: string;
  mountTimeoutSeconds: number;
  /** CEPH_ARGS as the process has it (librados reads it itself; checkConf only looks) */
  cephArgs: string;
}

export const CEPH_CONF_DEFAULT = '/etc/ceph/ceph.conf';
export const CEPH_ID_DEFAULT = 'admin';
const MOUNT_TIMEOUT_SECONDS_DEFAULT = 10;

let settings: CephSettings = {
  conf: CEPH_CONF_DEFAULT, id: CEPH_ID_DEFAULT, mountTimeoutSeconds: MOUNT_TIMEOUT_SECONDS_DEFAULT,
  cephArgs: '',
};
let connecting: Promise<void> | null = null;
let isConnected = false;

/** Where the cluster is and who we are (see the header); takes effect at the next connect. */
export function configureCeph(options: {
  conf?: string | undefined; id?: string | undefined; mountTimeoutSeconds?: number | undefined;
  cephArgs?: string | undefined;
}): void {
  settings = {
    cephArgs: options.cephArgs ?? settings.cephArgs,
    conf: options.conf !== undefined && options.conf !== '' ? options.conf : settings.conf,
    id: options.id !== undefined && options.id !== '' ? options.id : settings.id,
    mountTimeoutSeconds: options.mountTimeoutSeconds ?? settings.mountTimeoutSeconds,
  };
}

export function cephSettings(): Readonly<CephSettings> {
  return settings;
}

function clientError(what: string, cause?: unknown): UsageError {
  const client = `client.${settings.id}`;
  return new UsageError('ERR_CEPH_CLIENT', `ceph: ${client} with ${settings.conf}: ${what}`,
    cause === undefined ? undefined : { cause });
}

/** A configuration line naming the monitors (Ceph spells options with spaces or '_'). */
const MON_NAMED = /^\s*(mon[ _]host|mon[ _]addr)\s*=|^\s*\[mon\./m;

/**
 * The configuration must be a readable file, and name the monitors (or CEPH_ARGS must), before
 * librados sees it: without monitors it prints a line of its own on stderr.
 */
function checkConf(): void {
  let text: string;
  try {
    if (!fs.statSync(settings.conf).isFile()) throw new Error('not a file');
    text = fs.readFileSync(settings.conf, 'utf8');
  } catch (cause) {
    const code = (cause as { code?: string }).code ?? 'EINVAL';
    throw clientError(`${code}: no readable Ceph configuration there ` +
      `(set CEPH_CONF to the cluster's ceph.conf)`, cause);
  }
  if (!MON_NAMED.test(text) && !/mon[-_]host/.test(settings.cephArgs)) {
    throw clientError('EINVAL: the configuration names no monitors (mon host)');
  }
}

/** What a failed connect most likely means, by errno. */
const HINTS: Readonly<Record<string, string>> = {
  ENOENT: ' (does the configuration name the monitors, mon host, and a readable keyring?)',
  EINVAL: ' (is it a Ceph configuration?)',
  EACCES: ' (the key was refused: is the client name right, --ceph-id?)',
  EPERM: ' (the key was refused: is the client name right, --ceph-id?)',
  ENOSYS: ' (install librbd1)',
};

async function connectOnce(): Promise<void> {
  checkConf();
  const { conf, id, mountTimeoutSeconds } = settings;
  try {
    await sys.radosConnect(conf, id, mountTimeoutSeconds);
  } catch (cause) {
    const error = cause as IoError;
    const hint = HINTS[error.errno] ?? '';
    throw clientError(`${error.message}${hint}`, cause);
  }
  isConnected = true;
}

/** Connects the process's client, once (see the header). */
export function connectCeph(): Promise<void> {
  if (isConnected) return Promise.resolve();
  if (connecting === null) {
    const attempt = connectOnce().finally(() => {
      if (connecting === attempt) connecting = null;
    });
    connecting = attempt;
  }
  return connecting;
}

/** This client's addresses, as a blocklist names them. */
export function cephAddress(): string {
  return sys.radosAddrs();
}

/** One monitor command; `outs` is the monitor's status text, `out` its output. */
export async function cephMonCommand(command: Record<string, unknown>, input?: Buffer,
): Promise<{ out: Buffer; outs: string }> {
  await connectCeph();
  return sys.radosMonCommand(JSON.stringify(command), input ?? null);
}

/** Ends the client (no RBD image may be open); the next connectCeph makes a new one. */
export async function shutdownCeph(): Promise<void> {
  if (connecting !== null) await connecting.catch(() => undefined);
  if (!isConnected) return;
  await sys.radosShutdown();
  isConnected = false;
}
