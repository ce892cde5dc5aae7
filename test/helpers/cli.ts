/**
 * cli helper: runs the real built CLI (`node dist/cli/main.js`) as a child process against a
 * temporary catalog and returns {code, signal, stdout, stderr}.
 *
 * dist/ is rebuilt once (tsc, synchronously, under a lock directory so parallel test files do not
 * race) when dist/cli/main.js is older than any file under src/. `snapshotCatalog` dumps every
 * table of a catalog with better-sqlite3 (or the raw bytes when it is not SQLite) so that tests can
 * assert that a failed command left the catalog unchanged.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export const ROOT = path.resolve(__dirname, '..', '..');
export const MAIN = path.join(ROOT, 'dist', 'cli', 'main.js');
const LOCK = path.join(ROOT, 'dist', '.cli-build.lock');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    const mtime = entry.isDirectory() ? newestMtimeMs(full) : fs.statSync(full).mtimeMs;
    newest = Math.max(newest, mtime);
  }
  return newest;
}

function isStale(): boolean {
  if (!fs.existsSync(MAIN)) return true;
  return fs.statSync(MAIN).mtimeMs < newestMtimeMs(path.join(ROOT, 'src'));
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Builds dist/ once if it is older than src/. Bounded wait for another process's build. */
export function ensureBuilt(): void {
  if (!isStale()) return;
  fs.mkdirSync(path.dirname(LOCK), { recursive: true });
  for (let attempt = 0; attempt < 600; attempt++) {
    try {
      fs.mkdirSync(LOCK);
    } catch {
      sleepMs(200); // another test file is building
      if (!fs.existsSync(LOCK)) return;
      continue;
    }
    try {
      if (isStale()) {
        const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
        spawnSync(process.execPath, [tsc, '-p', ROOT], { stdio: 'ignore', timeout: 300_000 });
      }
    } finally {
      fs.rmdirSync(LOCK);
    }
    return;
  }
  throw new Error('ensureBuilt: another build held the lock for too long');
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Catalog path, passed as --catalog (omit to test XVD_CATALOG or the default). */
  catalog?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

function argvOf(args: readonly string[], options: CliOptions): string[] {
  const catalog = options.catalog === undefined ? [] : ['--catalog', options.catalog];
  return [MAIN, ...catalog, ...args];
}

/** Starts `xvd args…` and returns the child (for SIGKILL tests). */
export function spawnXvd(args: readonly string[], options: CliOptions = {}): ChildProcess {
  ensureBuilt();
  return spawn(process.execPath, argvOf(args, options), {
    env: { ...process.env, XVD_LOG_LEVEL: 'warn', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Spawns `xvd serve --socket socket` on `catalog` and waits for the socket to appear (30 s at
 * most); the child is SIGKILLed at teardown if still running.
 */
export async function startServeOnSocket(t: { teardown(fn: () => void): void },
  catalog: string, socket: string): Promise<ChildProcess> {
  const child = spawnXvd(['serve', '--socket', socket], { catalog });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const deadline = Date.now() + 30_000;
  while (!fs.existsSync(socket)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('serve did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return child;
}

/** Runs `xvd args…` to completion. */
export function runXvd(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const child = spawnXvd(args, options);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Every table's rows (sorted) plus user_version; raw bytes when the file is not a database. */
export function snapshotCatalog(catalog: string): string {
  if (!fs.existsSync(catalog)) return '<missing>';
  if (!fs.statSync(catalog).isFile()) return '<not a file>';
  let db: Database.Database | undefined;
  try {
    db = new Database(catalog, { readonly: true, fileMustExist: true });
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
      .all() as { name: string }[];
    const version = db.pragma('user_version', { simple: true });
    const dump: Record<string, unknown> = { user_version: version };
    for (const { name } of tables) {
      const rows = db.prepare(`SELECT * FROM "${name.replace(/"/g, '""')}"`).all();
      dump[name] = rows.map((row) => JSON.stringify(row)).sort();
    }
    return JSON.stringify(dump);
  } catch {
    return `<bytes>${fs.readFileSync(catalog).toString('base64')}`;
  } finally {
    db?.close();
  }
}

/** A sparse image file of `sizeBytes`. */
export function makeImage(file: string, sizeBytes: number): string {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, sizeBytes);
  return file;
}
