/**
 * check: fsck of the catalog (every extent owned once, sizes add up). Prints one fault a line on
 * stdout (or JSON) and exits 4 when there is any fault, 0 otherwise.
 */
import type { Command } from 'commander';
import type { Context } from '../context';
import { EXIT } from '../exit';
import { printJson, printLine } from '../output';

function check(context: Context, options: { json?: boolean }): number {
  const faults = context.catalog().check();
  if (options.json === true) printJson({ ok: faults.length === 0, faults });
  else if (faults.length === 0) printLine('catalog ok');
  else for (const fault of faults) printLine(`fault: ${fault}`);
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
