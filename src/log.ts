/**
 * log: the pino root logger. JSON lines by default (for machines); readable when stderr is a
 * terminal or XVD_LOG_PRETTY=1. Level from XVD_LOG_LEVEL (default info). Children bind
 * {conn, export, phase}. Logs go to stderr so stdout stays for command output.
 */
import pino from 'pino';

function makeLogger(): pino.Logger {
  const level = process.env['XVD_LOG_LEVEL'] ?? 'info';
  const pretty = process.env['XVD_LOG_PRETTY'] === '1' ||
    (process.env['XVD_LOG_PRETTY'] !== '0' && process.stderr.isTTY === true);
  if (pretty) {
    const transport = pino.transport({
      target: 'pino-pretty',
      options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' },
    });
    return pino({ level, base: { pid: process.pid } }, transport);
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: false }));
}

export const log: pino.Logger = makeLogger();
export type Logger = pino.Logger;
