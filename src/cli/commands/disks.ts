/**
 * disks: the VD commands of the seed's xc_vd_tool.py: create, refresh, delete, enlarge, undelete,
 * list, show, free. Each parses its arguments fully before opening the catalog, so a usage error
 * never touches it; each change is one catalog call (one transaction).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { formatSize, parseSize } from '../../size';
import { parseExpert, parseId, parseName, parseSeconds } from '../args';
import type { Context } from '../context';
import { killPoint } from '../kill-point';
import { formatTime, printJson, printLine, printTable } from '../output';
import type { VdRecord } from '../port';

/** Members are recorded by real path; `--on` may name one through a symlink. */
function realOrSame(target: string): string {
  try {
    return fs.realpathSync(target);
  } catch {
    return target;
  }
}

interface CreateOptions {
  expiry?: string;
  name?: string;
  on?: string;
  zero: boolean;
}

async function create(context: Context, sizeText: string, options: CreateOptions): Promise<void> {
  const sizeBytes = parseSize(sizeText);
  const expirySeconds = options.expiry === undefined ? 0 : parseSeconds(options.expiry);
  const name = options.name === undefined ? null : parseName(options.name);
  const catalog = context.catalog();
  const onPath = options.on === undefined ? null : realOrSame(options.on);
  const id = catalog.create({ sizeBytes, expirySeconds, name, onPath, isZeroing: options.zero });
  killPoint('create:allocated');
  await catalog.zeroPending();
  killPoint('create:zeroed');
  printLine(String(id));
}

interface UndeleteOptions {
  expiry?: string;
  expert?: string;
}

function stateText(vd: VdRecord): string {
  if (vd.isImporting) return 'importing';
  return vd.isLive ? 'live' : 'deleted';
}

function vdJson(vd: VdRecord): Record<string, unknown> {
  return {
    id: vd.id,
    name: vd.name,
    size: vd.sizeBytes,
    allocated: vd.allocatedBytes,
    expires_at: vd.expiresAt === null ? null : formatTime(vd.expiresAt),
    live: vd.isLive,
    state: stateText(vd),
  };
}

function list(context: Context, options: { all?: boolean; json?: boolean }): void {
  const disks = context.catalog().list(options.all === true);
  if (options.json === true) {
    printJson(disks.map(vdJson));
    return;
  }
  printTable(['ID', 'NAME', 'SIZE', 'EXPIRES', 'STATE'], disks.map((vd) => [
    String(vd.id), vd.name ?? '-', formatSize(vd.sizeBytes), formatTime(vd.expiresAt),
    stateText(vd),
  ]));
}

function show(context: Context, idText: string, options: { json?: boolean }): void {
  const id = parseId(idText);
  const { vd, pieces, sharing } = context.catalog().show(id);
  if (options.json === true) {
    printJson({ ...vdJson(vd), shared_bytes: sharing.sharedBytes, own_bytes: sharing.ownBytes,
      reserve_bytes: sharing.reserveBytes, origin: sharing.originId, extents: pieces });
    return;
  }
  printLine(`VD ${vd.id}${vd.name === null ? '' : ` (${vd.name})`}: ${formatSize(vd.sizeBytes)}, ` +
    `expires ${formatTime(vd.expiresAt)}${vd.isLive ? '' : `, ${stateText(vd)}`}`);
  const origin = sharing.originId === null ? '' : `, clone of VD ${sharing.originId}`;
  printLine(`shared ${formatSize(sharing.sharedBytes)}, own ${formatSize(sharing.ownBytes)}` +
    `${sharing.reserveBytes > 0 ? `, reserve ${formatSize(sharing.reserveBytes)}` : ''}${origin}`);
  let startVirtual = 0;
  printTable(['VIRTUAL', 'LENGTH', 'PATH', 'OFFSET'], pieces.map((piece) => {
    const row = [String(startVirtual), String(piece.length), piece.path, String(piece.offset)];
    startVirtual += piece.length;
    return row;
  }));
}

function free(context: Context, options: { json?: boolean }): void {
  const members = context.catalog().members();
  const freeBytes = members.reduce((sum, m) => sum + m.freeExtentCount * m.extentSizeBytes, 0);
  const totalBytes = members.reduce((sum, m) => sum + m.extentCount * m.extentSizeBytes, 0);
  if (options.json === true) {
    printJson({
      free: freeBytes,
      total: totalBytes,
      members: members.map((m) => ({
        path: m.path, kind: m.kind, size: m.sizeBytes, extent_size: m.extentSizeBytes,
        extents: m.extentCount, free_extents: m.freeExtentCount,
        free: m.freeExtentCount * m.extentSizeBytes,
      })),
    });
    return;
  }
  printTable(['PATH', 'KIND', 'EXTENT', 'SIZE', 'FREE'], members.map((m) => [
    m.path, m.kind, formatSize(m.extentSizeBytes), formatSize(m.extentCount * m.extentSizeBytes),
    formatSize(m.freeExtentCount * m.extentSizeBytes),
  ]));
  printLine(`free ${formatSize(freeBytes)} of ${formatSize(totalBytes)}`);
}

export function register(program: Command, context: Context): void {
  program.command('create').argument('<size>', 'visible size (bare number = MiB)')
    .description('create a VD and print its id (vd_create.py)')
    .option('--expiry <seconds>', 'expire after this many seconds (0 = never, the default)')
    .option('--name <name>', 'a label for people')
    .option('--on <path>', 'allocate only on this pool member')
    .option('--no-zero', 'do not zero reused extents (the seed behaviour; old data may show)')
    .action((size: string, options: CreateOptions) =>
      context.run(() => create(context, size, options)));
  program.command('refresh').argument('<id>')
    .argument('<seconds>', 'new expiry from now, 0 = never')
    .description('set the expiry of a live VD (vd_refresh.py)')
    .action((id: string, seconds: string) => context.run(async () => {
      const [vdId, expiry] = [parseId(id), parseSeconds(seconds)];
      context.catalog().refresh(vdId, expiry);
    }));
  program.command('delete').argument('<id>').description('expire a VD now (vd_delete.py)')
    .action((id: string) => context.run(async () => {
      const vdId = parseId(id);
      context.catalog().delete(vdId);
    }));
  program.command('enlarge').argument('<id>').argument('<size>', 'bytes to add (+ optional)')
    .description('grow a live VD by SIZE; new space reads as zero')
    .option('--no-zero', 'do not zero the added extents')
    .action((id: string, size: string, options: { zero: boolean }) => context.run(async () => {
      const [vdId, addBytes] = [parseId(id), parseSize(size.replace(/^\+/, ''))];
      const catalog = context.catalog();
      catalog.enlarge(vdId, addBytes, options.zero);
      killPoint('enlarge:allocated');
      await catalog.zeroPending();
    }));
  program.command('undelete').argument('<id>')
    .description('bring back a deleted VD whose extents were not reused (vd_undelete.py)')
    .option('--expiry <seconds>', 'new expiry (0 = never, the default)')
    .option('--expert <level>', 'sharing with VBDs added over its extents while it was ' +
      'deleted, as in vbd add: 0 none (default), 1 read-only ones, 2 anything')
    .action((id: string, options: UndeleteOptions) => context.run(async () => {
      const vdId = parseId(id);
      const expiry = options.expiry === undefined ? 0 : parseSeconds(options.expiry);
      const expert = options.expert === undefined ? 0 : parseExpert(options.expert);
      context.catalog().undelete(vdId, expiry, expert);
    }));
  program.command('list').description('list live VDs (--all: deleted ones too)')
    .option('--all', 'include deleted (expired) VDs').option('--json', 'JSON output')
    .action((options: { all?: boolean; json?: boolean }) =>
      context.run(async () => list(context, options)));
  program.command('show').argument('<id>').description('show a VD and its extent map')
    .option('--json', 'JSON output')
    .action((id: string, options: { json?: boolean }) =>
      context.run(async () => show(context, id, options)));
  program.command('free').description('free space per pool member (vd_freespace.py)')
    .option('--json', 'JSON output')
    .action((options: { json?: boolean }) => context.run(async () => free(context, options)));
}
