#!/usr/bin/env node
/**
 * xvd: the command-line interface. argv → one command → exit code (src/cli/exit.ts).
 *
 * Commander parses; every command lives in src/cli/commands/ and registers itself with
 * `register(program, context)`. Parse errors from commander become UsageError lines (exit 2), so
 * every failure path prints exactly one line `xvd: <what>: <detail>` and no stack; anything
 * unexpected prints one line and exits 70 (XVD_DEBUG=1 adds the stack).
 *
 * Server hook: if src/cli/commands/serve.ts exists (compiled to serve.js), it is loaded like the
 * others; it must export `register(program: Command, context: Context): void`. `quickstart` then
 * calls its exported `runServe(context, options)` (see commands/quickstart.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { configureCeph, shutdownCeph } from '../ceph/client';
import { UsageError } from '../errors';
import { configureLog } from '../log';
import { version } from '../version';
import { Context } from './context';
import { cephConfOf, logOptionsOf } from './env';
import { errorLine, EXIT, EXIT_HELP, exitCodeOf, oneLine } from './exit';
import { register as registerDisks } from './commands/disks';
import { register as registerClone } from './commands/clone';
import { register as registerFormat } from './commands/format';
import { register as registerData } from './commands/data';
import { register as registerCheck } from './commands/check';
import { register as registerVbd } from './commands/vbd';
import { register as registerQuickstart } from './commands/quickstart';
import { register as registerStatus } from './commands/status';

type Register = (program: Command, context: Context) => void;

/** Arguments that need the serve command registered (it loads the whole NBD server). */
const SERVE_WORDS: ReadonlySet<string> = new Set(['serve', 'help', '--help', '-h']);

/**
 * The serve command, when its file exists (written by the NBD work; see the header). Loaded only
 * when the command line can reach it, so that every other command starts fast.
 */
function optionalServe(argv: readonly string[]): Register | null {
  const file = path.join(__dirname, 'commands', 'serve.js');
  if (argv.length > 0 && !argv.some((word) => SERVE_WORDS.has(word))) return null;
  if (!fs.existsSync(file)) return null;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require(file) as { register?: Register };
  return typeof loaded.register === 'function' ? loaded.register : null;
}

function buildProgram(context: Context, argv: readonly string[]): Command {
  const program = new Command('xvd')
    .description('virtual disks on a pool of disks, partitions and image files, served over NBD')
    .version(`xvd ${version()}`, '-V, --version', 'print xvd\'s version and exit')
    .option('--catalog <path>', 'catalog file (env XVD_CATALOG; default ' +
      '~/.local/share/xvd/catalog.sqlite)')
    .option('--ceph-id <name>', 'Ceph client name for rbd: members (default admin; the ' +
      'cluster is CEPH_CONF, default /etc/ceph/ceph.conf)')
    .addHelpText('after', `\nSizes: a number with an optional unit B, S (512-byte sectors), K, M,
G, T (powers of 1024, any case, KiB/KB spellings too); a bare number is MiB.\n\n${EXIT_HELP}`)
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: () => undefined });
  program.hook('preAction', (thisCommand) => {
    const catalog = thisCommand.opts<{ catalog?: string }>().catalog;
    if (catalog !== undefined) context.setCatalogPath(catalog);
    const cephId = thisCommand.opts<{ cephId?: string }>().cephId;
    configureCeph({ conf: cephConfOf(process.env), id: cephId, cephArgs: process.env.CEPH_ARGS });
  });
  const registers: Register[] = [registerFormat, registerDisks, registerClone, registerData,
    registerCheck, registerVbd, registerQuickstart, registerStatus];
  const serve = optionalServe(argv);
  if (serve !== null) registers.push(serve);
  for (const register of registers) register(program, context);
  quietAll(program);
  return program;
}

/** Every subcommand throws instead of exiting and prints nothing itself on a parse error. */
function quietAll(command: Command): void {
  for (const sub of command.commands) {
    sub.exitOverride().configureOutput({ outputError: () => undefined });
    quietAll(sub);
  }
}

function fromCommander(error: CommanderError): UsageError | number {
  if (error.exitCode === 0) return EXIT.ok; // --help, --version
  const message = oneLine(error.message.replace(/^error: /, ''));
  return new UsageError('ERR_USAGE', `usage: ${message} (see xvd --help)`);
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const context = new Context();
  try {
    const program = buildProgram(context, argv);
    await program.parseAsync([...argv], { from: 'user' });
    return context.exitCode;
  } catch (caught) {
    const error = caught instanceof CommanderError ? fromCommander(caught) : caught;
    if (typeof error === 'number') return error;
    process.stderr.write(errorLine(error));
    if (process.env['XVD_DEBUG'] === '1' && error instanceof Error) {
      process.stderr.write(`${error.stack ?? ''}\n`);
    }
    return exitCodeOf(error);
  } finally {
    context.close();
    await shutdownCeph().catch(() => undefined); // librados's threads must not outlive main
  }
}

if (require.main === module) {
  configureLog(logOptionsOf(process.env, process.stderr.isTTY === true));
  // Node ignores SIGPIPE, so a reader that goes away (`xvd list | head -1`) shows up as EPIPE on
  // a later write: stop there, quietly, as SIGPIPE stops a C tool, not with a stack trace
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(EXIT.pipe);
  });
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    () => {
      process.exitCode = EXIT.internal;
    },
  );
}
