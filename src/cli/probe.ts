/**
 * probe: what a path given to `xvd format` (or `vbd add phy:`) really is, and whether it shares
 * bytes with anything already in use.
 *
 * A member is a regular file or a block device (whole disk or partition). Its size comes from
 * st_size or from the kernel (BLKGETSIZE64 through src/sys), never from a guess. Its *identity* is
 * where its bytes live, so that two names for the same bytes are caught:
 *   - a file: st_dev + st_ino (hard links, bind mounts, symlinks all collapse to one);
 *   - a block device: its whole disk's major:minor plus a half-open sector range
 *     (/sys/dev/block/MAJ:MIN/{partition,start,size}; the parent directory is the disk), so that a
 *     disk and its own partition overlap, and two partitions overlap only if their ranges do;
 *   - a loop device (or a partition on one) also carries its backing file's identity
 *     (/sys/block/loopN/loop/backing_file), so a loop device and its backing file overlap.
 * Two such names are *related* (identitiesRelated): `vbd add` cannot compare their offsets, so it
 * judges the relation alone.
 * In use: a block device is busy when it or anything overlapping it appears in
 * /proc/self/mountinfo (major:minor, field 3) or /proc/swaps.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IoError, UsageError } from '../errors';
import { blockDeviceSize } from '../sys';

const SECTOR_BYTES = 512;

/** Where a member's bytes live. Ranges are half-open, in 512-byte sectors of the whole disk. */
export interface MemberIdentity {
  /** Identities of files whose bytes these are (the file itself, a loop device's backing file). */
  files: { dev: number; ino: number }[];
  /** The whole disk and the sector range on it, for block devices. */
  disk: { majMin: string; startSector: number; endSector: number } | null;
}

export interface MemberProbe {
  /** Absolute path with symlinks resolved. */
  pathReal: string;
  kind: 'file' | 'block';
  sizeBytes: number;
  /** `MAJ:MIN` of a block device, null for a file. */
  majMin: string | null;
  identity: MemberIdentity;
}

function fail(code: 'ERR_CLI_MEMBER_MISSING' | 'ERR_CLI_MEMBER_KIND', message: string): never {
  throw new UsageError(code, message);
}

function readSys(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

function majMinOf(rdev: number): string {
  // glibc's gnu_dev_major/minor split of a 32-bit dev_t as Node reports it.
  const major = ((rdev >>> 8) & 0xfff) | ((Math.floor(rdev / 2 ** 32) & 0xfffff000) >>> 0);
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
  return `${major}:${minor}`;
}

/** The sysfs directory of a block device, resolved (…/sda/sda1 for a partition). */
function sysDirOf(majMin: string): string | null {
  try {
    return fs.realpathSync(`/sys/dev/block/${majMin}`);
  } catch {
    return null;
  }
}

/** Backing file identity of a loop device's sysfs directory, if it is one. */
function loopBackingOf(sysDir: string): { dev: number; ino: number } | null {
  const backing = readSys(path.join(sysDir, 'loop', 'backing_file'));
  if (backing === null || backing === '') return null;
  try {
    const stat = fs.statSync(backing.replace(/ \(deleted\)$/, ''));
    return { dev: stat.dev, ino: stat.ino };
  } catch {
    return null;
  }
}

function blockIdentity(majMin: string, sizeBytes: number): MemberIdentity {
  const sysDir = sysDirOf(majMin);
  const sizeSectors = Math.ceil(sizeBytes / SECTOR_BYTES);
  if (sysDir === null) {
    return { files: [], disk: { majMin, startSector: 0, endSector: sizeSectors } };
  }
  const isPartition = readSys(path.join(sysDir, 'partition')) !== null;
  const diskDir = isPartition ? path.dirname(sysDir) : sysDir;
  const diskMajMin = readSys(path.join(diskDir, 'dev')) ?? majMin;
  const startSector = isPartition ? Number(readSys(path.join(sysDir, 'start')) ?? '0') : 0;
  const backing = loopBackingOf(diskDir);
  return {
    files: backing === null ? [] : [backing],
    disk: { majMin: diskMajMin, startSector, endSector: startSector + sizeSectors },
  };
}

function deviceSize(pathReal: string): number {
  let fd: number;
  try {
    fd = fs.openSync(pathReal, fs.constants.O_RDONLY);
  } catch (cause) {
    throw IoError.fromSystem(cause, 'open');
  }
  try {
    return blockDeviceSize(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Stats `target` and describes it; refuses a missing path or anything but a file or device. */
export function probeMember(target: string): MemberProbe {
  let stat: fs.Stats;
  let pathReal: string;
  try {
    pathReal = fs.realpathSync(target);
    stat = fs.statSync(pathReal);
  } catch {
    return fail('ERR_CLI_MEMBER_MISSING', `format: ${target}: no such file or device`);
  }
  if (stat.isFile()) {
    return {
      pathReal, kind: 'file', sizeBytes: stat.size, majMin: null,
      identity: { files: [{ dev: stat.dev, ino: stat.ino }], disk: null },
    };
  }
  if (stat.isBlockDevice()) {
    const majMin = majMinOf(stat.rdev);
    const sizeBytes = deviceSize(pathReal);
    const identity = blockIdentity(majMin, sizeBytes);
    return { pathReal, kind: 'block', sizeBytes, majMin, identity };
  }
  const kind = stat.isDirectory() ? 'a directory' : 'not a regular file or block device';
  return fail('ERR_CLI_MEMBER_KIND', `format: ${target}: ${kind}`);
}

/** Whether two identities share any byte. */
export function identitiesOverlap(a: MemberIdentity, b: MemberIdentity): boolean {
  for (const fileA of a.files) {
    if (b.files.some((fileB) => fileB.dev === fileA.dev && fileB.ino === fileA.ino)) return true;
  }
  if (a.disk === null || b.disk === null || a.disk.majMin !== b.disk.majMin) return false;
  return a.disk.startSector < b.disk.endSector && b.disk.startSector < a.disk.endSector;
}

/**
 * Whether two identities are the same bytes at the same offsets: the same file (st_dev, st_ino),
 * or the same block device range (whole disk by st_rdev, same first sector). A disk and its
 * partition, or a loop device and its backing file, overlap (identitiesOverlap) but are not the
 * same: their offsets differ.
 */
export function identitiesEqual(a: MemberIdentity, b: MemberIdentity): boolean {
  if (a.disk === null || b.disk === null) {
    const [fileA, fileB] = [a.files[0], b.files[0]];
    return a.disk === b.disk && fileA !== undefined && fileB !== undefined
      && fileA.dev === fileB.dev && fileA.ino === fileB.ino;
  }
  return a.disk.majMin === b.disk.majMin && a.disk.startSector === b.disk.startSector;
}

/**
 * Whether two identities are the same storage under another name: they share bytes but not at
 * the same offsets (a disk and its partition, a loop device and its backing file, two loop
 * devices over one file), so paths and byte ranges cannot be compared between them.
 */
export function identitiesRelated(a: MemberIdentity, b: MemberIdentity): boolean {
  return identitiesOverlap(a, b) && !identitiesEqual(a, b);
}

/** Identity of a path that may have vanished since it was added: null when it cannot be probed. */
export function tryIdentity(target: string): MemberIdentity | null {
  try {
    return probeMember(target).identity;
  } catch {
    return null;
  }
}

function mountedMajMins(): string[] {
  const text = readSys('/proc/self/mountinfo') ?? '';
  return text.split('\n').map((line) => line.split(' ')[2] ?? '').filter((field) => field !== '');
}

function swapPaths(): string[] {
  const lines = (readSys('/proc/swaps') ?? '').split('\n').slice(1);
  return lines.map((line) => line.split(/\s+/)[0] ?? '').filter((field) => field !== '');
}

/** Every block device that is mounted or used as swap, as identities. */
function busyIdentities(): { what: string; identity: MemberIdentity }[] {
  const busy: { what: string; identity: MemberIdentity }[] = [];
  for (const majMin of new Set(mountedMajMins())) {
    if (majMin.startsWith('0:')) continue; // anonymous devices: tmpfs, overlay, proc…
    const sysDir = sysDirOf(majMin);
    if (sysDir === null) continue;
    const sizeSectors = Number(readSys(path.join(sysDir, 'size')) ?? '0');
    busy.push({ what: `mounted (${majMin})`, identity: blockIdentity(majMin, sizeSectors * 512) });
  }
  for (const swap of swapPaths()) {
    const identity = tryIdentity(swap);
    if (identity !== null) busy.push({ what: `used as swap (${swap})`, identity });
  }
  return busy;
}

/** Why a member cannot be used (it, or a loop device over it, is mounted or swap), or null. */
export function busyReason(probe: MemberProbe): string | null {
  for (const busy of busyIdentities()) {
    if (identitiesOverlap(probe.identity, busy.identity)) return busy.what;
  }
  return null;
}
