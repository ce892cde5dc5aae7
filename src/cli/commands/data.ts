/**
 * data: `import FILE` (vd_read_from_file.py) and `export ID FILE` (vd_to_file.py), through
 * src/cli/copy.ts. Import is all or nothing, SIGKILL included: it allocates a VD of exactly the
 * file's size as 'importing' (owned by this process; not listed, attached or served), lets the
 * catalog zero it, copies only the file's non-zero data, syncs it, and only then flips the VD
 * live in one transaction and prints its id. A failed copy frees the VD again; a killed one is
 * freed by the next xvd command (the owner is gone). Export refuses an existing file and a
 * deleted VD (its extents may hold another VD's data by now) and writes holes for zero blocks;
 * the file appears whole or not at all (src/cli/staging.ts).
 */
import fs from 'node:fs';
import type { Command } from 'commander';
import { XvdError, UsageError } from '../../errors';
import { parseId, parseName, parseSeconds } from '../args';
import type { Context } from '../context';
import { exportTo, importInto } from '../copy';
import { killPoint } from '../kill-point';
import { printLine } from '../output';
import { publishStaged, removeStaleStaging, stagingPathOf } from '../staging';

function fileError(message: string): UsageError {
  return new UsageError('ERR_CLI_FILE', message);
}

function sourceSize(file: string): number {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw fileError(`import: ${file}: no such file`);
  }
  if (!stat.isFile()) throw fileError(`import: ${file}: not a regular file`);
  if (stat.size === 0) throw fileError(`import: ${file}: empty file`);
  return stat.size;
}

interface ImportOptions {
  expiry?: string;
  name?: string;
}

async function importFile(context: Context, file: string, options: ImportOptions): Promise<void> {
  const expirySeconds = options.expiry === undefined ? 0 : parseSeconds(options.expiry);
  const name = options.name === undefined ? null : parseName(options.name);
  const sizeBytes = sourceSize(file);
  const catalog = context.catalog();
  const id = catalog.beginImport({ sizeBytes, expirySeconds, name, onPath: null,
    isZeroing: true });
  killPoint('import:allocated');
  try {
    await catalog.zeroPending();
    killPoint('import:zeroed');
    const isOwned = () => catalog.isImportOwned(id);
    await importInto(file, catalog.show(id).pieces, sizeBytes, isOwned); // synced on return
  } catch (error) {
    if (catalog.isImportOwned(id)) catalog.abandonImport(id);
    throw error;
  }
  killPoint('import:synced');
  catalog.completeImport(id);
  killPoint('import:completed');
  printLine(String(id));
}

async function exportVd(context: Context, idText: string, file: string): Promise<void> {
  const id = parseId(idText);
  if (fs.existsSync(file)) throw fileError(`export: ${file}: already exists`);
  const { vd, pieces } = context.catalog().show(id);
  if (!vd.isLive) {
    // its extents may already hold another VD's data
    throw new XvdError('ERR_VD_DELETED', `export: VD ${id}: deleted (undelete it first)`);
  }
  removeStaleStaging(file);
  const staging = stagingPathOf(file);
  try {
    await exportTo(pieces, vd.sizeBytes, staging);
  } catch (error) {
    fs.rmSync(staging, { force: true });
    throw error;
  }
  killPoint('export:synced');
  publishStaged(staging, file, 'export');
}

export function register(program: Command, context: Context): void {
  program.command('import').argument('<file>', 'image file to copy into a new VD')
    .description('create a VD of the file\'s size, copy the file in, print the id')
    .option('--expiry <seconds>', 'expire after this many seconds (0 = never)')
    .option('--name <name>', 'a label for people')
    .action((file: string, options: ImportOptions) =>
      context.run(() => importFile(context, file, options)));
  program.command('export').argument('<id>').argument('<file>', 'new file to write (sparse)')
    .description('copy a VD into a new sparse file (progress bar on a terminal)')
    .action((id: string, file: string) => context.run(() => exportVd(context, id, file)));
}
