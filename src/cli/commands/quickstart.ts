/**
 * quickstart: one command from a fresh checkout to a served disk. Idempotent: every step first
 * looks for what an earlier run made and reuses it, so a run killed at any point leaves a prefix
 * of the steps done (each step is all or nothing) and the next run completes it.
 *   1. a sparse pool image `pool.img` next to the catalog (LIMITS.quickstartPoolBytes), formatted;
 *   2. a VD named `quickstart` (LIMITS.quickstartDiskBytes);
 *   3. VBD `0/xvda`, writable, on that VD;
 *   4. serve it: SERVE HOOK — when src/cli/commands/serve.ts exists and exports
 *      `runServe(context: Context, options: { host: string; port: number }): Promise<number>`,
 *      quickstart calls it (and returns its exit code); until then it says serve is not available.
 *      `--no-serve` stops after step 3 (tests, scripts).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { LIMITS } from '../../limits';
import type { Context } from '../context';
import { killPoint } from '../kill-point';
import { printLine } from '../output';
import { formatMember } from './format';

const QUICKSTART_NAME = 'quickstart';
const QUICKSTART_DEVICE = 'xvda';
const QUICKSTART_DOMAIN = 0;
const QUICKSTART_HOST = '127.0.0.1';
const QUICKSTART_PORT = 10809;

type RunServe = (context: Context, options: { host: string; port: number }) => Promise<number>;

function loadServe(): RunServe | null {
  const file = path.join(__dirname, 'serve.js');
  if (!fs.existsSync(file)) return null;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require(file) as { runServe?: RunServe };
  return typeof loaded.runServe === 'function' ? loaded.runServe : null;
}

function ensurePool(context: Context): string {
  fs.mkdirSync(context.dataDir, { recursive: true });
  const pool = path.join(context.dataDir, 'pool.img');
  const poolReal = fs.existsSync(pool) ? fs.realpathSync(pool) : pool;
  const isMember = context.catalog().members().some((m) => m.path === poolReal || m.path === pool);
  if (!isMember) formatMember(context, pool, LIMITS.extentSizeDefault, LIMITS.quickstartPoolBytes);
  return pool;
}

async function ensureDisk(context: Context): Promise<number> {
  const catalog = context.catalog();
  const existing = catalog.list(false).find((vd) => vd.name === QUICKSTART_NAME);
  const id = existing?.id ?? catalog.create({ sizeBytes: LIMITS.quickstartDiskBytes,
    expirySeconds: 0, name: QUICKSTART_NAME, onPath: null, isZeroing: true });
  killPoint('quickstart:allocated');
  // also when it exists: a run killed while zeroing left it unservable until zeroed
  await catalog.zeroPending();
  return id;
}

function ensureVbd(context: Context, id: number): void {
  const catalog = context.catalog();
  const isPresent = catalog.vbdList().some((vbd) =>
    vbd.domain === QUICKSTART_DOMAIN && vbd.device === QUICKSTART_DEVICE);
  if (isPresent) return;
  catalog.vbdAdd({ domain: QUICKSTART_DOMAIN, device: QUICKSTART_DEVICE, mode: 'w',
    source: `vd:${id}`, pieces: catalog.show(id).pieces, expert: 0 });
}

async function quickstart(context: Context, options: { serve: boolean }): Promise<number> {
  const pool = ensurePool(context);
  killPoint('quickstart:pool');
  const id = await ensureDisk(context);
  killPoint('quickstart:disk');
  ensureVbd(context, id);
  const exportName = `${QUICKSTART_DOMAIN}/${QUICKSTART_DEVICE}`;
  printLine(`pool ${pool}, VD ${id}, VBD ${exportName} (writable)`);
  printLine(`nbdinfo nbd://${QUICKSTART_HOST}:${QUICKSTART_PORT}/${exportName}`);
  printLine(`nbd-client ${QUICKSTART_HOST} ${QUICKSTART_PORT} /dev/nbd0 -N ${exportName}`);
  if (!options.serve) return 0;
  const runServe = loadServe();
  if (runServe === null) {
    printLine('xvd serve is not yet available in this build; the disk is ready to serve.');
    return 0;
  }
  return runServe(context, { host: QUICKSTART_HOST, port: QUICKSTART_PORT });
}

export function register(program: Command, context: Context): void {
  program.command('quickstart')
    .description('create a pool image, a 1 GiB VD, attach it as 0/xvda and serve it (idempotent)')
    .option('--no-serve', 'set up only; do not start the server')
    .action((options: { serve: boolean }) => context.run(() => quickstart(context, options)));
}
