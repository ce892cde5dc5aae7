/**
 * liveness: whether a registered server process still runs. A pid alone is not enough (pids are
 * reused), so the start time from /proc/PID/stat (field 22, clock ticks since boot) is compared.
 */
import fs from 'node:fs';

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

export function isProcessAlive(pid: number, startTime: string): boolean {
  return startTime !== '' && processStartTime(pid) === startTime;
}
