/**
 * serve: runs the NBD server over the catalog (`xvd serve`). Wires src/nbd's server to
 * CatalogProvider (live catalog, leases and fences: see catalog-provider.ts), listens where asked
 * (TCP, Unix sockets, systemd-inherited fds, or one connection on stdin/stdout), and shuts down
 * cleanly on SIGTERM/SIGINT: stop listening, let requests in flight finish, flush, release every
 * lease, leave the catalog, exit 0.
 *
 * Catalog writes made while serving (heartbeats, leases) go through a CatalogWriterThread, a
 * worker thread with its own connection (catalog-writer-thread.ts), so that no commit stalls the
 * event loop; it is started before the server and closed after the provider stopped (every
 * release committed, the server unregistered), on the error paths of startServe too.
 *
 * Many hosts (host-lease.ts): with `host` (`--host`; on a catalog in RADOS it defaults to this
 * machine's hostname) leases live by heartbeat for `leaseTtlMs`, the server registers the RADOS
 * clients it writes through (libcephsqlite's, and `radosAddrs`), takes over hosts whose lease
 * expired through `rados`, and when it loses its own leases it fences every connection, lets go
 * of everything (within LIMITS.hostLostDrainMs) and runServeUntilSignal returns EXIT_LEASE_LOST.
 *
 * What the server shows of itself (observe.ts): a control socket that `xvd status` reads
 * (control.ts; listening before the server registers, its path recorded in the catalog row)
 * and, with `metrics`, a Prometheus endpoint (metrics.ts); both stop after the provider.
 */
import fs from 'node:fs';
import os from 'node:os';
import { openCatalog, type Catalog } from '../catalog/index';
import { isCephCatalog } from '../catalog/location';
import type { DatapathSetting, ReceiveSetting, SenderSetting } from '../dataplane/routes';
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import { log, type Logger } from '../log';
import { version } from '../version';
import { createServer, readPskFile, readX509Dir } from '../nbd/index';
import type { ListenTarget, NbdServer, TlsOptions } from '../nbd/index';
import { CatalogProvider } from './catalog-provider';
import { CatalogWriterThread } from './catalog-writer-thread';
import { controlPathOf } from './control';
import { isRbdPath } from '../backing/rbd-backing';
import { EXIT_LEASE_LOST, HostLeases } from './host-lease';
import { radosClient, type RadosClient } from './rados-fence';
import { listenerText, Observers } from './observe';

export interface ServeOptions {
  catalogPath: string;
  /** TCP listeners: host and port */
  tcp: { host: string; port: number }[];
  /** Unix socket paths */
  sockets: string[];
  /** one connection on stdin/stdout, then exit */
  isStdio: boolean;
  /** listening sockets inherited from systemd (nbd/systemd.ts listenFdsFromEnv; none by
   * default) */
  inheritedFds?: number[];
  tls: TlsOptions;
  /** READ replies on unix sockets by sendfile(2) (dataplane/reply-sender.ts; off by default) */
  isSendfile?: boolean;
  /** XVD_DATAPATH, XVD_SENDER, XVD_NBD_RECEIVE as cli/route-env.ts parsed them (defaults:
   * the data-path thread where it can run, the sender as isSendfile says, arena receive) */
  datapath?: DatapathSetting;
  sender?: SenderSetting;
  receive?: ReceiveSetting;
  /** data-path threads' busy-poll budget in microseconds (LIMITS.nbdDatapathSpinUs by default) */
  busyPollMicros?: number;
  /** connections served at once (LIMITS.nbdConnectionsMax by default) */
  connectionsMax?: number;
  /** the memory budget of all connections (nbd/budget.ts; LIMITS.nbdBudgetBytesMax) */
  budgetBytesMax?: number;
  /** the root logger unless a test passes its own */
  log?: Logger;
  /** where the control socket goes when the catalog's directory gives too long a path
   * (control.ts; the CLI passes $XDG_RUNTIME_DIR; the system's temporary directory by default) */
  runtimeDir?: string;
  /** serve Prometheus metrics at http://HOST:PORT/metrics (metrics.ts) */
  metrics?: { host: string; port: number };
  /** catalog heartbeat period (tests); LIMITS.serveHeartbeatMs by default */
  heartbeatMs?: number;
  /** this host's name (serve --host): leases by heartbeat (host-lease.ts) */
  host?: string;
  /** lease TTL with a host (LIMITS.hostLeaseTtlDefaultMs by default) */
  leaseTtlMs?: number;
  /** the RADOS client that blocklists hosts taken over and writes to RBD members (tests); by
   * default, with a host, the process's client (rados-fence.ts) when the catalog is in RADOS or
   * a member is an RBD image, else none */
  rados?: RadosClient | null;
  /** resolves when listening (tests, quickstart) */
  onListening?: (addresses: (string | { address: string; port: number })[]) => void;
}

export interface RunningServe {
  server: NbdServer;
  provider: CatalogProvider;
  /** the catalog writer thread (tests terminate its worker) */
  writer: CatalogWriterThread;
  /** the control socket and metrics endpoint, and the status document they answer */
  observers: Observers;
  addresses: (string | { address: string; port: number })[];
  /** graceful stop: drain, flush, release leases, leave the catalog (`isLost`: fence every
   * connection first, and close without grace) */
  stop(isLost?: boolean): Promise<void>;
  /** host mode: resolves with the reason once this server lost its leases (never otherwise) */
  lost: Promise<string>;
}

/** Builds TLS options from CLI flags. */
export function tlsOptionsOf(mode: string, certificatesDir: string | undefined,
  pskFile: string | undefined, isVerifyPeer: boolean): TlsOptions {
  if (mode !== 'off' && mode !== 'on' && mode !== 'require') {
    throw new UsageError('ERR_USAGE', `serve: --tls: expected off, on or require, not ${mode}`);
  }
  if (mode === 'off') return { mode };
  if (certificatesDir === undefined && pskFile === undefined) {
    throw new UsageError('ERR_USAGE',
      'serve: --tls needs --tls-certificates DIR or --tls-psk FILE');
  }
  const x509 = certificatesDir === undefined ? {} : readX509Dir(certificatesDir);
  const psk = pskFile === undefined ? {} : { psk: readPskFile(pskFile) };
  return { mode, ...x509, ...psk, verifyClient: isVerifyPeer };
}

/** Starts serving; returns once every listener is up. */
export async function startServe(options: ServeOptions): Promise<RunningServe> {
  const logger = options.log ?? log;
  const tls = options.tls;
  if (tls.mode === 'on' && (tls.verifyClient === true || tls.psk !== undefined)) {
    logger.warn('TLS is optional (--tls on): a client that skips it is not authenticated and ' +
      'sees every domain\'s exports; --tls require isolates domains');
  }
  const { catalog, writer, hostOptions } = await openCatalogSide(options, logger);
  let onLost: (reason: string) => void = () => undefined;
  const lost = new Promise<string>((resolve) => (onLost = resolve));
  const pollMs = isCephCatalog(catalog.path) ? LIMITS.servePollCephMs : LIMITS.servePollMs;
  const provider = new CatalogProvider({ catalog, writer, log: logger, onLost, pollMs,
    ...hostOptions,
    ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }) });
  const limits = {
    ...(options.busyPollMicros === undefined ? {} : { busyPollMicros: options.busyPollMicros }),
    ...(options.connectionsMax === undefined ? {} : { connectionsMax: options.connectionsMax }),
    ...(options.budgetBytesMax === undefined ? {} : { budgetBytesMax: options.budgetBytesMax }),
  };
  const server = createServer({ provider, tls: options.tls, log: logger,
    receive: options.receive ?? 'arena', sendfile: options.isSendfile === true,
    datapath: options.datapath ?? 'auto', sender: options.sender ?? 'auto', limits });
  const addresses: (string | { address: string; port: number })[] = [];
  const observers = new Observers({ server, provider, writer, tls: tls.mode, log: logger });
  try {
    provider.start(server, await observers.startControl(controlPathOf(catalog.path, process.pid,
      options.runtimeDir ?? os.tmpdir())));
    addresses.push(...await listenAll(server, options));
    observers.listeners = addresses.map(listenerText);
    if (options.metrics !== undefined) {
      await observers.startMetrics(options.metrics.host, options.metrics.port);
    }
  } catch (error) {
    try {
      await server.close({ graceMs: 0 });
      await provider.stop();
    } finally {
      await observers.close();
      await writer.close();
      catalog.close();
    }
    throw error;
  }
  let stopping: Promise<void> | null = null;
  const stop = (isLost = false): Promise<void> => {
    stopping ??= (async () => {
      try {
        if (isLost) await provider.stop(true); // fence first: nothing is served after a loss
        await server.close({ graceMs: isLost ? 0 : LIMITS.nbdCloseGraceMs });
        await provider.stop(isLost);
      } finally {
        await observers.close();
        // after a loss the catalog is left as it is: its client may be blocklisted
        if (isLost) await writer.abandon();
        else await writer.close();
        if (!isLost) catalog.close();
      }
      for (const socketPath of options.sockets) fs.rmSync(socketPath, { force: true });
    })();
    return stopping;
  };
  options.onListening?.(addresses);
  return { server, provider, writer, observers, addresses, stop, lost };
}

/** The catalog, its writer thread and the host options, each closed again if a later one fails. */
async function openCatalogSide(options: ServeOptions, logger: Logger): Promise<{
  catalog: Catalog; writer: CatalogWriterThread;
  hostOptions: Awaited<ReturnType<typeof hostOptionsOf>>; }> {
  const catalog = openCatalog(options.catalogPath);
  let writer: CatalogWriterThread | null = null;
  try {
    writer = await CatalogWriterThread.start(catalog.path, logger);
    return { catalog, writer, hostOptions: await hostOptionsOf(options, catalog, writer, logger) };
  } catch (error) {
    await writer?.close();
    catalog.close();
    throw error;
  }
}

/**
 * The provider's host options: none without a host (nor a catalog in RADOS). With one, the
 * RADOS client is connected first when the catalog is in RADOS or a member is an RBD image, so
 * that its address is registered before a byte is written through it.
 */
async function hostOptionsOf(options: ServeOptions, catalog: Catalog,
  writer: CatalogWriterThread, log: Logger,
): Promise<{ hostLeases?: HostLeases; radosAddrs?: string[] }> {
  const isCeph = isCephCatalog(catalog.path);
  const host = options.host ?? (isCeph ? os.hostname() : undefined);
  if (host === undefined) return {};
  const isRados = isCeph || catalog.listMembers().some((member) => isRbdPath(member.path));
  const rados = options.rados !== undefined ? options.rados
    : isRados ? await radosClient() : null;
  const sqliteAddr = catalog.radosAddress();
  const radosAddrs = [...(sqliteAddr === null ? [] : [sqliteAddr]), ...(rados?.addrs() ?? [])];
  const hostLeases = new HostLeases({ host, catalog, writer, log, rados,
    leaseTtlMs: options.leaseTtlMs ?? LIMITS.hostLeaseTtlDefaultMs });
  return { hostLeases, radosAddrs };
}

/**
 * After the leases were lost: fence and drain every connection, let go of every export (the
 * catalog writes that fail are logged), close; bounded by LIMITS.hostLostDrainMs.
 */
async function letGo(running: RunningServe): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, LIMITS.hostLostDrainMs);
  });
  const work = running.stop(true).catch((error: unknown) =>
    log.error({ err: error }, 'letting go after the lease was lost'));
  await Promise.race([work, late]);
  clearTimeout(timer);
}

async function listenAll(server: NbdServer, options: ServeOptions):
  Promise<(string | { address: string; port: number })[]> {
  const addresses: (string | { address: string; port: number })[] = [];
  const inherited = options.isStdio ? [] : options.inheritedFds ?? [];
  const targets: ListenTarget[] = [
    ...inherited.map((fd) => ({ fd })),
    ...options.tcp,
    ...options.sockets.map((socketPath) => ({ path: socketPath })),
  ];
  for (const target of targets) {
    if ('path' in target && fs.existsSync(target.path)) removeStaleSocket(target.path);
    const address = await server.listen(target);
    addresses.push(typeof address === 'string' ? address
      : { address: address.address, port: address.port });
  }
  return addresses;
}

/** A Unix socket path left by a dead server is removed; anything else there is refused. */
function removeStaleSocket(socketPath: string): void {
  if (!fs.statSync(socketPath).isSocket()) {
    throw new UsageError('ERR_USAGE', `serve: --socket: ${socketPath} exists and is not a socket`);
  }
  fs.rmSync(socketPath);
}

/**
 * Runs until SIGTERM/SIGINT (or, in stdio mode, until the one connection ends). Returns the exit
 * code: 0 after a clean shutdown.
 */
export async function runServeUntilSignal(options: ServeOptions): Promise<number> {
  if (options.isStdio) return runStdio(options);
  const running = await startServe(options);
  for (const address of running.addresses) {
    log.info({ version: version(), address }, 'xvd serve: listening');
  }
  const isLost = await Promise.race([running.lost.then(() => true),
    new Promise<boolean>((resolve) => {
      const onSignal = (signal: NodeJS.Signals): void => {
        log.info({ signal }, 'xvd serve: shutting down');
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        resolve(false);
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    })]);
  if (isLost) {
    await letGo(running);
    log.error('xvd serve: stopped after losing its leases; start it again (a supervisor ' +
      'restarts it) to serve with new clients');
    return EXIT_LEASE_LOST;
  }
  await running.stop();
  log.info('xvd serve: stopped');
  return 0;
}

async function runStdio(options: ServeOptions): Promise<number> {
  const running = await startServe({ ...options, tcp: [], sockets: [] });
  await running.server.serveStream(process.stdin, process.stdout);
  await running.stop();
  return 0;
}
