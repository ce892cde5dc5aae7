/**
 * serve/cow-vds: the copy-on-write side of the catalog provider (catalog-provider.ts): one
 * CowVolume (engine/cow.ts) per VD this server serves, shared by every export of that VD, its
 * catalog calls, and what a fresh resolution of the VD means for it.
 *
 * Contract:
 *   - open(resolved) gives the VD's volume (made from the resolution at the first open, counted
 *     per open); a new export of the VD opens with the volume's map, which may hold remaps the
 *     catalog has not committed yet. release() gives one back; the last one commits what is
 *     pending and closes the volume.
 *   - The volume's catalog (reserve, commit) goes through the provider's CatalogWriter, off the
 *     event loop; a commit is the one catalog write of a FLUSH (engine/cow.ts has the design).
 *   - reconcile(vdId, now) lays a fresh resolution over the served map (cow-verdict.ts):
 *     this server's own commits change nothing ('keep': never a fence, never a new export);
 *     changed shared marks are swapped into every export of the VD without a fence; a larger
 *     size answers 'replace' (new connections get a new export, as an enlarge always did);
 *     anything else is a reason to fence.
 *   - The live clone (the contract's handshake): when the VD's generation moved (cloneVd bumps
 *     it), the new marks are swapped in, the writes in flight on the old map and every
 *     data-path thread's I/O on it are waited for (CowVolume.remark), the remaps made so far are
 *     committed, and only then is the generation of that resolution recorded in the lease
 *     (acquireLease with that generation: a second clone committed meanwhile is not recorded
 *     before this server switched for it), which is what `xvd clone` waits for before the clone
 *     may be served. The commit matters: cloneVd copied the catalog's runs, so an extent this
 *     server had copied but not committed went to the clone with its old bytes; committing it
 *     while the clone is not switched remaps the clone too (commitCowRemaps), so the clone gets
 *     every write acknowledged before the switch.
 */
import type { Catalog, CowExtents, ResolvedVbd } from '../catalog/index';
import type { BackingPool } from '../backing/pool';
import { CowVolume, type CowCatalog, type ReserveExtent } from '../engine/cow';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import type { CatalogWriter } from './catalog-writer';
import { mergeResolved } from './cow-verdict';
import type { FenceReason } from './export-verdict';

interface Vd {
  readonly volume: CowVolume;
  refs: number;
  /** the VD's generation the lease records (the volume serves at least its sharing) */
  generation: number;
}

export interface CowVdsOptions {
  catalog: Catalog;
  writer: CatalogWriter;
  pool: BackingPool;
  log: Logger;
  serverIdOf: () => number | null;
}

/** Splits reserve runs into single extents. */
export function reserveExtentsOf(runs: readonly CowExtents[]): ReserveExtent[] {
  const extents: ReserveExtent[] = [];
  for (const run of runs) {
    for (let index = 0; index < run.extentCount; index++) {
      const extentIndex = run.firstExtent + index;
      extents.push({ memberId: run.memberId, extentIndex, path: run.path,
        offset: extentIndex * run.extentSize, extentSize: run.extentSize });
    }
  }
  return extents;
}

export class CowVds {
  private readonly vds = new Map<number, Vd>();
  private extentSizes = new Map<string, number>();

  constructor(private readonly options: CowVdsOptions) {}

  /** The volume of a resolved VD (see the header). */
  open(resolved: ResolvedVbd): CowVolume {
    const vdId = resolved.vdId;
    if (vdId === null) throw new Error('cow: only a VD has a volume');
    let vd = this.vds.get(vdId);
    if (vd === undefined) {
      const volume = new CowVolume(resolved.extents,
        this.catalogOf(vdId), this.options.pool, 'w');
      vd = { volume, refs: 0, generation: resolved.generation };
      this.vds.set(vdId, vd);
    }
    vd.refs += 1;
    return vd.volume;
  }

  async release(vdId: number): Promise<void> {
    const vd = this.vds.get(vdId);
    if (vd === undefined) return;
    vd.refs -= 1;
    if (vd.refs > 0) return;
    this.vds.delete(vdId);
    // the last export is closed: what its clients wrote stays theirs (engine/cow.ts)
    await vd.volume.commitPending().catch((error: unknown) => this.options.log.error(
      { err: error, vd: vdId, remaps: vd.volume.pendingCount }, 'copy-on-write remaps lost: ' +
      'the VD reads its extents as at its last FLUSH'));
    await vd.volume.close();
  }

  /** The volume of a VD served now, if any. */
  volumeOf(vdId: number): CowVolume | null {
    return this.vds.get(vdId)?.volume ?? null;
  }

  /** What a fresh resolution of the VD means (see the header). */
  async reconcile(vdId: number, now: ResolvedVbd): Promise<'keep' | 'replace' | FenceReason> {
    const vd = this.vds.get(vdId);
    if (vd === undefined) return 'keep';
    const servedSize = vd.volume.map.sizeVirtual;
    const merged = mergeResolved(vd.volume.extents, vd.volume.uncommittedRanges(),
      now.extents);
    if (typeof merged === 'string') return merged;
    const isNewGeneration = now.generation !== vd.generation;
    if (merged.isChanged) await vd.volume.remark(merged.extents);
    if (isNewGeneration) {
      // a clone not switched yet takes this VD's remaps with it (commitCowRemaps): commit first
      await vd.volume.commitPending();
      await this.recordGeneration(vdId, vd, now.generation);
    }
    return merged.extents.reduce((sum, spec) => sum + spec.length, 0) > servedSize
      ? 'replace' : 'keep';
  }

  private async recordGeneration(vdId: number, vd: Vd, generation: number): Promise<void> {
    const serverId = this.options.serverIdOf();
    if (serverId === null) return;
    // exactly the generation switched to: a newer clone is not servable before its own switch
    const lease = await this.options.writer.acquireLease(serverId, vdId, generation);
    vd.generation = generation;
    this.options.log.info({ event: LOG_EVENT.cowSwitch, vd: vdId, generation,
      leaseGeneration: lease.generation, shared: vd.volume.map.sharedCount },
    'VD generation recorded: its shared extents are copied on their first write');
  }

  private catalogOf(vdId: number): CowCatalog {
    const { writer } = this.options;
    const serverId = (): number => {
      const id = this.options.serverIdOf();
      if (id === null) throw new Error('cow: the server is not registered');
      return id;
    };
    return {
      reserve: async (extentSize, count) =>
        reserveExtentsOf(await writer.reserveCowExtents(serverId(), vdId, extentSize, count)),
      commit: (remaps) => writer.commitCowRemaps(serverId(), vdId, remaps),
      extentSizeOf: (path) => this.extentSizeOf(path),
    };
  }

  private extentSizeOf(path: string): number {
    let size = this.extentSizes.get(path);
    if (size === undefined) {
      this.extentSizes = new Map(this.options.catalog.listMembers()
        .map((member) => [member.path, member.extentSize]));
      size = this.extentSizes.get(path);
    }
    if (size === undefined) throw new Error(`cow: ${path} is no member of the pool`);
    return size;
  }
}
