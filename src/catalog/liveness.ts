/**
 * liveness: whether a registered server process, or an importing one, still runs. A pid alone is
 * not enough (pids are reused), so the start time from /proc/PID/stat (field 22, clock ticks
 * since boot) is compared; a process recorded on another host is not judged from this one.
 */
import fs from 'node:fs';
import os from 'node:os';

/** Start time of a process as recorded in /proc, or '' when it does not exist or has exited. */
export function processStartTime(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); field 22 is rest[19]. A zombie has exited: no start time.
    return rest[0] === 'Z' ? '' : rest[19] ?? '';
  } catch {
    return '';
  }
}

/** Whether a row's recorded host is this one (null: recorded before hosts were, so this one). */
export function isOnThisHost(host: string | null): boolean {
  return host === null || host === os.hostname();
}

/**
 * Whether the process of an import row still runs. A row of another host (a catalog shared by
 * many hosts) cannot be judged from here: it counts as running, never as abandoned.
 */
export function isImporterAlive(row: { pid: number; pid_start_time: string; host: string | null },
): boolean {
  if (!isOnThisHost(row.host)) return true;
  return isProcessAlive(row.pid, row.pid_start_time);
}

export function isProcessAlive(pid: number, startTime: string): boolean {
  return startTime !== '' && processStartTime(pid) === startTime;
}
