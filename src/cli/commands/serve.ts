/**
 * serve: `xvd serve` runs the NBD server for every VBD in the catalog (src/serve). Exports are
 * named `DOMAIN/DEVICE`. Listens on 127.0.0.1:10809 unless told otherwise (or given sockets by
 * systemd). SIGTERM finishes requests in flight, flushes, and exits 0.
 */
import type { Command } from 'commander';
import { UsageError } from '../../errors';
import { LIMITS } from '../../limits';
import { parseSize } from '../../size';
import { DEFAULT_HOST, DEFAULT_PORT, listenFdsFromEnv } from '../../nbd/index';
import { runServeUntilSignal, tlsOptionsOf } from '../../serve/index';
import type { Context } from '../context';
import { runtimeDirOf } from '../env';
import { routeEnvOf } from '../route-env';

interface ServeFlags {
  listen: string[];
  socket: string[];
  stdio?: boolean;
  tls: string;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer?: boolean;
  threads?: string;
  sendfile?: boolean;
  busyPoll?: string;
  maxConnections?: string;
  memoryMax?: string;
  metrics?: string;
  host?: string;
  leaseTtl?: string;
}

/** `HOST:PORT`, `[V6]:PORT` or `PORT` → parts (`option` names the flag in the error). */
export function parseListen(text: string, option = '--listen'): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text) ??
    /^()()(\d{1,5})$/.exec(text);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    throw new UsageError('ERR_USAGE', `serve: ${option}: expected HOST:PORT, not ${text}`);
  }
  const host = match[1] ?? (match[2] === '' || match[2] === undefined ? DEFAULT_HOST : match[2]);
  return { host, port };
}

/**
 * libuv's pool size must be set before the pool's first use; nothing before this point in the
 * process has used it (the catalog is synchronous).
 */
function setThreads(threads: string | undefined): void {
  if (threads !== undefined) {
    const count = Number(threads);
    const max = LIMITS.serveThreadsMax;
    if (!Number.isInteger(count) || count < 1 || count > max) {
      throw new UsageError('ERR_USAGE', `serve: --threads: expected 1..${max}, not ${threads}`);
    }
    process.env['UV_THREADPOOL_SIZE'] = String(count);
  } else {
    process.env['UV_THREADPOOL_SIZE'] ??= String(LIMITS.serveThreadsDefault);
  }
}

function busyPollOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const micros = Number(text);
  if (text.trim() === '' || !Number.isInteger(micros) || micros < 0 ||
    micros > LIMITS.nbdDatapathSpinMaxUs) {
    throw new UsageError('ERR_USAGE',
      `serve: --busy-poll: expected 0..${LIMITS.nbdDatapathSpinMaxUs} microseconds, not ${text}`);
  }
  return micros;
}

function maxConnectionsOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const count = Number(text);
  if (text.trim() === '' || !Number.isInteger(count) || count < 1 ||
    count > LIMITS.nbdConnectionsCeiling) {
    throw new UsageError('ERR_USAGE', `serve: --max-connections: expected ` +
      `1..${LIMITS.nbdConnectionsCeiling}, not ${text}`);
  }
  return count;
}

function memoryMaxOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const bytes = parseSize(text, 'serve: --memory-max');
  if (bytes < LIMITS.nbdPayloadMax) {
    throw new UsageError('ERR_USAGE', `serve: --memory-max: at least ` +
      `${LIMITS.nbdPayloadMax} bytes (one largest request), not ${text}`);
  }
  return bytes;
}

/** --host NAME and --lease-ttl SECONDS (serve/host-lease.ts). */
export function hostOptionsOf(host: string | undefined, leaseTtl: string | undefined):
  { host?: string; leaseTtlMs?: number } {
  if (host !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(host)) {
    throw new UsageError('ERR_USAGE', `serve: --host: expected a host name (letters, digits, ` +
      `".", "_", "-"; at most 63), not ${host}`);
  }
  if (leaseTtl === undefined) return host === undefined ? {} : { host };
  const seconds = Number(leaseTtl);
  const ms = Math.round(seconds * 1000);
  if (leaseTtl.trim() === '' || !Number.isFinite(seconds) || ms < 1000 ||
    ms > LIMITS.hostLeaseTtlMaxMs) {
    throw new UsageError('ERR_USAGE', `serve: --lease-ttl: expected 1..` +
      `${LIMITS.hostLeaseTtlMaxMs / 1000} seconds, not ${leaseTtl}`);
  }
  return { ...(host === undefined ? {} : { host }), leaseTtlMs: ms };
}

export function runServe(context: Context, options: { host: string; port: number },
): Promise<number> {
  setThreads(undefined);
  return runServeUntilSignal({ catalogPath: context.catalogPath, tcp: [options], sockets: [],
    isStdio: false, tls: { mode: 'off' }, ...routeEnvOf(process.env) });
}

function serve(context: Context, flags: ServeFlags): Promise<number> {
  setThreads(flags.threads);
  const busyPollMicros = busyPollOf(flags.busyPoll);
  const connectionsMax = maxConnectionsOf(flags.maxConnections);
  const budgetBytesMax = memoryMaxOf(flags.memoryMax);
  const tcp = flags.listen.map((text) => parseListen(text));
  const isInherited = process.env['LISTEN_FDS'] !== undefined;
  if (tcp.length === 0 && flags.socket.length === 0 && flags.stdio !== true && !isInherited) {
    tcp.push({ host: DEFAULT_HOST, port: DEFAULT_PORT });
  }
  const tls = tlsOptionsOf(flags.tls, flags.tlsCertificates, flags.tlsPsk,
    flags.tlsVerifyPeer === true);
  const metrics = flags.metrics === undefined ? undefined : parseListen(flags.metrics, '--metrics');
  const runtimeDir = runtimeDirOf(process.env);
  const hostOptions = hostOptionsOf(flags.host, flags.leaseTtl);
  return runServeUntilSignal({ ...hostOptions, catalogPath: context.catalogPath, tcp,
    sockets: flags.socket,
    isStdio: flags.stdio === true, tls, isSendfile: flags.sendfile === true,
    inheritedFds: listenFdsFromEnv(process.env),
    ...routeEnvOf(process.env),
    ...(busyPollMicros === undefined ? {} : { busyPollMicros }),
    ...(connectionsMax === undefined ? {} : { connectionsMax }),
    ...(budgetBytesMax === undefined ? {} : { budgetBytesMax }),
    ...(metrics === undefined ? {} : { metrics }),
    ...(runtimeDir === undefined ? {} : { runtimeDir }) });
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function register(program: Command, context: Context): void {
  program.command('serve')
    .description('serve every VBD over NBD (export name DOMAIN/DEVICE) until SIGTERM')
    .option('--listen <host:port>', `TCP listener, repeatable (default ${DEFAULT_HOST}:` +
      `${DEFAULT_PORT})`, collect, [])
    .option('--socket <path>', 'Unix socket listener, repeatable', collect, [])
    .option('--stdio', 'serve one connection on stdin/stdout, then exit')
    .option('--tls <mode>', 'off, on (STARTTLS offered) or require', 'off')
    .option('--tls-certificates <dir>', 'x509 dir: server-cert.pem, server-key.pem, ca-cert.pem')
    .option('--tls-verify-peer', 'demand a client certificate; its CN names the domain')
    .option('--tls-psk <file>', 'psktool file (identity:hexkey); the identity names the domain')
    .option('--threads <n>', `libuv pool threads (default ${LIMITS.serveThreadsDefault})`)
    .option('--sendfile', 'unix sockets: READ replies by sendfile(2) from a thread per ' +
      'connection (faster; a client that has not read a reply yet may get bytes written after ' +
      'it was sent: trusted clients only)')
    .option('--busy-poll <us>', 'after small requests a connection\'s thread tries to read ' +
      `the next ones this long before it sleeps (default ${LIMITS.nbdDatapathSpinUs}; 0: off)`)
    .option('--max-connections <n>', `connections served at once (default ` +
      `${LIMITS.nbdConnectionsMax}); more are closed at accept`)
    .option('--memory-max <size>', 'what all clients together may make the server hold for ' +
      `them: replies not yet taken, payloads being received (default ` +
      `${LIMITS.nbdBudgetBytesMax / 1024 / 1024}M); past it, requests wait`)
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
    .option('--host <name>', 'this host\'s name on a catalog shared by many hosts: leases live ' +
      'by heartbeat, and a host whose lease expired is fenced before another serves its VDs ' +
      '(default on a ceph: catalog: the hostname)')
    .option('--lease-ttl <seconds>', `with --host: how long a lease outlives its last ` +
      `heartbeat (default ${LIMITS.hostLeaseTtlDefaultMs / 1000})`)
    .action((flags: ServeFlags) => context.run(() => serve(context, flags)));
}
