/**
 * serve/lease-keeper: the catalog provider's leases (catalog-provider.ts, mechanism 1 of its
 * header): one lease row per VD this server serves, shared by every open export of that VD.
 *
 * Contract: take() resolves 'taken' only after the lease is committed through the CatalogWriter
 * at the VD's generation the caller resolved ('changed': the VD changed between resolve and
 * lease, and the lease was given back; 'gone': the VD is no longer leasable, or the writer
 * failed); a lease another host holds (ERR_LEASE_HELD) rejects with an ExportRefusal saying so.
 * Each take counts one reference; drop() gives one back, and the last one releases the
 * lease in the catalog (a failed release is logged and kept until the server unregisters, which
 * is always safe: holding a lease longer only delays reuse). The takes and drops of one VD run
 * one after another, so its reference count and its lease row agree; settled() waits for all.
 *
 * takeResolved() resolves a VBD and takes its VD's lease, resolving again when the VD changed
 * between the two (an enlarge, or the end of its zeroing, committed meanwhile), so an open at
 * that instant gets the old or the new size rather than no export.
 *
 * Log: one `lease-taken` line when a lease is committed and one `lease-released` line when it is
 * given back (log-events.ts), naming the VD and the export whose open took it.
 */
import assert from 'node:assert';
import type { Catalog, Lease, ResolvedVbd } from '../catalog/index';
import { XvdError } from '../errors';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import { ExportRefusal } from '../nbd/index';
import type { CatalogWriter } from './catalog-writer';
import { resolveOrNull } from './export-verdict';

export type LeaseOutcome = 'taken' | 'changed' | 'gone';

/**
 * Resolve-and-lease attempts per open. Each retry follows a commit that changed the VD between
 * resolve and lease; more than a few in a row is a storm of changes, and the client may retry.
 */
const OPEN_RESOLVE_TRIES = 3;

export class LeaseKeeper {
  private readonly writer: CatalogWriter;
  private readonly log: Logger;
  /** this server's id in the catalog; null before start and after stop */
  private readonly serverIdOf: () => number | null;
  /** vdId → number of entries holding its lease */
  private readonly refs = new Map<number, number>();
  /** vdId → the last lease take or drop of that VD queued (queued()) */
  private readonly queues = new Map<number, Promise<void>>();
  /** vdId → the export whose open took its lease (for the release's log line) */
  private readonly takenFor = new Map<number, string>();
  /** the leases are lost: drops only count down, without a catalog write */
  private isAbandoned = false;

  constructor(writer: CatalogWriter, log: Logger, serverIdOf: () => number | null) {
    this.writer = writer;
    this.log = log;
    this.serverIdOf = serverIdOf;
  }

  /** VDs whose lease is counted now (0 once every export is retired). */
  get countedVds(): number {
    return this.refs.size;
  }

  /** From now on drops write nothing to the catalog (host mode: the leases are lost). */
  abandon(): void {
    this.isAbandoned = true;
  }

  /** Resolves when every take and drop queued so far has ended. */
  async settled(): Promise<void> {
    await Promise.all([...this.queues.values()]);
  }

  /**
   * Takes (or shares) the lease of a resolved VD, unless the VD died or changed meanwhile.
   * Resolves once the lease is committed.
   */
  take(resolved: ResolvedVbd): Promise<LeaseOutcome> {
    assert(resolved.vdId !== null);
    const vdId = resolved.vdId;
    return this.queued(vdId, async () => {
      const serverId = this.serverIdOf();
      assert(serverId !== null);
      const refs = this.refs.get(vdId) ?? 0;
      if (refs === 0) {
        const outcome = await this.acquire(serverId, resolved);
        if (outcome !== 'taken') return outcome;
      }
      this.refs.set(vdId, refs + 1);
      return 'taken';
    });
  }

  /**
   * The VBD resolved and its VD's lease taken (see the header), after `beforeTake` (host mode:
   * clearing another host's expired lease); null: not servable now.
   */
  async takeResolved(catalog: Catalog, domain: number, device: string,
    beforeTake: (vdId: number) => Promise<void> | undefined): Promise<ResolvedVbd | null> {
    for (let attempt = 0; attempt < OPEN_RESOLVE_TRIES; attempt++) {
      const resolved = resolveOrNull(catalog, domain, device);
      if (resolved === null || resolved.isDangling) return null;
      if (resolved.vdId === null) return resolved;
      await beforeTake(resolved.vdId);
      const lease = await this.take(resolved);
      if (lease === 'taken') return resolved;
      if (lease === 'gone') return null;
    }
    return null;
  }

  /** Gives back one reference to a VD's lease; the last one releases it in the catalog. */
  drop(vdId: number): Promise<void> {
    return this.queued(vdId, async () => {
      const refs = this.refs.get(vdId) ?? 0;
      assert(refs > 0);
      if (refs > 1) {
        this.refs.set(vdId, refs - 1);
        return;
      }
      this.refs.delete(vdId);
      const name = this.takenFor.get(vdId);
      this.takenFor.delete(vdId);
      const serverId = this.serverIdOf();
      if (serverId === null || this.isAbandoned) return;
      try {
        await this.writer.releaseLease(serverId, vdId);
        this.log.info({ event: LOG_EVENT.leaseReleased, vd: vdId, export: name, serverId },
          'lease released');
      } catch (error) {
        // still held: it stops counting when this server unregisters (stop) or dies
        this.log.error({ err: error, vd: vdId }, 'lease release failed; kept until stop');
      }
    });
  }

  private async acquire(serverId: number, resolved: ResolvedVbd): Promise<LeaseOutcome> {
    assert(resolved.vdId !== null);
    let lease: Lease;
    try {
      lease = await this.writer.acquireLease(serverId, resolved.vdId);
      const name = `${resolved.domain}/${resolved.device}`;
      if (lease.generation === resolved.generation) {
        this.takenFor.set(resolved.vdId, name);
        this.log.info({ event: LOG_EVENT.leaseTaken, vd: resolved.vdId, export: name, serverId,
          generation: lease.generation }, 'lease taken');
        return 'taken';
      }
      await this.writer.releaseLease(serverId, resolved.vdId);
      this.log.debug({ vd: resolved.vdId, export: name }, 'lease given back: the VD changed');
      return 'changed';
    } catch (error) {
      if (!(error instanceof XvdError)) throw error;
      if (error.code === 'ERR_LEASE_HELD') throw new ExportRefusal(error.message);
      if (error.code === 'ERR_SERVE_CATALOG_WRITER') {
        this.log.error({ err: error, vd: resolved.vdId }, 'open: cannot lease the VD');
      }
      return 'gone';
    }
  }

  /** Runs `work` after every lease take or drop of the VD queued before it. */
  private queued<T>(vdId: number, work: () => Promise<T>): Promise<T> {
    const before = this.queues.get(vdId) ?? Promise.resolve();
    const result = before.then(work);
    const tail = result.then(() => undefined, () => undefined);
    this.queues.set(vdId, tail);
    void tail.then(() => {
      if (this.queues.get(vdId) === tail) this.queues.delete(vdId);
    });
    return result;
  }
}
