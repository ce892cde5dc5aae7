/**
 * exit: the `xvd` exit codes and the one place that turns an error into a code and a line.
 *
 *   0  success
 *   1  the operation was refused or failed (unknown id, out of space, overlap, I/O error)
 *   2  usage: bad argument, bad size, unknown command or option
 *   3  the catalog cannot be used: unreadable, not an SQLite database, written by a newer xvd
 *   4  `xvd check` found faults in the catalog
 *  70  internal error (a bug): one line on stderr; XVD_DEBUG=1 prints the stack
 * 141  stdout's reader went away (`xvd list | head -1`): nothing on stderr, as a C tool that
 *      SIGPIPE ended (128 + 13); what the command did stands, only its output was cut short
 *
 * Every expected error prints exactly one line, `xvd: <what>: <detail>`, on stderr and no stack.
 */
import { isEmuError, type ErrorCode } from '../errors';

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  catalog: 3,
  faults: 4,
  internal: 70,
  pipe: 141,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Text for `--help`: the same table as the header comment. */
export const EXIT_HELP = [
  'Exit codes:',
  '  0   success',
  '  1   operation refused or failed (unknown id, out of space, overlap, I/O error)',
  '  2   usage error (bad argument, bad size, unknown command or option)',
  '  3   catalog unusable (unreadable, not SQLite, written by a newer xvd)',
  '  4   `xvd check` found faults',
  '  70  internal error (set XVD_DEBUG=1 for the stack)',
  '  141 stdout closed by its reader (as SIGPIPE would end a C tool)',
].join('\n');

const USAGE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['ERR_USAGE', 'ERR_SIZE_INVALID']);
const CATALOG_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_CATALOG_OPEN',
  'ERR_CATALOG_VERSION',
]);

/** The exit code for an error thrown by a command. */
export function exitCodeOf(error: unknown): ExitCode {
  if (!isEmuError(error)) return EXIT.internal;
  if (USAGE_CODES.has(error.code)) return EXIT.usage;
  if (CATALOG_CODES.has(error.code)) return EXIT.catalog;
  if (error.code === 'ERR_CLI_CHECK_FAULTS') return EXIT.faults;
  return EXIT.failed;
}

/** Collapses a message to one line so that stderr carries exactly one line per error. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** The stderr line for an error: `xvd: <message>` (messages already read `<what>: <detail>`). */
export function errorLine(error: unknown): string {
  if (isEmuError(error)) return `xvd: ${oneLine(error.message)}\n`;
  const message = error instanceof Error ? error.message : String(error);
  return `xvd: internal error: ${oneLine(message)}\n`;
}
