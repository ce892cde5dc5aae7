/**
 * check-vbds: the VBD part of the catalog's fsck (./check.ts), a pure function over rows.
 *
 * Each VBD row must be well formed for its source: `vd` names an existing VD and carries no
 * path, size or ranges; `phy` has a path and a positive size and no ranges; `extents` has 1 to
 * LIMITS.catalogVbdRangesMax ranges numbered 0..n-1. The device name is one addVbd accepts.
 * Every range is a sane byte range and, when its path is a pool member, lies within the member.
 * No range row belongs to a missing VBD.
 *
 * Sharing is judged again as addVbd judged it: holders are the VBDs (a `vd` VBD holds its VD's
 * runs, dead or alive) and the live VDs (writers on their members); two overlapping holders need
 * an expert level of at least their number of writers. A VBD pair is judged at the level of the
 * later VBD (it was checked against the earlier one), a VBD and a live VD at the higher of the
 * VBD's level and the level the VD was last undeleted with (the allocator never places a VD
 * under a VBD; undelete judges the VBDs added while the VD was dead, as vbd add would, at its
 * --expert level, which it records); a VBD and its own VD, and two VDs (./check.ts's ownership
 * check), are not judged. A pair with no recorded level (a VBD added before levels were recorded,
 * expert NULL, and a VD not undeleted since) is not judged either.
 */
import { LIMITS } from '../limits';
import type { CheckInput } from './check';

export interface CheckVbdRow {
  id: number;
  domain: number;
  device: string;
  mode: 'r' | 'w';
  source_kind: string;
  vd_id: number | null;
  phy_path: string | null;
  phy_size: number | null;
  expert: number | null;
}

export interface CheckRangeRow {
  vbd_id: number;
  seq: number;
  path: string;
  offset: number;
  length: number;
}

interface Interval {
  path: string;
  start: number;
  end: number;
  holder: number;
}

/** The input with the lookups every VBD needs, built once. */
interface Rows {
  input: CheckInput;
  membersById: Map<number, CheckInput['members'][number]>;
  membersByPath: Map<string, CheckInput['members'][number]>;
  runsByVd: Map<number, CheckInput['runs']>;
  vdIds: Set<number>;
  rangesByVbd: Map<number, CheckRangeRow[]>;
}

/** A VBD (vbd set) or a live VD (vdId set) holding byte ranges. */
interface Holder {
  label: string;
  mode: 'r' | 'w';
  vbd: CheckVbdRow | null;
  vdId: number | null;
  /** the level a VD was last undeleted with (null: never, or not recorded) */
  undeleteExpert: number | null;
}

function labelOf(vbd: CheckVbdRow): string {
  return `VBD ${vbd.domain}/${vbd.device}`;
}

function isSaneRange(offset: unknown, length: unknown): boolean {
  return typeof offset === 'number' && typeof length === 'number'
    && Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length > 0
    && Number.isSafeInteger(offset + length);
}

function checkRange(rows: Rows, label: string, path: string, offset: number,
  length: number, faults: string[]): void {
  if (!isSaneRange(offset, length)) {
    faults.push(`${label}: range ${path} offset ${offset} length ${length} is not a byte range`);
    return;
  }
  const member = rows.membersByPath.get(path);
  if (member !== undefined && offset + length > member.size_bytes) {
    faults.push(`${label}: range ${path} [${offset}, ${offset + length}) ends past pool member `
      + `${member.id} (${member.size_bytes} bytes)`);
  }
}

function checkVdSource(rows: Rows, vbd: CheckVbdRow, ranges: CheckRangeRow[],
  faults: string[]): void {
  const label = labelOf(vbd);
  if (vbd.vd_id === null || !rows.vdIds.has(vbd.vd_id)) {
    faults.push(`${label}: names VD ${vbd.vd_id}, which does not exist`);
  }
  if (vbd.phy_path !== null || vbd.phy_size !== null || ranges.length > 0) {
    faults.push(`${label}: a vd: source carries a path, size or extent ranges`);
  }
}

function checkPhySource(rows: Rows, vbd: CheckVbdRow, ranges: CheckRangeRow[],
  faults: string[]): void {
  const label = labelOf(vbd);
  if (vbd.vd_id !== null || ranges.length > 0) {
    faults.push(`${label}: a phy: source carries a VD or extent ranges`);
  }
  if (vbd.phy_path === null || vbd.phy_path === '') {
    faults.push(`${label}: a phy: source without a path`);
    return;
  }
  checkRange(rows, label, vbd.phy_path, 0, vbd.phy_size ?? 0, faults);
}

function checkExtentsSource(rows: Rows, vbd: CheckVbdRow, ranges: CheckRangeRow[],
  faults: string[]): void {
  const label = labelOf(vbd);
  if (vbd.vd_id !== null || vbd.phy_path !== null || vbd.phy_size !== null) {
    faults.push(`${label}: an extents: source carries a VD, path or size`);
  }
  if (ranges.length === 0 || ranges.length > LIMITS.catalogVbdRangesMax) {
    faults.push(`${label}: holds ${ranges.length} extent ranges, not 1 to `
      + `${LIMITS.catalogVbdRangesMax}`);
  }
  if (ranges.some((r, index) => r.seq !== index)) {
    faults.push(`${label}: extent ranges are not numbered 0 to ${ranges.length - 1}`);
  }
  for (const r of ranges) checkRange(rows, label, r.path, r.offset, r.length, faults);
}

function checkVbdRow(rows: Rows, vbd: CheckVbdRow, faults: string[]): void {
  const label = labelOf(vbd);
  const ranges = rows.rangesByVbd.get(vbd.id) ?? [];
  const { device } = vbd;
  if (device === '' || device.length > LIMITS.deviceNameLengthMax || device.includes('/')) {
    faults.push(`${label}: device name '${device}' is not one vbd add accepts`);
  }
  if (vbd.expert !== null && ![0, 1, 2].includes(vbd.expert)) {
    faults.push(`${label}: expert level ${vbd.expert} is not 0, 1 or 2`);
  }
  if (vbd.source_kind === 'vd') checkVdSource(rows, vbd, ranges, faults);
  else if (vbd.source_kind === 'phy') checkPhySource(rows, vbd, ranges, faults);
  else if (vbd.source_kind === 'extents') checkExtentsSource(rows, vbd, ranges, faults);
  else faults.push(`${label}: unknown source kind '${vbd.source_kind}'`);
}

function groupBy<T>(items: readonly T[], keyOf: (item: T) => number): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const list = groups.get(keyOf(item)) ?? [];
    list.push(item);
    groups.set(keyOf(item), list);
  }
  return groups;
}

function rowsOf(input: CheckInput): Rows {
  const rangesByVbd = groupBy(input.vbdRanges, (r) => r.vbd_id);
  for (const list of rangesByVbd.values()) list.sort((a, b) => a.seq - b.seq);
  return {
    input,
    membersById: new Map(input.members.map((m) => [m.id, m])),
    membersByPath: new Map(input.members.map((m) => [m.path, m])),
    runsByVd: groupBy(input.runs, (r) => r.vd_id),
    vdIds: new Set(input.vds.map((v) => v.id)),
    rangesByVbd,
  };
}

/** The bytes of a VD's runs as intervals of `holder`. */
function vdIntervals(rows: Rows, vdId: number, holder: number): Interval[] {
  const intervals: Interval[] = [];
  for (const run of rows.runsByVd.get(vdId) ?? []) {
    const member = rows.membersById.get(run.member_id);
    if (member === undefined) continue; // the ownership check reports it
    const start = run.first_extent * member.extent_size;
    const end = start + run.extent_count * member.extent_size;
    intervals.push({ path: member.path, start, end, holder });
  }
  return intervals;
}

function vbdIntervals(rows: Rows, vbd: CheckVbdRow, holder: number): Interval[] {
  if (vbd.source_kind === 'vd') {
    return vbd.vd_id === null ? [] : vdIntervals(rows, vbd.vd_id, holder);
  }
  const pieces: { path: string; offset: number; length: number | null }[] =
    vbd.source_kind === 'phy'
      ? [{ path: vbd.phy_path ?? '', offset: 0, length: vbd.phy_size }]
      : rows.rangesByVbd.get(vbd.id) ?? [];
  return pieces.filter((p) => p.path !== '' && isSaneRange(p.offset, p.length))
    .map((p) => ({ path: p.path, start: p.offset, end: p.offset + (p.length ?? 0), holder }));
}

/** Every holder and its intervals, sorted by path then start. */
function holdersOf(rows: Rows): { holders: Holder[]; intervals: Interval[] } {
  const { input } = rows;
  const holders: Holder[] = [];
  const intervals: Interval[] = [];
  for (const vbd of input.vbds) {
    const index = holders.push({ label: `${labelOf(vbd)} (${vbd.mode})`, mode: vbd.mode, vbd,
      vdId: null, undeleteExpert: null }) - 1;
    intervals.push(...vbdIntervals(rows, vbd, index));
  }
  for (const vd of input.vds) {
    if (vd.expires_at !== null && vd.expires_at <= input.now) continue;
    const index = holders.push({ label: `pool VD ${vd.id}`, mode: 'w', vbd: null,
      vdId: vd.id, undeleteExpert: vd.undelete_expert ?? null }) - 1;
    intervals.push(...vdIntervals(rows, vd.id, index));
  }
  intervals.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.start - b.start));
  return { holders, intervals };
}

/** The VD a holder is or maps, or null (a phy: or extent-list VBD). */
function vdOf(holder: Holder): number | null {
  if (holder.vbd === null) return holder.vdId;
  return holder.vbd.source_kind === 'vd' ? holder.vbd.vd_id : null;
}

/** The expert level the pair was (or would have been) judged at; null when not judged. */
function levelOf(a: Holder, b: Holder): number | null {
  if (a.vbd === null && b.vbd === null) return null;
  const [vdA, vdB] = [vdOf(a), vdOf(b)];
  if (vdA !== null && vdB !== null && vdA !== vdB) return null; // clones (sharing.ts rule 2b)
  if (a.vbd === null || b.vbd === null) {
    const vbd = (a.vbd ?? b.vbd)!;
    const vd = a.vbd === null ? a : b;
    if (vbd.source_kind === 'vd' && vbd.vd_id === vd.vdId) return null;
    if (vbd.expert === null) return vd.undeleteExpert;
    return vd.undeleteExpert === null ? vbd.expert : Math.max(vbd.expert, vd.undeleteExpert);
  }
  return (a.vbd.id > b.vbd.id ? a.vbd : b.vbd).expert;
}

function judgePair(a: Interval, b: Interval, holders: Holder[], faults: string[]): void {
  const [first, second] = [holders[a.holder]!, holders[b.holder]!];
  const level = levelOf(first, second);
  if (level === null) return;
  const writers = (first.mode === 'w' ? 1 : 0) + (second.mode === 'w' ? 1 : 0);
  if (writers <= level) return;
  const isSecondLater = second.vbd !== null
    && (first.vbd === null || second.vbd.id > first.vbd.id);
  const [later, earlier] = isSecondLater ? [second, first] : [first, second];
  const start = Math.max(a.start, b.start);
  const end = Math.min(a.end, b.end);
  faults.push(`${later.label} shares ${a.path} [${start}, ${end}) with ${earlier.label}: needs `
    + `expert level ${writers}, was added with ${level}`);
}

/** Overlapping intervals of different holders, each holder pair judged once. */
function checkSharing(rows: Rows, faults: string[]): void {
  const { holders, intervals } = holdersOf(rows);
  const judged = new Set<string>();
  let active: Interval[] = [];
  for (const next of intervals) {
    active = active.filter((a) => a.path === next.path && a.end > next.start);
    for (const a of active) {
      if (a.holder === next.holder) continue;
      const key = `${Math.min(a.holder, next.holder)}:${Math.max(a.holder, next.holder)}`;
      if (judged.has(key)) continue;
      judged.add(key);
      judgePair(a, next, holders, faults);
    }
    active.push(next);
  }
}

/** Faults of VBD rows, their ranges and their sharing, one line each. */
export function checkVbds(input: CheckInput, faults: string[]): void {
  const rows = rowsOf(input);
  const vbdIds = new Set(input.vbds.map((v) => v.id));
  for (const vbdId of rows.rangesByVbd.keys()) {
    if (!vbdIds.has(vbdId)) {
      faults.push(`extent ranges name VBD row ${vbdId}, which does not exist`);
    }
  }
  for (const vbd of input.vbds) checkVbdRow(rows, vbd, faults);
  checkSharing(rows, faults);
}
