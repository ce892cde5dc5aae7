/**
 * backing/pool: one open descriptor per backing and mode, shared by every VBD on it.
 *
 * Entries are keyed by backing identity (device+inode for files, rdev for devices, so two paths to
 * one device share a descriptor) and mode ('r' and 'w' are separate descriptors: a read-only VBD
 * never uses a writable one). Each entry is refcounted; the descriptor closes with the last
 * release.
 *
 * The entry also carries durability state shared by every user of the descriptor (invariant 4):
 * `markDirty()` after a write completes; `sync()` runs fdatasync only when something was written
 * since the last one started, otherwise joins the one in flight. A failed fdatasync is remembered:
 * every later sync() on that entry rejects with the same error, forever (the kernel may have
 * dropped the dirty pages; pretending a retry succeeded would lose acknowledged writes).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { Backing } from './backing';
import { backingIdentity, openBacking, type BackingMode } from './open-backing';

export type { BackingMode } from './open-backing';

export type BackingOpener = (path: string, mode: BackingMode) => Promise<Backing>;

export interface BackingPoolOptions {
  /** opens a backing (default: files and block devices); tests pass memory or faulty backings */
  opener?: BackingOpener;
  /** identity of a path (default: stat; with a custom opener, the path itself) */
  identify?: (path: string) => Promise<string>;
}

export class PooledBacking {
  readonly backing: Backing;
  readonly key: string;
  refs = 0;
  /**
   * Shared memory with every data-path thread of this backing (native/src/dp-map.c). Word 0,
   * the dirty flag: 1 when a write completed since the last sync began; a thread sets it too,
   * before its WRITE's reply goes out. Word 1, the hole epoch: bumped after every TRIM or
   * WRITE_ZEROES (markHoled), so a thread knows that what it learned of holes is stale.
   */
  readonly dirtyFlag = new Int32Array(new SharedArrayBuffer(8));
  private syncing: Promise<void> | null = null;
  private syncError: IoError | null = null;

  constructor(backing: Backing, key: string) {
    this.backing = backing;
    this.key = key;
  }

  /** The sticky fdatasync failure, if any. */
  get failure(): IoError | null {
    return this.syncError;
  }

  markDirty(): void {
    Atomics.store(this.dirtyFlag, 0, 1);
  }

  /** A TRIM or WRITE_ZEROES may have punched holes: data-path threads look again (above). */
  markHoled(): void {
    Atomics.add(this.dirtyFlag, 1, 1);
  }

  /** Makes every write completed before this call durable; sticky failure (see header). */
  sync(): Promise<void> {
    if (this.syncError !== null) return Promise.reject(this.syncError);
    if (Atomics.exchange(this.dirtyFlag, 0, 0) === 0) return this.syncing ?? Promise.resolve();
    const run = this.backing.sync().catch((cause: unknown) => {
      const error = cause instanceof IoError ? cause : IoError.fromSystem(cause, 'fdatasync');
      this.syncError ??= error;
      throw this.syncError;
    });
    this.syncing = run;
    const clear = (): void => {
      if (this.syncing === run) this.syncing = null;
    };
    run.then(clear, clear);
    return run;
  }
}

export class BackingPool {
  private readonly entries = new Map<string, Promise<PooledBacking>>();
  private readonly opener: BackingOpener;
  private readonly identify: (path: string) => Promise<string>;
  private isClosed = false;

  constructor(options: BackingPoolOptions = {}) {
    this.opener = options.opener ?? openBacking;
    this.identify = options.identify ??
      (options.opener === undefined ? backingIdentity : (path) => Promise.resolve(path));
  }

  /** Number of open descriptors. */
  get size(): number {
    return this.entries.size;
  }

  /** Opens (or shares) the backing at `path` in `mode`; pair every acquire with a release. */
  async acquire(path: string, mode: BackingMode): Promise<PooledBacking> {
    if (this.isClosed) throw new IoError('ESHUTDOWN', 'open', 'open: ESHUTDOWN: pool is closed');
    const key = `${await this.identify(path)}|${mode}`;
    for (let attempt = 0; attempt < LIMITS.poolAcquireAttemptsMax; attempt++) {
      let pending = this.entries.get(key);
      if (pending === undefined) {
        const opening = this.opener(path, mode).then((backing) => new PooledBacking(backing, key));
        this.entries.set(key, opening);
        opening.catch(() => {
          if (this.entries.get(key) === opening) this.entries.delete(key);
        });
        pending = opening;
      }
      const entry = await pending;
      // released to zero (and closing) while we waited: open afresh
      if (this.entries.get(key) !== pending) continue;
      entry.refs++;
      return entry;
    }
    throw new IoError('EAGAIN', 'open', `open: EAGAIN: ${path} kept closing while being opened`);
  }

  /** Drops one reference; closes the descriptor with the last one. */
  async release(entry: PooledBacking): Promise<void> {
    assert(entry.refs > 0);
    entry.refs--;
    if (entry.refs > 0) return;
    this.entries.delete(entry.key);
    await entry.backing.close();
  }

  /** Closes every descriptor, referenced or not. Idempotent. */
  async close(): Promise<void> {
    this.isClosed = true;
    const all = [...this.entries.values()];
    this.entries.clear();
    const settled = await Promise.allSettled(all);
    for (const result of settled) {
      if (result.status === 'fulfilled') await result.value.backing.close();
    }
  }
}
