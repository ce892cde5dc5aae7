/**
 * vbd: attach sources to domains (add_vbd_to_dom.py, remove_vbd_from_dom.py, list_vbds.py).
 *
 * SOURCE is one of
 *   vd:ID                         a live VD (its extent map at the time of adding)
 *   phy:PATH                      a whole block device, partition or file (or an RBD pool
 *                                 member, rbd:POOL/IMAGE)
 *   extents:PATH:OFF+LEN[,…]      an explicit extent list; OFF and LEN are sizes (bare = MiB,
 *                                 suffixes B/S/K/M/G/T; OFF may be 0); PATH may contain ':'
 * The NBD export name of a VBD is `DOMAIN/DEVICE`. A path is stored in one canonical form per
 * file or device whatever name it was given by (canonicalPath), because the catalog compares
 * paths as strings. Sharing safety (createlinuxdom.py's vbd_expert): the catalog refuses overlap
 * with other VBDs above --expert; here the host side is checked: a source sharing bytes with a
 * mounted or swap device needs --expert 1 to read it and --expert 2 to write it. Storage the
 * catalog cannot compare by path and offset, because it is the same storage under another name
 * (identitiesRelated: a disk and its partition, a loop device and its backing file, either way),
 * is judged by the relation alone, as if the ranges overlapped: a pool member counts as a writer
 * (its VDs), another VBD by its mode, and the level needed is the number of writers.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../errors';
import { LIMITS } from '../../limits';
import { formatSize, parseSize } from '../../size';
import { parseDeviceName, parseDomain, parseExpert, parseId, parseMode } from '../args';
import type { Context } from '../context';
import { printJson, printTable } from '../output';
import type { PieceRecord } from '../port';
import { isRbdPath } from '../../backing/rbd-backing';
import {
  busyReason, identitiesEqual, identitiesRelated, probeMember, tryIdentity, type MemberIdentity,
  type MemberProbe,
} from '../probe';

function usage(message: string): UsageError {
  return new UsageError('ERR_USAGE', message);
}

function parseOffset(text: string): number {
  return /^0+[a-z]*$/i.test(text.trim()) ? 0 : parseSize(text, 'extent offset');
}

/** `PATH:OFF+LEN` → a piece; the last ':' separates the path. */
function parseExtent(text: string): PieceRecord {
  const colon = text.lastIndexOf(':');
  const plus = text.lastIndexOf('+');
  if (colon <= 0 || plus < colon) throw usage(`extent '${text}': expected PATH:OFFSET+LENGTH`);
  const offset = parseOffset(text.slice(colon + 1, plus));
  const length = parseSize(text.slice(plus + 1), 'extent length');
  return { path: text.slice(0, colon), offset, length };
}

export function parseExtentList(text: string): PieceRecord[] {
  const parts = text.split(',').filter((part) => part !== '');
  if (parts.length === 0) throw usage('extents: empty extent list');
  if (parts.length > LIMITS.vbdExtentListMax) {
    throw usage(`extents: more than ${LIMITS.vbdExtentListMax} extents`);
  }
  return parts.map(parseExtent);
}

/**
 * The name the catalog knows the bytes of `probe` by. The catalog compares paths as strings
 * (sharing, allocation blocking, check), so every name of one file or device must become one:
 * a pool member's path, else the path of an existing phy:/extents: VBD, when it is the same file
 * (st_dev, st_ino) or the same device (st_rdev); else the real path (symlinks, `..` and relative
 * paths resolved).
 */
function canonicalPath(known: readonly string[], probe: MemberProbe): string {
  if (known.includes(probe.pathReal)) return probe.pathReal;
  for (const knownPath of known) {
    const identity = tryIdentity(knownPath);
    if (identity !== null && identitiesEqual(identity, probe.identity)) return knownPath;
  }
  return probe.pathReal;
}

/**
 * The paths the catalog holds, pool members first. Relative paths of rows stored before paths
 * were resolved are left out: they name nothing for sure.
 */
function knownPaths(context: Context): string[] {
  const catalog = context.catalog();
  const vbdPaths = catalog.vbdList().filter((vbd) => !vbd.source.startsWith('vd:'))
    .flatMap((vbd) => vbd.pieces.map((piece) => piece.path))
    .filter((file) => path.isAbsolute(file));
  return [...new Set([...catalog.members().map((member) => member.path), ...vbdPaths])];
}

/**
 * The canonical path and size of what a phy:/extents: source names. An RBD image
 * (`rbd:POOL/IMAGE`) must be a pool member: its size is the member's, its path the member's.
 */
function resolveTarget(context: Context, known: readonly string[], target: string,
): { path: string; sizeBytes: number } {
  if (!isRbdPath(target)) {
    const probe = probeMember(target);
    return { path: canonicalPath(known, probe), sizeBytes: probe.sizeBytes };
  }
  const member = context.catalog().members().find((m) => m.path === target);
  if (member === undefined) {
    throw new UsageError('ERR_CLI_MEMBER_MISSING',
      `vbd add: ${target}: an RBD image backs a VBD only as a pool member (xvd format it)`);
  }
  return { path: member.path, sizeBytes: member.sizeBytes };
}

/** The pieces of an extent list, each on its canonical path and within what it lies on. */
function resolveExtents(context: Context, text: string): PieceRecord[] {
  const pieces = parseExtentList(text);
  const known = knownPaths(context);
  const canonical = new Map<string, { path: string; sizeBytes: number }>();
  return pieces.map((piece) => {
    let target = canonical.get(piece.path);
    if (target === undefined) {
      target = resolveTarget(context, known, piece.path);
      canonical.set(piece.path, target);
    }
    if (piece.offset + piece.length > target.sizeBytes) {
      throw new UsageError('ERR_USAGE', `extent ${piece.path}:${piece.offset}+${piece.length}: ` +
        `ends past the end (${target.sizeBytes} bytes)`);
    }
    return { path: target.path, offset: piece.offset, length: piece.length };
  });
}

/** The pieces a SOURCE names, on canonical paths, checked against what they lie on. */
function resolveSource(context: Context, source: string): PieceRecord[] {
  if (source.startsWith('vd:')) return context.catalog().show(parseId(source.slice(3))).pieces;
  if (source.startsWith('phy:')) {
    const target = resolveTarget(context, knownPaths(context), source.slice(4));
    return [{ path: target.path, offset: 0, length: target.sizeBytes }];
  }
  if (source.startsWith('extents:')) {
    return resolveExtents(context, source.slice('extents:'.length));
  }
  throw usage(`source '${source}': expected vd:ID, phy:PATH or extents:PATH:OFFSET+LENGTH,…`);
}

function refuseHostUse(pieces: PieceRecord[], mode: 'r' | 'w', expert: 0 | 1 | 2): void {
  const levelNeeded = mode === 'w' ? 2 : 1;
  if (expert >= levelNeeded) return;
  for (const file of new Set(pieces.map((piece) => piece.path))) {
    if (isRbdPath(file)) continue; // an RBD image is not mounted or swap on this host
    const busy = busyReason(probeMember(file));
    if (busy !== null) {
      throw new UsageError('ERR_CLI_MEMBER_IN_USE', `vbd add: ${file}: ${busy} on the host ` +
        `(needs --expert ${levelNeeded})`);
    }
  }
}

/** What else the catalog holds bytes on: pool members (writers) and phy:/extents: VBD targets. */
function relatedCandidates(context: Context): { label: string; path: string; isWriter: boolean }[] {
  const catalog = context.catalog();
  const members = catalog.members()
    .map((member) => ({ label: `pool member ${member.path}`, path: member.path, isWriter: true }));
  const vbds = catalog.vbdList().filter((vbd) => !vbd.source.startsWith('vd:'))
    .flatMap((vbd) => [...new Set(vbd.pieces.map((piece) => piece.path))].map((file) => ({
      label: `VBD ${vbd.domain}/${vbd.device} (${vbd.mode}) on ${file}`, path: file,
      isWriter: vbd.mode === 'w',
    })));
  return [...members, ...vbds];
}

/**
 * Refuses pieces on storage related to a pool member or another VBD's target (same bytes under
 * another name, offsets not comparable) beyond the expert level: one level per writer.
 */
function refuseRelated(context: Context, pieces: PieceRecord[], mode: 'r' | 'w',
  expert: 0 | 1 | 2): void {
  const candidates = relatedCandidates(context);
  const identities = new Map<string, MemberIdentity | null>();
  const identityOf = (file: string): MemberIdentity | null => {
    if (!identities.has(file)) identities.set(file, tryIdentity(file));
    return identities.get(file) ?? null;
  };
  for (const file of new Set(pieces.map((piece) => piece.path))) {
    const mine = identityOf(file);
    if (mine === null) continue;
    for (const candidate of candidates) {
      const writers = (mode === 'w' ? 1 : 0) + (candidate.isWriter ? 1 : 0);
      if (writers <= expert || candidate.path === file) continue;
      const theirs = identityOf(candidate.path);
      if (theirs === null || !identitiesRelated(mine, theirs)) continue;
      throw new UsageError('ERR_VBD_SHARING', `vbd add: ${file} is the storage of ` +
        `${candidate.label} under another name (disk/partition or loop device/backing file): ` +
        `needs --expert ${writers}, have ${expert}`);
    }
  }
}

interface AddOptions {
  domain: string;
  mode: string;
  expert?: string;
}

function add(context: Context, source: string, deviceText: string, options: AddOptions): void {
  const device = parseDeviceName(deviceText);
  const domain = parseDomain(options.domain);
  const mode = parseMode(options.mode);
  const expert = options.expert === undefined ? 0 : parseExpert(options.expert);
  const pieces = resolveSource(context, source);
  refuseHostUse(pieces, mode, expert);
  refuseRelated(context, pieces, mode, expert);
  context.catalog().vbdAdd({ domain, device, mode, source, pieces, expert });
}

function list(context: Context, options: { json?: boolean }): void {
  const vbds = context.catalog().vbdList();
  const sizeOf = (pieces: PieceRecord[]): number => pieces.reduce((sum, p) => sum + p.length, 0);
  if (options.json === true) {
    printJson(vbds.map((vbd) => ({
      domain: vbd.domain, device: vbd.device, mode: vbd.mode, source: vbd.source,
      export: `${vbd.domain}/${vbd.device}`, size: sizeOf(vbd.pieces), extents: vbd.pieces,
    })));
    return;
  }
  printTable(['EXPORT', 'MODE', 'SIZE', 'SOURCE'], vbds.map((vbd) => [
    `${vbd.domain}/${vbd.device}`, vbd.mode, formatSize(sizeOf(vbd.pieces)), vbd.source,
  ]));
}

export function register(program: Command, context: Context): void {
  const vbd = program.command('vbd').description('virtual block devices: what domains see');
  vbd.command('add').argument('<source>', 'vd:ID | phy:PATH | extents:PATH:OFF+LEN[,…]')
    .argument('<device>', 'device name, e.g. xvda (export name DOMAIN/DEVICE)')
    .description('attach a source to a domain (add_vbd_to_dom.py)')
    .requiredOption('--domain <n>', 'domain number')
    .requiredOption('--mode <r|w>', 'read-only or writable')
    .option('--expert <level>', 'sharing safety: 0 share read-only only (default), 1 one ' +
      'writer with readers, 2 anything')
    .addHelpText('after', '\nextents: sizes take B/S/K/M/G/T suffixes, a bare number is MiB, ' +
      'e.g.\n  xvd vbd add extents:/dev/sdb:0+1G,/pool.img:4M+512M xvdb --domain 1 --mode r')
    .action((source: string, device: string, options: AddOptions) =>
      context.run(async () => add(context, source, device, options)));
  vbd.command('remove').argument('<device>').description('detach (remove_vbd_from_dom.py)')
    .requiredOption('--domain <n>', 'domain number')
    .action((device: string, options: { domain: string }) => context.run(async () => {
      const [name, domain] = [parseDeviceName(device), parseDomain(options.domain)];
      context.catalog().vbdRemove(domain, name);
    }));
  vbd.command('list').description('list VBDs (list_vbds.py)').option('--json', 'JSON output')
    .action((options: { json?: boolean }) => context.run(async () => list(context, options)));
}
