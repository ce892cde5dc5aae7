/**
 * cli/route-env: the environment variables that steer how connections are served, parsed in
 * one place and passed down as options (serve/index.ts ServeOptions → nbd/server.ts
 * NbdServerOptions → each connection's routesOf, src/dataplane/routes.ts). Meant for
 * comparisons and experiments; the flags of `xvd serve` are the supported interface.
 * - XVD_DATAPATH=off: every request on the JS path; =thread: the data-path thread without its
 *   reader thread; =reader-always: with its reader for every large READ, whether a CPU is free
 *   or not; unset or anything else (=reader, auto): the data-path thread where it can run, with
 *   its reader while a CPU is free.
 * - XVD_SENDER=off|sendfile|copy|on: the sender thread's mode for large READ replies (on:
 *   sendfile on unix sockets, copy on TCP); unset or anything else: serve --sendfile decides.
 * - XVD_NBD_RECEIVE=stream: sockets are read through Node's 'data' chunks (else arenas).
 */
import type {
  DatapathSetting, ReceiveSetting, SenderSetting,
} from '../dataplane/routes';

export interface RouteEnv {
  datapath: DatapathSetting;
  sender: SenderSetting;
  receive: ReceiveSetting;
}

const SENDER_SETTINGS: readonly string[] = ['off', 'sendfile', 'copy', 'on'];
const DATAPATH_SETTINGS: readonly string[] = ['off', 'thread', 'reader', 'reader-always'];

/** Reads XVD_DATAPATH, XVD_SENDER and XVD_NBD_RECEIVE from `env` (see the header). */
export function routeEnvOf(env: NodeJS.ProcessEnv): RouteEnv {
  const sender = env['XVD_SENDER'] ?? 'auto';
  return {
    datapath: DATAPATH_SETTINGS.includes(env['XVD_DATAPATH'] ?? '')
      ? env['XVD_DATAPATH'] as DatapathSetting : 'auto',
    sender: SENDER_SETTINGS.includes(sender) ? sender as SenderSetting : 'auto',
    receive: env['XVD_NBD_RECEIVE'] === 'stream' ? 'stream' : 'arena',
  };
}
