/**
 * serve-catalog helper: a catalog with writable VDs attached as `1/xvda`, `1/xvdb`, … for tests
 * of `xvd serve` against the catalog; another process holding the catalog's write lock
 * (`BEGIN IMMEDIATE`) for a while, as a CLI command in the middle of a transaction would; what
 * the catalog says about servers and leases afterwards; and a logger whose lines a test reads.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { identityOfFile, openCatalog, zeroPending } from '../../src/catalog';
import { ScriptedClient } from './nbd-client';

export const MiB = 1024 * 1024;
export const DISK_BYTES = 4 * MiB;
const ROOT = path.resolve(__dirname, '..', '..');

/** Devices of the VBDs made by makeServedCatalog, in VD order. */
export const DEVICES = ['xvda', 'xvdb', 'xvdc', 'xvdd'] as const;

/** A catalog whose pool holds `vdCount` VDs of DISK_BYTES, each attached as `1/DEVICES[i]`. */
export async function makeServedCatalog(dir: string, vdCount: number): Promise<string> {
  const catalogPath = path.join(dir, 'catalog.sqlite');
  const image = path.join(dir, 'pool.img');
  fs.closeSync(fs.openSync(image, 'w'));
  fs.truncateSync(image, vdCount * DISK_BYTES);
  const catalog = openCatalog(catalogPath);
  try {
    const st = fs.statSync(image);
    catalog.formatMember({ path: image, kind: 'file', sizeBytes: vdCount * DISK_BYTES,
      extentSize: MiB, identity: identityOfFile(st.dev, st.ino) });
    for (let index = 0; index < vdCount; index++) {
      const vd = catalog.createVd({ size: DISK_BYTES });
      catalog.addVbd({ domain: 1, device: DEVICES[index] ?? 'none', mode: 'w',
        source: { kind: 'vd', vdId: vd.id } });
    }
    await zeroPending(catalog);
  } finally {
    catalog.close();
  }
  return catalogPath;
}

/** Plain JS run by `node -e`: BEGIN IMMEDIATE, say so, hold the lock, COMMIT. */
const LOCK_HOLDER = `
const Database = require(process.argv[1]);
const db = new Database(process.argv[2], { fileMustExist: true });
db.pragma('busy_timeout = 10000');
db.exec('BEGIN IMMEDIATE');
process.stdout.write('locked\\n');
setTimeout(() => {
  const at = Date.now();
  db.exec('COMMIT');
  db.close();
  process.stdout.write('released ' + at + '\\n');
}, Number(process.argv[3]));
`;

export interface WriteLock {
  /** resolves once the other process holds the write lock */
  locked: Promise<void>;
  /** resolves, once the other process has committed and exited, with Date.now() taken just
   * before its COMMIT: nothing else can have committed before then */
  released: Promise<number>;
}

/** Another process takes the catalog's write lock and holds it for holdMs. */
export function holdWriteLock(catalogPath: string, holdMs: number): WriteLock {
  const sqlite = path.join(ROOT, 'node_modules', 'better-sqlite3');
  const child = spawn(process.execPath, ['-e', LOCK_HOLDER, sqlite, catalogPath, String(holdMs)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), holdMs + 30_000);
  let output = '';
  let onLocked: () => void = () => undefined;
  const locked = new Promise<void>((resolve) => (onLocked = resolve));
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    if (output.includes('locked\n')) onLocked();
  });
  const released = new Promise<number>((resolve, reject) => {
    child.on('close', (code) => {
      clearTimeout(killer);
      const match = /released (\d+)\n/.exec(output);
      if (code === 0 && match !== null) resolve(Number(match[1]));
      else reject(new Error(`lock holder exited ${String(code)}: ${output}`));
    });
  });
  return { locked: Promise.race([locked, released.then(() => undefined)]), released };
}

/**
 * READs of 4 KiB one at a time until `until` settles (at most countMax reads); returns the
 * latency of each in ms.
 */
export async function readLatencies(client: ScriptedClient, until: Promise<unknown>,
  countMax: number): Promise<number[]> {
  let isDone = false;
  void until.then(() => (isDone = true), () => (isDone = true));
  const latencies: number[] = [];
  for (let index = 0; index < countMax && !isDone; index++) {
    const start = performance.now();
    await client.readData((index * 4096) % DISK_BYTES, 4096, BigInt(index + 1));
    latencies.push(performance.now() - start);
  }
  return latencies;
}

export interface CatalogServers {
  servers: { id: number; pid: number }[];
  leases: { server_id: number; vd_id: number }[];
}

/** The servers and leases rows, read from another connection. */
export function serversAndLeases(catalogPath: string): CatalogServers {
  const db = new Database(catalogPath, { readonly: true, fileMustExist: true });
  try {
    return {
      servers: db.prepare('SELECT id, pid FROM servers ORDER BY id').all() as
        CatalogServers['servers'],
      leases: db.prepare('SELECT server_id, vd_id FROM leases ORDER BY server_id, vd_id').all() as
        CatalogServers['leases'],
    };
  } finally {
    db.close();
  }
}

export interface LogLine {
  level: number;
  msg: string;
}

/** A pino logger at `level` whose lines land, parsed, in `lines`. */
export function captureLog(level = 'debug'): { log: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level }, { write: (line: string) => {
    lines.push(JSON.parse(line) as LogLine);
  } });
  return { log, lines };
}
