/**
 * database: opens the catalog file with better-sqlite3 12, sets and checks the pragmas (WAL,
 * synchronous=FULL, foreign_keys, busy_timeout) and runs the append-only migrations in one
 * BEGIN IMMEDIATE transaction, so two processes opening a fresh file at once migrate it once.
 * A catalog in RADOS (`ceph:POOL/NAME`, location.ts) is opened by ceph-sqlite.ts, with the
 * pragmas that suit RADOS; the schema and migrations are the same.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { XvdError } from '../errors';
import { LIMITS } from '../limits';
import { openCephDatabase, setCephPragmas } from './ceph-sqlite';
import { catalogLocationOf } from './location';
import { MIGRATIONS } from './migrations';

export type Db = Database.Database;

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function openFailure(file: string, cause: unknown): XvdError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new XvdError('ERR_CATALOG_OPEN', `catalog: ${file}: ${oneLine(detail)}`, { cause });
}

function connect(file: string, isCreate: boolean, isReadonly: boolean): Db {
  const location = catalogLocationOf(file);
  if (location.kind === 'ceph') {
    const db = openCephDatabase(file, location, isReadonly, isCreate);
    const tables = db.prepare('SELECT COUNT(*) FROM sqlite_master').pluck().get() as number;
    setCephPragmas(db, isReadonly, tables === 0);
    return db;
  }
  const db = connectFile(file, isCreate, isReadonly);
  setPragmas(db, isReadonly);
  return db;
}

function connectFile(file: string, isCreate: boolean, isReadonly: boolean): Db {
  if (isCreate && !isReadonly) fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  if (!isCreate && !fs.existsSync(file)) {
    throw new XvdError('ERR_CATALOG_OPEN', `catalog: ${file}: no such file`);
  }
  return new Database(file, { readonly: isReadonly, fileMustExist: !isCreate || isReadonly });
}

function setPragmas(db: Db, isReadonly: boolean): void {
  db.pragma(`busy_timeout = ${LIMITS.catalogBusyTimeoutMs}`);
  if (!isReadonly) {
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
  }
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  const sync = db.pragma('synchronous', { simple: true });
  if (sync !== 2) throw new Error(`synchronous is ${String(sync)}, not FULL (2)`);
}

function userVersion(db: Db): number {
  const v = db.pragma('user_version', { simple: true });
  if (typeof v !== 'number') throw new Error('user_version is not a number');
  return v;
}

function refuseNewer(file: string, version: number): void {
  if (version > MIGRATIONS.length) {
    throw new XvdError('ERR_CATALOG_VERSION', `catalog: ${file}: schema version ${version} is `
      + `newer than this xvd knows (${MIGRATIONS.length}); upgrade xvd`);
  }
}

function migrate(db: Db, file: string): number {
  const run = db.transaction(() => {
    const from = userVersion(db);
    refuseNewer(file, from);
    for (let v = from; v < MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v]!.sql);
      db.pragma(`user_version = ${v + 1}`);
    }
    return userVersion(db);
  });
  return run.immediate();
}

/** Opens, configures and migrates; returns the handle and its schema version. */
export function openDatabase(file: string, isCreate: boolean, isReadonly: boolean):
  { db: Db; version: number } {
  let db: Db | null = null;
  try {
    db = connect(file, isCreate, isReadonly);
    const current = userVersion(db);
    refuseNewer(file, current);
    const version = isReadonly || current === MIGRATIONS.length ? current : migrate(db, file);
    return { db, version };
  } catch (cause) {
    db?.close();
    if (cause instanceof XvdError) throw cause;
    throw openFailure(file, cause);
  }
}
