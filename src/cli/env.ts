/**
 * cli/env: the environment variables every command reads, parsed here and handed down as
 * options (the layers below cli/ read no environment; route-env.ts does the same for the
 * variables that steer how connections are served).
 * - XVD_CATALOG: the catalog file when --catalog is not given.
 * - XVD_LOG_LEVEL: pino level (default info); XVD_LOG_PRETTY=1 readable lines, 0 JSON, unset:
 *   readable when stderr is a terminal.
 * - CEPH_CONF: the Ceph configuration of rbd: members (src/ceph/client.ts; default
 *   /etc/ceph/ceph.conf), as Ceph's own tools read it.
 * - XDG_RUNTIME_DIR: where `xvd serve` puts its control socket when the catalog's directory
 *   gives too long a path (src/serve/control.ts).
 */
import type { LogOptions } from '../log';

/** The log settings `env` asks for (see the header); `isTty`: stderr is a terminal. */
export function logOptionsOf(env: NodeJS.ProcessEnv, isTty: boolean): LogOptions {
  const pretty = env['XVD_LOG_PRETTY'];
  return {
    level: env['XVD_LOG_LEVEL'] ?? 'info',
    isPretty: pretty === '1' || (pretty !== '0' && isTty),
  };
}

/** XVD_CATALOG, or undefined when unset or empty. */
export function catalogPathOf(env: NodeJS.ProcessEnv): string | undefined {
  const value = env['XVD_CATALOG'];
  return value === undefined || value === '' ? undefined : value;
}

/** XDG_RUNTIME_DIR, or undefined when unset, empty or relative (the XDG spec ignores those). */
export function runtimeDirOf(env: NodeJS.ProcessEnv): string | undefined {
  const value = env['XDG_RUNTIME_DIR'];
  return value === undefined || !value.startsWith('/') ? undefined : value;
}

/** CEPH_CONF, or undefined when unset or empty. */
export function cephConfOf(env: NodeJS.ProcessEnv): string | undefined {
  const value = env['CEPH_CONF'];
  return value === undefined || value === '' ? undefined : value;
}
