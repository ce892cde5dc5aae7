/**
 * check: fsck of the catalog (every extent owned once, sizes add up, VBD and lease rows sound:
 * src/catalog/check.ts). Prints one fault or note a line on stdout (or JSON) and exits 4 when
 * there is any fault, 0 otherwise; notes (stale leases of a server that is not running) alone
 * keep exit 0.
 */
import type { Command } from 'commander';
import type { Context } from '../context';
import { EXIT } from '../exit';
import { printJson, printLine } from '../output';

function check(context: Context, options: { json?: boolean }): number {
  const { faults, notes } = context.catalog({ isRecovering: false }).check();
  if (options.json === true) {
    printJson({ ok: faults.length === 0, faults, notes });
  } else {
    for (const fault of faults) printLine(`fault: ${fault}`);
    for (const note of notes) printLine(`note: ${note}`);
    if (faults.length === 0) printLine('catalog ok');
  }
  if (faults.length > 0) {
    process.stderr.write(`xvd: check: ${faults.length} fault(s) found\n`);
    return EXIT.faults;
  }
  return EXIT.ok;
}

export function register(program: Command, context: Context): void {
  program.command('check').description('check the catalog; exit 4 if it has faults')
    .option('--json', 'JSON output')
    .action((options: { json?: boolean }) => context.run(async () => check(context, options)));
}
