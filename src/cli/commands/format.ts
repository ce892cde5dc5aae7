/**
 * format: add a file, partition or disk to the free pool (vd_format.py), after probing it
 * (src/cli/probe.ts). Refused: a missing path (unless --size creates an image file), a directory,
 * a path already in the pool, anything sharing bytes with a member (same file by another path, a
 * disk and its partition, a loop device and its backing file), a mounted or swap device, anything
 * smaller than one extent, a file or device under a phy:/extents: VBD, an extent size that is
 * not a multiple of 512. An image file created by --size appears whole (src/cli/staging.ts) and
 * is removed again when formatting fails, so a failure leaves nothing behind; a kill after it
 * appeared leaves it whole and unformatted, and the same command run again formats it.
 * `rbd:POOL/IMAGE` is an RBD image, created thin by --size or adopted (src/cli/rbd-member.ts).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../../errors';
import { LIMITS } from '../../limits';
import { formatSize, parseSize } from '../../size';
import type { Context } from '../context';
import { killPoint } from '../kill-point';
import { printJson, printLine } from '../output';
import type { MemberRecord, VbdRecord } from '../port';
import {
  busyReason, identitiesOverlap, probeMember, tryIdentity, type MemberProbe,
} from '../probe';
import { isRbdPath } from '../../backing/rbd-backing';
import { formatRbdMember } from '../rbd-member';
import { publishStaged, removeStaleStaging, stagingPathOf } from '../staging';

interface FormatOptions {
  extentSize?: string;
  size?: string;
  json?: boolean;
}

export function parseExtentSize(text: string | undefined): number {
  if (text === undefined) return LIMITS.extentSizeDefault;
  const bytes = parseSize(text, '--extent-size');
  if (bytes % LIMITS.extentSizeMin !== 0) {
    throw new UsageError('ERR_USAGE', `--extent-size '${text}': ${bytes} bytes is not a multiple ` +
      `of ${LIMITS.extentSizeMin}`);
  }
  if (bytes > LIMITS.extentSizeMax) {
    throw new UsageError('ERR_USAGE', `--extent-size '${text}': more than ` +
      `${formatSize(LIMITS.extentSizeMax)}`);
  }
  return bytes;
}

/**
 * Creates a missing image file of `sizeBytes`, sparse; true when it created one. It appears
 * whole (src/cli/staging.ts): a killed format leaves no empty or short file at `target`.
 */
function createImage(target: string, sizeBytes: number | null): boolean {
  if (sizeBytes === null || fs.existsSync(target)) return false;
  removeStaleStaging(target);
  const staging = stagingPathOf(target);
  let fd: number;
  try {
    fd = fs.openSync(staging, 'wx');
  } catch (cause) {
    const reason = (cause as { code?: string }).code ?? 'cannot create';
    throw new UsageError('ERR_CLI_MEMBER_MISSING', `format: ${target}: cannot create: ${reason}`);
  }
  try {
    fs.ftruncateSync(fd, sizeBytes);
    fs.fsyncSync(fd);
  } catch (error) {
    fs.rmSync(staging, { force: true });
    throw error;
  } finally {
    fs.closeSync(fd);
  }
  killPoint('format:staged');
  publishStaged(staging, target, 'format');
  killPoint('format:created');
  return true;
}

/** Refuses a probe that shares bytes with a member, backs a phy:/extents: VBD, or is in use. */
function refuseConflicts(target: string, probe: MemberProbe, members: MemberRecord[],
  vbds: VbdRecord[]): void {
  for (const member of members) {
    if (member.path === probe.pathReal || member.path === target) {
      throw new UsageError('ERR_CLI_MEMBER_OVERLAP', `format: ${target}: already in the pool`);
    }
    const identity = tryIdentity(member.path);
    if (identity !== null && identitiesOverlap(identity, probe.identity)) {
      throw new UsageError('ERR_CLI_MEMBER_OVERLAP',
        `format: ${target}: shares bytes with pool member ${member.path}`);
    }
  }
  for (const vbd of vbds) {
    if (vbd.source.startsWith('vd:')) continue; // on pool members, checked above
    for (const piece of vbd.pieces) {
      const identity = tryIdentity(piece.path);
      if (identity !== null && identitiesOverlap(identity, probe.identity)) {
        throw new UsageError('ERR_CLI_MEMBER_IN_USE',
          `format: ${target}: backs VBD ${vbd.domain}/${vbd.device} (${vbd.source})`);
      }
    }
  }
  const busy = busyReason(probe);
  if (busy !== null) throw new UsageError('ERR_CLI_MEMBER_IN_USE', `format: ${target}: ${busy}`);
}

function formatProbed(context: Context, target: string, extentSizeBytes: number): MemberRecord {
  const probe = probeMember(target);
  if (probe.sizeBytes < extentSizeBytes) {
    throw new UsageError('ERR_CLI_MEMBER_TOO_SMALL', `format: ${target}: ` +
      `${probe.sizeBytes} bytes is smaller than one extent (${extentSizeBytes} bytes)`);
  }
  const catalog = context.catalog();
  refuseConflicts(target, probe, catalog.members(), catalog.vbdList());
  return catalog.format({
    path: probe.pathReal,
    kind: probe.kind,
    sizeBytes: probe.sizeBytes,
    extentSizeBytes,
    majMin: probe.majMin,
    identity: probe.identity,
  });
}

/** Probes, checks and adds `target`; shared with quickstart. */
export function formatMember(context: Context, target: string, extentSizeBytes: number,
  createSizeBytes: number | null): MemberRecord {
  const isCreated = createImage(target, createSizeBytes);
  try {
    return formatProbed(context, target, extentSizeBytes);
  } catch (error) {
    if (isCreated) fs.rmSync(target, { force: true });
    throw error;
  }
}

async function format(context: Context, target: string, options: FormatOptions): Promise<void> {
  const extentSizeBytes = parseExtentSize(options.extentSize);
  const createSizeBytes = options.size === undefined ? null : parseSize(options.size, '--size');
  const member = isRbdPath(target)
    ? await formatRbdMember(context, target, extentSizeBytes, createSizeBytes)
    : formatMember(context, target, extentSizeBytes, createSizeBytes);
  if (options.json === true) {
    printJson({ path: member.path, kind: member.kind, size: member.sizeBytes,
      extent_size: member.extentSizeBytes, extents: member.extentCount });
    return;
  }
  const extent = formatSize(member.extentSizeBytes);
  printLine(`${member.path}: ${member.extentCount} extents of ${extent}` +
    ` (${formatSize(member.extentCount * member.extentSizeBytes)}) added to the pool`);
}

export function register(program: Command, context: Context): void {
  program.command('format')
    .argument('<path>', 'block device, partition, image file or rbd:POOL/IMAGE')
    .description('add a device or image file to the free pool (vd_format.py)')
    .option('--extent-size <size>', 'extent size, a multiple of 512 (default 4M)')
    .option('--size <size>', 'create the image file (sparse) or RBD image (thin) if missing')
    .option('--json', 'JSON output')
    .action((target: string, options: FormatOptions) =>
      context.run(() => format(context, target, options)));
}
