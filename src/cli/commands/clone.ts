/**
 * clone: `xvd clone ID [--name N] [--expiry S]`, a copy-on-write clone of a live VD (issue 18).
 *
 * The clone is one catalog transaction whatever the origin's size (src/catalog/clones.ts). When
 * a running server serves the origin, the command then waits until every such server switched
 * the origin to copy-on-write (its lease shows the generation the clone moved on to), polling,
 * bounded by LIMITS.cloneSwitchWaitMs: only then does it print the new id. When a server does
 * not switch in time, the clone is deleted (it was never served) and the command fails with one
 * line. Killed anywhere, the catalog holds the clone or not, whole either way; a clone left
 * waiting is not served until the switch.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { XvdError } from '../../errors';
import { LIMITS } from '../../limits';
import { parseId, parseName, parseSeconds } from '../args';
import type { Context } from '../context';
import { killPoint } from '../kill-point';
import { printLine } from '../output';
import type { CatalogPort } from '../port';

/** Pause between looks at the origin's leases (a server polls the catalog about as often). */
const SWITCH_POLL_MS = 25;

interface CloneOptions {
  name?: string;
  expiry?: string;
}

async function waitForSwitch(catalog: CatalogPort, originId: number, cloneId: number):
  Promise<void> {
  const deadline = Date.now() + LIMITS.cloneSwitchWaitMs;
  while (!catalog.isCloneSwitched(cloneId)) {
    if (Date.now() >= deadline) {
      catalog.delete(cloneId);
      throw new XvdError('ERR_VD_CLONE_SWITCH', `clone: VD ${originId}: a running server `
        + `did not switch it to copy-on-write within ${LIMITS.cloneSwitchWaitMs / 1000} s; `
        + `the clone (VD ${cloneId}) was deleted`);
    }
    await sleep(SWITCH_POLL_MS);
  }
}

async function clone(context: Context, idText: string, options: CloneOptions): Promise<void> {
  const id = parseId(idText);
  const expirySeconds = options.expiry === undefined ? 0 : parseSeconds(options.expiry);
  const name = options.name === undefined ? null : parseName(options.name);
  const catalog = context.catalog();
  const cloneId = catalog.clone(id, { name, expirySeconds });
  killPoint('clone:cloned');
  await waitForSwitch(catalog, id, cloneId);
  printLine(String(cloneId));
}

export function register(program: Command, context: Context): void {
  program.command('clone').argument('<id>', 'the live VD to clone')
    .description('copy-on-write clone of a VD, at once whatever its size; prints the new id')
    .option('--name <name>', 'a label for people')
    .option('--expiry <seconds>', 'expire after this many seconds (0 = never, the default)')
    .action((id: string, options: CloneOptions) =>
      context.run(() => clone(context, id, options)));
}
