/**
 * engine/cow: copy-on-write for one VD in this process, shared by every export of that VD
 * (CowVolume). The catalog side (owner counts, the reserve, the remap commit) is reached only
 * through the injected CowCatalog; the exports only through CowMember, so the whole protocol
 * runs in unit tests against fakes.
 *
 * The map. The volume holds the VD's current extent list, each extent marked shared (another VD
 * owns it too) or not. The unit of copy-on-write is one member extent (the catalog's extent size
 * of that member), clipped to the VD's size.
 *
 * The first write to a shared extent, from any connection (breakShared):
 *   1. an extent of the same size is taken from the VD's reserve (extents the catalog already
 *      gave this VD, in no map: reserveCowExtents, refilled in batches of LIMITS.cowReserveBatch
 *      ahead of need, never per write);
 *   2. the whole shared extent is copied into it (also the bytes about to be written: a write
 *      that then fails leaves the old bytes there, never the reserve's previous contents);
 *   3. the map of every export of the VD (CowMember.swapMap: the JS map and, before it
 *      resolves, each data-path thread's) is swapped to one where the extent is the new one,
 *      not shared; the remap joins the pending list;
 *   4. only then is the write done, on the new map.
 * Writes to one shared extent are serialized: the first starts the copy, later ones wait for it
 * (`breaking`) and then write into the new extent, so nothing is copied twice and no write is
 * lost. Reads never wait: until the swap they read the shared extent, whose bytes never change.
 * Swaps run one after another and each installs the newest map, so two copies finishing
 * together cannot put back an older map.
 *
 * Durability without a catalog commit per write (NBD's rules). A remap lives only in memory
 * until commitPending() makes it durable: at the next FLUSH of any export of the VD, at once
 * for a FUA write, and when the last export of the VD closes (a client that disconnects without
 * a FLUSH finds its writes again on reconnecting, as with any disk whose server did not crash).
 * commitPending takes the remaps pending when it starts, syncs the backings the volume copied
 * into (every remap's new extent is on one of them, and every export writes through the same
 * pooled entry, whose dirty flag data-path threads set too: the copies and every write
 * acknowledged before are then on disk), waits until every export and data-path thread has
 * swapped past those remaps (a remap is pending from before its swap starts, so a FLUSH after
 * any write on the new map includes it) and no request still runs on a map older than them
 * (drainedBefore), and only then commits them in one catalog transaction (commitCowRemaps).
 * A crash before the commit loses only the remaps of that interval: the VD reads its old
 * extents, i.e. the bytes as they were at the last acknowledged FLUSH, whole extent by whole
 * extent, so never a mix inside a sector, and the new extents stay in the VD's reserve (never
 * another VD's bytes). A crash after it finds the data synced before the commit. Nothing
 * acknowledged is lost: a FLUSH or FUA write answers only after its commit, and a failed commit
 * fails it.
 *
 * Fence invariant (ARCHITECTURE 2): no write lands on an extent the catalog has given to
 * someone else. A shared extent is never written (the JS path breaks it first; the data-path
 * thread forwards such WRITEs to JS, extent-datapath.ts). A reserve extent is the VD's alone.
 * The shared extent a remap leaves is handed on (its owner count drops) only by the commit, and
 * the commit waits until no request on an older map is in flight, so no read of ours reaches
 * it after that either. The live clone of a VD this process serves (own extents becoming
 * shared) is the provider's: it swaps in the shared marks, waits for writes on the old map, and
 * only then records the new generation in its lease (src/serve/cow-switch.ts).
 */
import assert from 'node:assert';
import { IoError } from '../errors';
import { LIMITS } from '../limits';
import type { BackingMode, BackingPool, PooledBacking } from '../backing/pool';
import { ExtentMap, type ExtentSpec } from './extent-map';
import { copyExtent } from './cow-copy';

/** One extent of the VD's reserve. */
export interface ReserveExtent {
  memberId: number;
  /** extent index in the member */
  extentIndex: number;
  path: string;
  /** byte offset in the member */
  offset: number;
  extentSize: number;
}

/** One remap as the catalog records it (commitCowRemaps). */
export interface CowRemap {
  virtualOffset: number;
  /** the extent size */
  length: number;
  memberId: number;
  firstExtent: number;
}

/** The catalog as the volume sees it (injected; the provider's is serve/cow-catalog.ts). */
export interface CowCatalog {
  /** `count` more reserve extents of `extentSize` (one catalog transaction) */
  reserve(extentSize: number, count: number): Promise<ReserveExtent[]>;
  /** commits remaps (one catalog transaction); rejects when the lease is gone */
  commit(remaps: readonly CowRemap[]): Promise<void>;
  /** the extent size of the member at `path` */
  extentSizeOf(path: string): number;
}

/** An export of the VD, as the volume drives it (ExtentExport's CowMember face). */
export interface CowMember {
  /** installs `map` for requests starting now; resolves once its data-path threads took it */
  swapMap(map: ExtentMap): Promise<void>;
  /** resolves once every request that started on an earlier map has settled */
  drainedBefore(): Promise<void>;
}

interface Unit {
  startVirtual: number;
  length: number;
  path: string;
  offsetBacking: number;
  extentSize: number;
}

export class CowVolume {
  private specsNow: ExtentSpec[];
  private mapNow: ExtentMap;
  private readonly members = new Set<CowMember>();
  /** virtual start of a unit being copied → its copy, swap included */
  private readonly breaking = new Map<number, Promise<void>>();
  private readonly reserves = new Map<number, ReserveExtent[]>();
  private readonly refilling = new Map<number, Promise<void>>();
  private pending: CowRemap[] = [];
  /** the remaps of the commit under way */
  private inCommit: readonly CowRemap[] = [];
  private committing: Promise<void> = Promise.resolve();
  private swapping: Promise<void> = Promise.resolve();
  private readonly held = new Map<string, Promise<PooledBacking>>();
  private isClosed = false;
  /** remaps made and committed so far (status, tests) */
  readonly counts = { remaps: 0, committed: 0, commits: 0 };

  constructor(
    extents: readonly ExtentSpec[],
    private readonly catalog: CowCatalog,
    private readonly pool: BackingPool,
    private readonly mode: BackingMode,
  ) {
    this.specsNow = extents.map((extent) => ({ ...extent }));
    this.mapNow = ExtentMap.fromList(this.specsNow);
  }

  /** The VD's map now (what new exports of the VD must open with). */
  get map(): ExtentMap {
    return this.mapNow;
  }

  /** The VD's extents now, shared marks included (a copy). */
  get extents(): ExtentSpec[] {
    return this.specsNow.map((spec) => ({ ...spec }));
  }

  /** Virtual ranges of remaps made here that may not be committed yet. */
  uncommittedRanges(): { start: number; length: number }[] {
    return [...this.pending, ...this.inCommit].map((remap) =>
      ({ start: remap.virtualOffset, length: remap.length }));
  }

  /** Remaps made and not yet committed. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** Remaps pending or being committed: a FLUSH must wait for them (commitPending). */
  get hasUncommitted(): boolean {
    return this.pending.length > 0 || this.inCommit.length > 0;
  }

  attach(member: CowMember): void {
    this.members.add(member);
  }

  detach(member: CowMember): void {
    this.members.delete(member);
  }

  /**
   * Sets the shared marks from a fresh resolution (the live clone, or a sharer gone): `extents`
   * must map the same bytes as the volume's map now, and may go on past it (an enlarge).
   * Swaps every export's map, then resolves once each took it and no request runs on an older
   * map any more (the provider records the VD's new generation only then).
   */
  async remark(extents: readonly ExtentSpec[]): Promise<void> {
    const map = ExtentMap.fromList(extents);
    assert(map.sizeVirtual >= this.mapNow.sizeVirtual, 'remark: a VD never shrinks under it');
    this.specsNow = extents.map((extent) => ({ ...extent }));
    this.mapNow = map;
    await this.swapAll();
    await Promise.all([...this.members].map((member) => member.drainedBefore()));
  }

  /**
   * Makes every shared extent under [offset, offset+length) the VD's own (see the header).
   * Resolves once the map of every export has no shared extent there.
   */
  async breakShared(offset: number, length: number): Promise<void> {
    for (let attempt = 0; attempt < LIMITS.cowBreakAttemptsMax; attempt++) {
      if (!this.mapNow.touchesShared(offset, length)) return;
      const units = this.sharedUnits(offset, length);
      await Promise.all(units.map((unit) => this.breakUnit(unit)));
    }
    if (this.mapNow.touchesShared(offset, length)) {
      throw new IoError('EAGAIN', 'write', 'write: EAGAIN: copy-on-write kept finding shared ' +
        'extents (the VD is being cloned again and again)');
    }
  }

  /**
   * Makes the remaps pending now durable (see the header): every member synced, requests on
   * older maps drained, one commit. Commits run one after another.
   */
  commitPending(): Promise<void> {
    const run = this.committing.then(() => this.commitNow());
    this.committing = run.catch(() => undefined);
    return run;
  }

  /** Releases the backings the volume opened; the exports closed first. */
  async close(): Promise<void> {
    this.isClosed = true;
    const held = [...this.held.values()];
    this.held.clear();
    for (const opening of held) {
      const entry = await opening.catch(() => null);
      if (entry !== null) await this.pool.release(entry).catch(() => undefined);
    }
  }

  private async commitNow(): Promise<void> {
    if (this.pending.length === 0) return;
    const remaps = this.pending;
    this.pending = [];
    this.inCommit = remaps;
    try {
      await this.swapping; // every export and data-path thread left the maps before these remaps
      const held = await Promise.all([...this.held.values()]);
      await Promise.all(held.map((entry) => entry.sync()));
      await Promise.all([...this.members].map((member) => member.drainedBefore()));
      await this.catalog.commit(remaps);
      this.inCommit = [];
    } catch (error) {
      this.inCommit = [];
      this.pending = remaps.concat(this.pending); // not durable: the next FLUSH tries again
      throw error instanceof IoError ? error : new IoError('EIO', 'flush',
        `flush: EIO: copy-on-write remaps not committed: ${(error as Error).message}`);
    }
    this.counts.committed += remaps.length;
    this.counts.commits += 1;
  }

  /** The shared units (whole member extents, clipped to the map) under the range. */
  private sharedUnits(offset: number, length: number): Unit[] {
    const units: Unit[] = [];
    const map = this.mapNow;
    const end = offset + length;
    for (let index = map.indexOf(offset); index < map.count; index++) {
      const view = map.at(index);
      if (view.startVirtual >= end) break;
      if (!view.isShared) continue;
      const extentSize = this.catalog.extentSizeOf(view.path);
      const from = Math.max(offset, view.startVirtual);
      const to = Math.min(end, view.endVirtual);
      let backing = view.offsetBacking + (from - view.startVirtual);
      backing -= backing % extentSize;
      for (; view.startVirtual + backing - view.offsetBacking < to; backing += extentSize) {
        const startVirtual = Math.max(view.startVirtual,
          view.startVirtual + backing - view.offsetBacking);
        const stop = Math.min(view.endVirtual,
          view.startVirtual + backing + extentSize - view.offsetBacking);
        units.push({ startVirtual, length: stop - startVirtual, path: view.path,
          offsetBacking: view.offsetBacking + (startVirtual - view.startVirtual), extentSize });
      }
    }
    return units;
  }

  private breakUnit(unit: Unit): Promise<void> {
    const running = this.breaking.get(unit.startVirtual);
    if (running !== undefined) return running;
    const work = this.copyAndSwap(unit).finally(() => this.breaking.delete(unit.startVirtual));
    this.breaking.set(unit.startVirtual, work);
    return work;
  }

  private async copyAndSwap(unit: Unit): Promise<void> {
    this.checkOpen();
    const target = await this.takeReserve(unit.extentSize);
    const [source, sink] = await Promise.all([this.backingOf(unit.path),
      this.backingOf(target.path)]);
    await copyExtent(source, unit.offsetBacking, sink, target.offset, unit.length);
    this.checkOpen();
    // still shared here? (a remark may have changed the map while we copied: then start over)
    if (!this.replaceUnit(unit, target)) {
      this.putBack(target);
      return;
    }
    this.pending.push({ virtualOffset: unit.startVirtual, length: unit.extentSize,
      memberId: target.memberId, firstExtent: target.extentIndex });
    this.counts.remaps += 1;
    await this.swapAll();
  }

  /** Puts `target` in place of `unit` in the list; false when the unit is no longer shared. */
  private replaceUnit(unit: Unit, target: ReserveExtent): boolean {
    const next: ExtentSpec[] = [];
    let cursor = 0;
    let isDone = false;
    const end = unit.startVirtual + unit.length;
    for (const spec of this.specsNow) {
      const specEnd = cursor + spec.length;
      if (specEnd <= unit.startVirtual || cursor >= end || isDone) {
        next.push(spec);
      } else {
        const isSame = spec.shared === true && spec.path === unit.path &&
          spec.offset + (unit.startVirtual - cursor) === unit.offsetBacking && specEnd >= end &&
          cursor <= unit.startVirtual;
        if (!isSame) return false;
        const head = unit.startVirtual - cursor;
        if (head > 0) next.push({ ...spec, length: head });
        next.push({ path: target.path, offset: target.offset, length: unit.length, shared: false });
        if (specEnd > end) next.push({ ...spec, offset: spec.offset + head + unit.length,
          length: specEnd - end });
        isDone = true;
      }
      cursor = specEnd;
    }
    if (!isDone) return false;
    this.specsNow = next;
    this.mapNow = ExtentMap.fromList(next);
    return true;
  }

  /** Swaps every member to the newest map, one swap after another. */
  private swapAll(): Promise<void> {
    const run = this.swapping.then(async () => {
      const map = this.mapNow;
      await Promise.all([...this.members].map((member) => member.swapMap(map)));
    });
    this.swapping = run.catch(() => undefined);
    return run;
  }

  private async takeReserve(extentSize: number): Promise<ReserveExtent> {
    for (let attempt = 0; attempt < LIMITS.cowBreakAttemptsMax; attempt++) {
      const list = this.reserves.get(extentSize) ?? [];
      this.reserves.set(extentSize, list);
      const taken = list.shift();
      if (list.length < LIMITS.cowReserveLow) void this.refill(extentSize).catch(() => undefined);
      if (taken !== undefined) return taken;
      await this.refill(extentSize);
    }
    throw new IoError('ENOSPC', 'write', 'write: ENOSPC: no extent for copy-on-write');
  }

  private putBack(target: ReserveExtent): void {
    this.reserves.get(target.extentSize)?.unshift(target);
  }

  private refill(extentSize: number): Promise<void> {
    const running = this.refilling.get(extentSize);
    if (running !== undefined) return running;
    const work = this.catalog.reserve(extentSize, LIMITS.cowReserveBatch).then((got) => {
      const list = this.reserves.get(extentSize) ?? [];
      for (const extent of got) {
        assert(extent.extentSize === extentSize, 'a reserve extent has the size asked for');
        list.push(extent);
      }
      this.reserves.set(extentSize, list);
    }, (error: unknown) => {
      throw error instanceof IoError ? error : new IoError('ENOSPC', 'write',
        `write: ENOSPC: no extent for copy-on-write: ${(error as Error).message}`);
    }).finally(() => this.refilling.delete(extentSize));
    this.refilling.set(extentSize, work);
    return work;
  }

  private backingOf(path: string): Promise<PooledBacking> {
    let opening = this.held.get(path);
    if (opening === undefined) {
      opening = this.pool.acquire(path, this.mode);
      this.held.set(path, opening);
      opening.catch(() => this.held.delete(path));
    }
    return opening;
  }

  private checkOpen(): void {
    if (this.isClosed) {
      throw new IoError('ESHUTDOWN', 'write', 'write: ESHUTDOWN: the VD is no longer served');
    }
  }
}
