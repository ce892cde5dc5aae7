/**
 * status: `xvd status [--json] [--watch]` shows every server running on this catalog, as each
 * one answers on its control socket (src/serve/control.ts; the path is in its catalog row):
 * host, pid, uptime, version, listeners, TLS mode, and per export its connections, requests and
 * bytes by command, errors by errno, requests in flight and latency percentiles
 * (src/serve/status-document.ts is the shape). A registered server whose process is gone, that
 * has no control socket, or that does not answer is skipped with a note; none of this is an
 * error (exit 0), and nothing in the catalog changes.
 *
 * `--json` prints {catalog, servers: [status document…], notes: [string…]}. `--watch` redraws
 * a live view every second with per-second rates until `q` or Ctrl-C (status-watch.ts).
 */
import type { Command } from 'commander';
import { UsageError } from '../../errors';
import { readControl, STATUS_FORMAT } from '../../serve/control';
import type { StatusDocument } from '../../serve/status-document';
import type { Context } from '../context';
import { printJson, printLine } from '../output';
import type { ServerRecord } from '../port';
import { reportLines, type StatusReport } from '../status-view';
import { runWatch } from '../status-watch';

const WATCH_INTERVAL_MS = 1000;

interface StatusFlags {
  json?: boolean;
  watch?: boolean;
}

function isStatusDocument(value: unknown): value is StatusDocument {
  return typeof value === 'object' && value !== null &&
    (value as { format?: unknown }).format === STATUS_FORMAT;
}

/** One server's document, or a note saying why there is none. */
async function askServer(server: ServerRecord): Promise<StatusDocument | string> {
  const who = `server ${server.id} (pid ${server.pid})`;
  if (!server.isAlive) return `${who} is not running: skipped`;
  if (server.controlPath === null) return `${who} has no control socket: skipped`;
  try {
    const answer = await readControl(server.controlPath);
    if (isStatusDocument(answer)) return answer;
    return `${who}: ${server.controlPath}: an answer in a format this xvd does not know`;
  } catch (error) {
    return `${who}: ${server.controlPath}: ${(error as Error).message}`;
  }
}

/** What every server registered on the catalog says now. */
async function gather(context: Context): Promise<StatusReport> {
  const servers = context.catalog({ isRecovering: false }).servers();
  const answers = await Promise.all(servers.map(askServer));
  const report: StatusReport = { catalog: context.catalogPath, servers: [], notes: [] };
  for (const answer of answers) {
    if (typeof answer === 'string') report.notes.push(answer);
    else report.servers.push(answer);
  }
  return report;
}

async function status(context: Context, flags: StatusFlags): Promise<number> {
  if (flags.watch === true && flags.json === true) {
    throw new UsageError('ERR_USAGE', 'status: --watch is a view for people: not with --json');
  }
  if (flags.watch === true) return runWatch(() => gather(context), WATCH_INTERVAL_MS);
  const report = await gather(context);
  if (flags.json === true) printJson(report);
  else for (const line of reportLines(report)) printLine(line);
  return 0;
}

export function register(program: Command, context: Context): void {
  program.command('status')
    .description('show the servers running on this catalog: listeners, connections, requests, ' +
      'errors and latency per export')
    .option('--json', 'JSON output')
    .option('--watch', 'a live view refreshed every second, with per-second rates (q quits)')
    .action((flags: StatusFlags) => context.run(() => status(context, flags)));
}
