/**
 * kill-point: named steps of the multi-step commands where a test may have this process end by
 * SIGKILL, as a crash or `kill -9` would, to show that each command is all or nothing
 * (test/cli/sigkill-commands.test.ts). `XVD_TEST_KILL_AT=NAME` kills at the first pass of point
 * NAME, `NAME@N` at the N-th. The variable is read once, when this module loads; unset, as
 * outside tests, every point does nothing.
 */
import assert from 'node:assert';

interface Target {
  name: string;
  pass: number;
}

/** `NAME` or `NAME@N` (N >= 1); null when unset or malformed (then nothing is killed). */
export function parseKillAt(text: string | undefined): Target | null {
  if (text === undefined || text === '') return null;
  const match = /^([a-z-]+:[a-z-]+)(?:@(\d{1,9}))?$/.exec(text);
  if (match === null) return null;
  const pass = match[2] === undefined ? 1 : Number(match[2]);
  return pass >= 1 ? { name: match[1]!, pass } : null;
}

const target = parseKillAt(process.env['XVD_TEST_KILL_AT']);
let passes = 0;

/** Marks that step `name` (`command:step`) is done; ends the process here when so asked. */
export function killPoint(name: string): void {
  assert(/^[a-z-]+:[a-z-]+$/.test(name));
  if (target === null || target.name !== name) return;
  passes += 1;
  if (passes === target.pass) process.kill(process.pid, 'SIGKILL');
}
