/**
 * catalog/clones: copy-on-write clones of a VD (issue 18), the catalog's part.
 *
 * Contract: cloneVd is one IMMEDIATE transaction, O(runs of the origin), whatever its size: the
 * clone gets a copy of the origin's runs (same extents, same virtual order, same size), every
 * extent of them gains an owner (./owners.ts), the origin's generation moves on, and vd_clones
 * records the origin and that generation. The origin must be live and usable: not dead
 * (ERR_VD_DELETED), not being imported (ERR_VD_IMPORTING), not pending zeroing
 * (ERR_VD_ZEROING); a refusal changes nothing. Clones of clones work the same way.
 *
 * The live handshake: a server serving the origin writes its shared extents in place until it
 * sees the new generation and switches the origin to copy-on-write; it then records that
 * generation in its lease. Until every live lease on the origin shows it, the clone is not
 * servable (isCloneSwitched false: resolveVbd says it dangles), and `xvd clone` waits for it
 * (bounded by LIMITS.cloneSwitchWaitMs). A lease of a server that is not running holds nothing
 * and does not count.
 */
import { UsageError } from '../errors';
import { LIMITS } from '../limits';
import { liveLeases } from './leases';
import { changeOwners } from './owners';
import {
  checkSeconds, expiryAt, get, invalid, tx, type CatalogContext, type CloneRow,
} from './statements';
import type { CloneOptions, VdDetail } from './types';
import { detail, liveVdRow, runsOf } from './vd-rows';

function checkName(op: string, name: string | null | undefined): string | null {
  if (name === undefined || name === null) return null;
  if (typeof name !== 'string' || name.length > LIMITS.vdNameLengthMax) {
    invalid(`${op}: the name must be at most ${LIMITS.vdNameLengthMax} characters`);
  }
  return name;
}

export function cloneVd(cx: CatalogContext, id: number, options: CloneOptions = {}): VdDetail {
  if (options.expiresInS !== undefined) checkSeconds('clone', options.expiresInS);
  const name = checkName('clone', options.name);
  const cloneId = tx(cx, () => {
    const now = cx.now();
    const origin = liveVdRow(cx, 'clone', id, now);
    if (get<{ n: number }>(cx.st.pendingOf, id)!.n > 0) {
      throw new UsageError('ERR_VD_ZEROING', `clone: VD ${id} is still being zeroed `
        + '(clone it once it is live)');
    }
    const runs = runsOf(cx, id);
    const info = cx.st.insertVd.run(name, origin.size_bytes, expiryAt(options.expiresInS, now),
      now);
    const newId = Number(info.lastInsertRowid);
    runs.forEach((r, seq) => {
      cx.st.insertRun.run(newId, seq, r.memberId, r.firstExtent, r.extentCount);
    });
    changeOwners(cx, runs, 1);
    cx.st.bumpVd.run(id);
    cx.st.insertClone.run(newId, id, origin.generation + 1);
    return newId;
  });
  return detail(cx, cloneId);
}

/**
 * True unless `vdId` is a clone whose origin a live server still serves at a generation from
 * before the clone (it has not switched to copy-on-write yet).
 */
export function isCloneSwitched(cx: CatalogContext, vdId: number): boolean {
  const clone = get<CloneRow>(cx.st.cloneOf, vdId);
  if (clone === undefined) return true;
  return liveLeases(cx).every((lease) => lease.vdId !== clone.origin_id
    || lease.generation >= clone.origin_generation);
}

/** The VD a clone was made from, or null. */
export function originOf(cx: CatalogContext, vdId: number): number | null {
  return get<CloneRow>(cx.st.cloneOf, vdId)?.origin_id ?? null;
}
