/**
 * serve/export-verdict: the pure decisions of the catalog provider (catalog-provider.ts): what
 * an export name means, and what to do with an open export when its VBD resolves differently.
 *
 * Contract: judge() compares the resolution an export was opened with against the current one
 * and answers 'keep' (nothing changed), 'replace' (the same live VD, enlarged or its zeroing
 * finished: its old extents are a prefix of the new ones, so connections keep the old Export
 * and new ones get a new one, without a fence), or the reason the export must be fenced (the
 * VBD went, the VD died or is not yet zeroed, its source, mode or extents changed, or it shrank).
 * judgeBinding() is its first half, alone (a VD served with copy-on-write: cow-verdict.ts).
 * Nothing here touches an export; only resolveOrNull reads the catalog.
 */
import type { Catalog, ResolvedVbd } from '../catalog/index';
import { XvdError } from '../errors';

/** Why an open export must be fenced. */
export type FenceReason =
  | 'VBD removed'
  | 'VD deleted, expired or not yet zeroed'
  | 'VBD now maps another source'
  | 'VBD mode changed'
  | 'VBD extents changed'
  | 'VD shrank'
  | 'VD extents changed';

/** 'keep', 'replace', or why the export must be fenced. */
export type Verdict = 'keep' | 'replace' | FenceReason;

/** `DOMAIN/DEVICE` → parts, or null when the name is not of that shape. */
export function parseExportName(name: string): { domain: number; device: string } | null {
  const match = /^(\d{1,9})\/([A-Za-z0-9._-]{1,64})$/.exec(name);
  if (match === null || match[1] === undefined || match[2] === undefined) return null;
  return { domain: Number(match[1]), device: match[2] };
}

/** The VBD as the catalog resolves it now, or null when it resolves to nothing (XvdError). */
export function resolveOrNull(catalog: Catalog, domain: number, device: string,
): ResolvedVbd | null {
  try {
    return catalog.resolveVbd(domain, device);
  } catch (error) {
    if (error instanceof XvdError) return null;
    throw error;
  }
}

/** Whether an open export may stay as it is, be replaced for new connections, or must be fenced. */
export function judge(before: ResolvedVbd, now: ResolvedVbd | null): Verdict {
  const binding = judgeBinding(before, now);
  if (binding !== null || now === null) return binding ?? 'VBD removed';
  if (now.generation === before.generation && now.size === before.size) {
    return sameExtents(before, now) ? 'keep' : 'VBD extents changed';
  }
  if (now.size < before.size) return 'VD shrank';
  // enlarged: the old extents must be a prefix of the new ones
  for (let index = 0; index < before.extents.length; index++) {
    const a = before.extents[index];
    const b = now.extents[index];
    if (a === undefined || b === undefined) return 'VD extents changed';
    const isLast = index === before.extents.length - 1;
    if (a.path !== b.path || a.offset !== b.offset) return 'VD extents changed';
    if (isLast ? b.length < a.length : b.length !== a.length) return 'VD extents changed';
  }
  return 'replace';
}

/**
 * The part of judge() about the VBD itself (gone, dangling, another source, another mode): a
 * reason to fence, or null. A VD served with copy-on-write is judged by this, and its extents
 * by cow-verdict.ts mergeResolved (its map moves on without the catalog's generation).
 */
export function judgeBinding(before: ResolvedVbd, now: ResolvedVbd | null): FenceReason | null {
  if (now === null) return 'VBD removed';
  if (now.isDangling) return 'VD deleted, expired or not yet zeroed';
  if (now.vdId !== before.vdId) return 'VBD now maps another source';
  if (now.mode !== before.mode) return 'VBD mode changed';
  return null;
}

function sameExtents(a: ResolvedVbd, b: ResolvedVbd): boolean {
  if (a.extents.length !== b.extents.length) return false;
  return a.extents.every((x, index) => {
    const y = b.extents[index];
    return y !== undefined && x.path === y.path && x.offset === y.offset && x.length === y.length;
  });
}

/** The export description a client sees for a resolved VBD. */
export function describeResolved(resolved: ResolvedVbd): string {
  const source = resolved.vdId === null ? 'device' : `vd ${resolved.vdId}`;
  const mode = resolved.mode === 'r' ? 'read-only' : 'writable';
  return `xvd ${source}, ${mode}, domain ${resolved.domain}`;
}
