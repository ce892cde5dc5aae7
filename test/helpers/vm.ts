/**
 * vm helper: virtual machines that boot from a disk through qemu's own NBD client, on the test
 * host's kernel and initramfs (scripts/testhost/build.sh), from the golden root filesystem of
 * scripts/testhost/golden.sh (or a VD that holds a copy of it).
 *
 * `prepareGolden` builds (or finds cached) the golden ext4 image once per process. `bootVm`
 * runs scripts/testhost/boot.sh for one guest and resolves when it has powered off, failed or
 * timed out (its process group is killed past the timeout: no qemu outlives the call). The
 * golden init prints `XVD-VALUE: KEY=VALUE` lines (name, data_sha256) and `XVD-GUEST-DONE: NAME`
 * once its files are synced and / is read-only again; a failure prints `XVD-BOOT-FAIL:` (the
 * initramfs) or `XVD-GUEST-FAIL:` (the golden init).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runGrouped } from './testhost';

const ROOT = path.resolve(__dirname, '..', '..');
export const GOLDEN_SH = path.join(ROOT, 'scripts', 'testhost', 'golden.sh');
export const BOOT_SH = path.join(ROOT, 'scripts', 'testhost', 'boot.sh');

/** The golden image's build is mke2fs of a few MiB; its first run may install busybox. */
const GOLDEN_TIMEOUT_MS = 300_000;
/** Grace beyond boot.sh's own timeout (qemu's --kill-after is 5 s) before the group dies. */
const KILL_GRACE_MS = 15_000;
const VALUE_MARKER = 'XVD-VALUE: ';
const DONE_MARKER = 'XVD-GUEST-DONE: ';
const FAIL_PATTERN = /XVD-(?:BOOT|GUEST)-FAIL: (.*)|(Kernel panic.*)/;

let goldenPromise: Promise<string> | undefined;

/** Path of the golden root filesystem image, built once per process (golden.sh caches it). */
export function prepareGolden(): Promise<string> {
  goldenPromise ??= runGrouped('bash', [GOLDEN_SH], GOLDEN_TIMEOUT_MS).then((run) => {
    const golden = /^GOLDEN=(.+)$/m.exec(run.stdout)?.[1];
    if (run.exitCode !== 0 || golden === undefined) {
      throw new Error(`golden.sh exited ${run.exitCode}: ${run.stderr.slice(-2000)}`);
    }
    return golden;
  });
  return goldenPromise;
}

export interface BootOptions {
  /** qemu's drive: nbd://127.0.0.1:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH, or a file. */
  drive: string;
  /** The guest's name (letters, digits, - and _). */
  name: string;
  timeoutMs: number;
  /** More kernel command line words. */
  append?: string;
}

export interface VmResult {
  name: string;
  /** boot.sh's exit: 0 powered off, 1 the guest reported a failure, 3 qemu failed or timed
   * out; null when this process had to kill it. */
  exitCode: number | null;
  /** The guest printed `XVD-GUEST-DONE: <name>`. */
  isDone: boolean;
  /** The first failure line's text, or ''. */
  failure: string;
  values: Map<string, string>;
  console: string;
  elapsedMs: number;
}

/** Boots one guest; resolves once boot.sh has exited (never rejects for a guest failure). */
export async function bootVm(options: BootOptions): Promise<VmResult> {
  const timeoutS = Math.max(1, Math.ceil(options.timeoutMs / 1000));
  const args = [BOOT_SH, '--drive', options.drive, '--name', options.name,
    '--timeout', String(timeoutS)];
  if (options.append !== undefined) args.push('--append', options.append);
  const startMs = Date.now();
  const run = await runGrouped('bash', args, timeoutS * 1000 + KILL_GRACE_MS);
  const console = run.stdout + run.stderr;
  const values = new Map<string, string>();
  for (const line of console.split(/\r?\n/)) {
    const at = line.indexOf(VALUE_MARKER);
    if (at < 0) continue;
    const pair = line.slice(at + VALUE_MARKER.length);
    const equals = pair.indexOf('=');
    if (equals > 0) values.set(pair.slice(0, equals), pair.slice(equals + 1).trim());
  }
  const failed = FAIL_PATTERN.exec(console);
  return {
    name: options.name, exitCode: run.exitCode, values, console,
    isDone: console.includes(`${DONE_MARKER}${options.name}`),
    failure: failed === null ? '' : (failed[1] ?? failed[2] ?? '').trim(),
    elapsedMs: Date.now() - startMs,
  };
}

/** sha256 of a file, hex. */
export function sha256File(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** How many `extentBytes`-sized pieces of `a` differ from the same piece of `b` (equal sizes). */
export function differingExtents(a: string, b: string, extentBytes: number): number {
  const left = fs.readFileSync(a);
  const right = fs.readFileSync(b);
  if (left.length !== right.length) throw new Error(`sizes differ: ${a}, ${b}`);
  let count = 0;
  for (let start = 0; start < left.length; start += extentBytes) {
    const end = Math.min(left.length, start + extentBytes);
    if (left.subarray(start, end).compare(right.subarray(start, end)) !== 0) count++;
  }
  return count;
}
