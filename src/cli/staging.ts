/**
 * staging: a new file appears whole or not at all, SIGKILL included. It is written under a
 * staging name in its directory, `.NAME.xvd-PID-START` (the owner as src/catalog/liveness.ts
 * knows a process), synced, then linked to its name: link(2) is atomic and never replaces a file
 * that exists. The staging name is then removed and the directory synced. A staging file that a
 * killed process left is removed by the next process that stages the same name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../errors';
import { isProcessAlive, processStartTime } from '../catalog/liveness';

const STAGING_MARK = '.xvd-';

/** The staging name of `target` for this process. */
export function stagingPathOf(target: string): string {
  const owner = `${process.pid}-${processStartTime(process.pid)}`;
  return path.join(path.dirname(target), `.${path.basename(target)}${STAGING_MARK}${owner}`);
}

/** Removes staging files of `target` whose process is gone; returns how many. */
export function removeStaleStaging(target: string): number {
  const prefix = `.${path.basename(target)}${STAGING_MARK}`;
  let names: string[];
  try {
    names = fs.readdirSync(path.dirname(target));
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const match = /^(\d+)-(\d+)$/.exec(name.slice(prefix.length));
    if (match === null || isProcessAlive(Number(match[1]), match[2]!)) continue;
    fs.rmSync(path.join(path.dirname(target), name), { force: true });
    removed += 1;
  }
  return removed;
}

function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Gives the synced staging file its name; ERR_CLI_FILE when the name exists by now. The staging
 * name is gone afterwards either way.
 */
export function publishStaged(staging: string, target: string, op: string): void {
  try {
    fs.linkSync(staging, target);
  } catch (cause) {
    fs.rmSync(staging, { force: true });
    const code = (cause as { code?: string }).code ?? 'link failed';
    const what = code === 'EEXIST' ? 'already exists' : code;
    throw new UsageError('ERR_CLI_FILE', `${op}: ${target}: ${what}`, { cause });
  }
  fs.rmSync(staging, { force: true });
  syncDirectory(path.dirname(path.resolve(target)));
}
