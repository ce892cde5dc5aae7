/**
 * log: the pino root logger. JSON lines on stderr at level info until configureLog() says
 * otherwise; stdout stays for command output. Children bind {conn, export, phase}.
 * The CLI configures it once at start from XVD_LOG_LEVEL and XVD_LOG_PRETTY (cli/env.ts); no
 * module below cli/ reads the environment. `log` is a live binding: modules use it at call
 * time (none keeps a child made at load), so a logger configured later reaches them all.
 */
import pino from 'pino';

export interface LogOptions {
  /** pino level name: fatal, error, warn, info, debug, trace or silent */
  level: string;
  /** readable lines (pino-pretty) instead of JSON */
  isPretty: boolean;
}

function makeLogger(options: LogOptions): pino.Logger {
  const { level } = options;
  if (options.isPretty) {
    const transport = pino.transport({
      target: 'pino-pretty',
      options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' },
    });
    return pino({ level, base: { pid: process.pid } }, transport);
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: false }));
}

export let log: pino.Logger = makeLogger({ level: 'info', isPretty: false });
export type Logger = pino.Logger;

/** Replaces the root logger; call it before anything logs (the CLI does, first thing). */
export function configureLog(options: LogOptions): void {
  log = makeLogger(options);
}
