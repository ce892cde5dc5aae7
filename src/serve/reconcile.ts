/**
 * serve/reconcile: what the catalog provider (catalog-provider.ts) does with its open exports
 * when the catalog changed: every export's VBD is resolved again and judged.
 *
 * Contract: an export of a phy:/extent-list VBD is judged by judge() (export-verdict.ts). An
 * export of a VD is judged by judgeBinding() for its VBD, and the VD's extents once per VD by
 * its copy-on-write volume (CowVds.reconcile, cow-vds.ts): the server's own remap commits keep
 * the exports, changed shared marks (a clone, a sharer gone) are swapped in without a fence, an
 * enlarge replaces. 'replace' retires the entry without a fence (connections keep their Export,
 * new opens get a new one); a reason fences it (its connections get NBD_ESHUTDOWN, then drain).
 * A failed copy-on-write reconcile is logged and keeps the exports (tried again next poll).
 */
import type { Catalog, ResolvedVbd } from '../catalog/index';
import type { Logger } from '../log';
import { LOG_EVENT } from '../log-events';
import type { CowVds } from './cow-vds';
import { judge, judgeBinding, resolveOrNull, type Verdict } from './export-verdict';

/** An open export as reconcile sees it. */
export interface Judged {
  readonly name: string;
  readonly resolved: ResolvedVbd;
  readonly refs: number;
}

export interface ReconcileHost<E extends Judged> {
  readonly catalog: Catalog;
  readonly cow: CowVds;
  readonly log: Logger;
  /** takes the entry out of the table, fenced first with `isFence` */
  retire(entry: E, isFence: boolean): Promise<void>;
}

/** Re-resolves every entry and acts on the verdicts (see the header). */
export async function reconcileEntries<E extends Judged>(host: ReconcileHost<E>,
  entries: readonly E[]): Promise<void> {
  const work: Promise<void>[] = [];
  const byVd = new Map<number, { now: ResolvedVbd; entries: E[] }>();
  for (const entry of entries) {
    const now = resolveOrNull(host.catalog, entry.resolved.domain, entry.resolved.device);
    const vdId = entry.resolved.vdId;
    const binding = vdId === null ? null : judgeBinding(entry.resolved, now);
    if (vdId !== null && binding === null && now !== null) {
      const group = byVd.get(vdId) ?? { now, entries: [] };
      group.entries.push(entry);
      byVd.set(vdId, group);
      continue;
    }
    work.push(apply(host, entry, binding ?? judge(entry.resolved, now)));
  }
  for (const [vdId, group] of byVd) {
    const verdict = await host.cow.reconcile(vdId, group.now).catch((error: unknown) => {
      host.log.error({ err: error, vd: vdId }, 'copy-on-write reconcile failed');
      return 'keep' as const;
    });
    for (const entry of group.entries) work.push(apply(host, entry, verdict));
  }
  await Promise.all(work);
}

function apply<E extends Judged>(host: ReconcileHost<E>, entry: E, verdict: Verdict):
Promise<void> {
  if (verdict === 'keep') return Promise.resolve();
  if (verdict === 'replace') {
    // same VD, still alive, old range unchanged (enlarged, or its zeroing finished): new opens
    // get a new Export; connections keep the old one; no fence needed
    host.log.info({ export: entry.name }, 'export changed; new connections get the new map');
    return host.retire(entry, false);
  }
  host.log.info({ event: LOG_EVENT.fence, export: entry.name, vd: entry.resolved.vdId,
    reason: verdict, connections: entry.refs }, 'fencing export: ' + verdict);
  return host.retire(entry, true);
}
