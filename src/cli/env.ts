/**
 * cli/env: the environment variables every command reads, parsed here and handed down as
 * options (the layers below cli/ read no environment; route-env.ts does the same for the
 * variables that steer how connections are served).
 * - XVD_CATALOG: the catalog file when --catalog is not given.
 * - XVD_LOG_LEVEL: pino level (default info); XVD_LOG_PRETTY=1 readable lines, 0 JSON, unset:
 *   readable when stderr is a terminal.
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
