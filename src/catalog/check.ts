/**
 * check: the catalog's fsck, a pure function over its rows (and which servers are alive, which
 * the caller learns from /proc). Per member, the free runs, every VD's runs (live or dead: a
 * dead VD keeps its extents until the allocator takes them) and the copy-on-write reserves must
 * cover [0, extent_count) exactly: an extent is free once, or in one reserve, or mapped by as
 * many VDs as its stored owner count says (clones; 1 without a count row), never twice by one
 * VD, none outside the member, none lost. A live VD must hold at
 * least its size; pending zeroing must lie inside its VD's runs. VBD rows and their sharing:
 * ./check-vbds.ts. A lease names an existing server and VD, at a generation the VD has had; a
 * lease of a live server on a VD whose extents went to another VD breaks invariant 2. Leases of
 * servers that are not running are stale: they hold nothing, so they are notes, not faults.
 * A server with a host (src/serve/host-lease.ts) holds its leases until it is taken over, so it
 * counts as running; one whose heartbeat is older than its TTL is a note (it awaits a fence).
 * An import in progress is a note; one whose process is gone is an abandoned import, also a note
 * (the next xvd command frees its extents), never a fault. An importing VD carries no expiry and
 * nothing may use it: a VBD or a lease naming it is a fault, as is an import of no VD.
 */
import { checkVbds, type CheckRangeRow, type CheckVbdRow } from './check-vbds';
import type { CheckReport } from './types';

export interface CheckInput {
  members: { id: number; path: string; size_bytes: number; extent_size: number;
    extent_count: number }[];
  freeRuns: { member_id: number; first_extent: number; extent_count: number }[];
  vds: { id: number; size_bytes: number; expires_at: number | null; generation: number;
    /** the expert level of its last undelete (schema 4; null or absent: not recorded) */
    undelete_expert?: number | null }[];
  runs: { vd_id: number; seq: number; member_id: number; first_extent: number;
    extent_count: number }[];
  /** Member byte ranges. */
  pending: { vd_id: number; member_id: number; offset: number; length: number }[];
  /** Which VD lost extents to which (vd_losses). */
  losses: { vd_id: number; taken_by: number }[];
  vbds: CheckVbdRow[];
  vbdRanges: CheckRangeRow[];
  servers: { id: number; pid: number; host?: string | null; heartbeat_at?: number;
    lease_ttl_ms?: number | null }[];
  /** Ids of the servers whose leases hold (process running; a host's row until taken over). */
  liveServerIds: number[];
  leases: { server_id: number; vd_id: number; generation: number }[];
  /** Owner counts of shared extents (schema 7; absent: none). */
  owners?: { member_id: number; first_extent: number; extent_count: number; owners: number }[];
  /** Copy-on-write reserves (schema 7; absent: none). */
  reserves?: { vd_id: number; member_id: number; first_extent: number; extent_count: number }[];
  /** Which VD each clone was made from (schema 7; absent: none). */
  clones?: { vd_id: number; origin_id: number; origin_generation: number }[];
  /** Imports in progress (schema 5; absent: none) and whether their process still runs. */
  imports?: { vd_id: number; pid: number; isOwnerAlive: boolean }[];
  now: number;
}


function checkMembers(input: CheckInput, faults: string[]): void {
  for (const m of input.members) {
    if (m.extent_count !== Math.floor(m.size_bytes / m.extent_size)) {
      faults.push(`member ${m.id} (${m.path}): extent count ${m.extent_count} does not match `
        + `${m.size_bytes} bytes / ${m.extent_size}`);
    }
  }
}

/** Something that holds extents [first, end) of a member. */
interface Held {
  first: number;
  end: number;
  kind: 'free' | 'vd' | 'reserve' | 'count';
  /** the VD of a run or reserve; the count of a count row */
  value: number;
}

function heldByMember(input: CheckInput): Map<number, Held[]> {
  const held = new Map<number, Held[]>();
  const add = (memberId: number, first: number, count: number, kind: Held['kind'],
    value: number) => {
    const list = held.get(memberId) ?? [];
    list.push({ first, end: first + count, kind, value });
    held.set(memberId, list);
  };
  for (const f of input.freeRuns) add(f.member_id, f.first_extent, f.extent_count, 'free', 0);
  for (const r of input.runs) add(r.member_id, r.first_extent, r.extent_count, 'vd', r.vd_id);
  for (const r of input.reserves ?? []) {
    add(r.member_id, r.first_extent, r.extent_count, 'reserve', r.vd_id);
  }
  for (const o of input.owners ?? []) {
    add(o.member_id, o.first_extent, o.extent_count, 'count', o.owners);
  }
  return held;
}

function labelOf(h: Held): string {
  if (h.kind === 'free') return 'free';
  return h.kind === 'vd' ? `VD ${h.value}` : `the reserve of VD ${h.value}`;
}

/** The faults of one stretch [first, end) of a member, held by `active` throughout. */
function judgeStretch(where: string, first: number, end: number, active: readonly Held[],
  faults: string[]): void {
  const range = `extents [${first}, ${end})`;
  const holders = active.filter((h) => h.kind !== 'count');
  const counts = active.filter((h) => h.kind === 'count');
  const vds = holders.filter((h) => h.kind === 'vd');
  const others = holders.filter((h) => h.kind !== 'vd');
  if (holders.length === 0) {
    faults.push(`${where}: ${range} are lost (neither free nor owned by a VD)`);
  } else if (others.length > 1 || (others.length === 1 && vds.length > 0)) {
    const [a, b] = others.length > 1 ? others : [others[0]!, vds[0]!];
    faults.push(`${where}: ${range} are owned by both ${labelOf(a!)} and ${labelOf(b!)}`);
  }
  const vdIds = vds.map((h) => h.value);
  const twice = vdIds.find((id, index) => vdIds.indexOf(id) !== index);
  if (twice !== undefined) faults.push(`${where}: VD ${twice} maps ${range} twice`);
  if (counts.length > 1) faults.push(`${where}: ${range} have ${counts.length} owner count rows`);
  const stored = counts[0]?.value;
  if (vds.length === 0 && stored !== undefined) {
    faults.push(`${where}: ${range} have owner count ${stored}, yet no VD maps them`);
  } else if (vds.length > 0 && (stored ?? 1) !== vds.length) {
    faults.push(`${where}: ${range} have owner count ${stored ?? 1}, yet ${vds.length} VDs `
      + `map them (${vdIds.map((id) => `VD ${id}`).join(', ')})`);
  }
}

/**
 * Per member, a sweep over the boundaries of everything that holds its extents: each extent is
 * free once, or mapped by VDs as many times as its owner count says (1 without a count row), or
 * in one VD's reserve; none is lost or beyond the member.
 */
function checkOwnership(input: CheckInput, faults: string[]): void {
  const held = heldByMember(input);
  const members = new Map(input.members.map((m) => [m.id, m]));
  for (const memberId of held.keys()) {
    if (!members.has(memberId)) faults.push(`runs name member ${memberId}, which does not exist`);
  }
  for (const m of input.members) {
    const where = `member ${m.id} (${m.path})`;
    const list = held.get(m.id) ?? [];
    const points = [...new Set([0, m.extent_count, ...list.flatMap((h) => [h.first, h.end])])]
      .sort((a, b) => a - b);
    const reach = Math.max(m.extent_count, ...list.map((h) => h.end));
    if (reach > m.extent_count) {
      faults.push(`${where}: runs reach extent ${reach}, past its ${m.extent_count} extents`);
    }
    const sorted = [...list].sort((a, b) => a.first - b.first);
    let active: Held[] = [];
    let next = 0;
    for (let i = 0; i + 1 < points.length && points[i]! < m.extent_count; i++) {
      const [first, end] = [points[i]!, points[i + 1]!];
      active = active.filter((h) => h.end > first);
      while (next < sorted.length && sorted[next]!.first <= first) active.push(sorted[next++]!);
      judgeStretch(where, first, end, active, faults);
    }
  }
}

function checkVdSizes(input: CheckInput, faults: string[]): void {
  const extentSize = new Map(input.members.map((m) => [m.id, m.extent_size]));
  const allocated = new Map<number, number>();
  for (const r of input.runs) {
    const bytes = r.extent_count * (extentSize.get(r.member_id) ?? 0);
    allocated.set(r.vd_id, (allocated.get(r.vd_id) ?? 0) + bytes);
  }
  const vdIds = new Set(input.vds.map((v) => v.id));
  for (const vdId of allocated.keys()) {
    if (!vdIds.has(vdId)) faults.push(`runs name VD ${vdId}, which does not exist`);
  }
  for (const vdId of new Set((input.reserves ?? []).map((r) => r.vd_id))) {
    if (!vdIds.has(vdId)) faults.push(`a reserve names VD ${vdId}, which does not exist`);
  }
  for (const c of input.clones ?? []) {
    if (!vdIds.has(c.vd_id) || !vdIds.has(c.origin_id)) {
      faults.push(`clone record of VD ${c.vd_id} from VD ${c.origin_id}: a VD does not exist`);
    }
  }
  for (const vd of input.vds) {
    const isDead = vd.expires_at !== null && vd.expires_at <= input.now;
    const bytes = allocated.get(vd.id) ?? 0;
    if (!isDead && bytes < vd.size_bytes) {
      faults.push(`VD ${vd.id}: holds ${bytes} bytes of extents, less than its size `
        + `${vd.size_bytes}`);
    }
  }
}

function checkPending(input: CheckInput, faults: string[]): void {
  const extentSize = new Map(input.members.map((m) => [m.id, m.extent_size]));
  for (const z of input.pending) {
    const size = extentSize.get(z.member_id) ?? 0;
    const inside = input.runs.some((r) => r.vd_id === z.vd_id && r.member_id === z.member_id
      && r.first_extent * size <= z.offset
      && z.offset + z.length <= (r.first_extent + r.extent_count) * size);
    if (!inside) {
      faults.push(`VD ${z.vd_id}: pending zeroing of member ${z.member_id} bytes `
        + `[${z.offset}, ${z.offset + z.length}) lies outside its extents`);
    }
  }
}

function checkLease(input: CheckInput, lease: CheckInput['leases'][number],
  faults: string[]): void {
  const what = `lease of VD ${lease.vd_id} by server ${lease.server_id}`;
  if (!input.servers.some((s) => s.id === lease.server_id)) {
    faults.push(`${what}: the server does not exist`);
  }
  const vd = input.vds.find((v) => v.id === lease.vd_id);
  if (vd === undefined) {
    faults.push(`${what}: the VD does not exist`);
    return;
  }
  if (lease.generation < 1 || lease.generation > vd.generation) {
    faults.push(`${what}: generation ${lease.generation} is not one the VD has had `
      + `(1 to ${vd.generation})`);
  }
  const loss = input.losses.find((l) => l.vd_id === vd.id);
  if (loss !== undefined && input.liveServerIds.includes(lease.server_id)) {
    faults.push(`${what}: the server is running, yet extents of the VD went to VD `
      + `${loss.taken_by} (invariant 2)`);
  }
}

function noteExpiredHost(input: CheckInput, server: CheckInput['servers'][number],
  notes: string[]): void {
  if (server.host === undefined || server.host === null) return;
  const ageMs = input.now - (server.heartbeat_at ?? 0);
  if (ageMs < (server.lease_ttl_ms ?? 0)) return;
  const vdIds = input.leases.filter((l) => l.server_id === server.id).map((l) => l.vd_id);
  notes.push(`server ${server.id} on host ${server.host}: no heartbeat for `
    + `${(ageMs / 1000).toFixed(1)} s (TTL ${((server.lease_ttl_ms ?? 0) / 1000).toFixed(1)} s)`
    + (vdIds.length === 0 ? '; it holds no leases' : `; its leases of VD ${vdIds.join(', ')} `
      + 'hold until another server fences it and takes over'));
}

function checkLeases(input: CheckInput, faults: string[], notes: string[]): void {
  for (const lease of input.leases) checkLease(input, lease, faults);
  for (const server of input.servers) {
    noteExpiredHost(input, server, notes);
    if (input.liveServerIds.includes(server.id)) continue;
    const vdIds = input.leases.filter((l) => l.server_id === server.id).map((l) => l.vd_id);
    const held = vdIds.length === 0 ? 'it holds no leases'
      : `its leases of VD ${vdIds.join(', ')} are stale and hold nothing`;
    notes.push(`server ${server.id} (pid ${server.pid}) is not running: ${held}; the next `
      + 'xvd serve removes it');
  }
}

function checkImports(input: CheckInput, faults: string[], notes: string[]): void {
  for (const row of input.imports ?? []) {
    const vd = input.vds.find((v) => v.id === row.vd_id);
    if (vd === undefined) {
      faults.push(`import by pid ${row.pid} names VD ${row.vd_id}, which does not exist`);
      continue;
    }
    if (vd.expires_at !== null) {
      faults.push(`VD ${vd.id}: being imported, yet it has an expiry (${vd.expires_at})`);
    }
    if (input.vbds.some((vbd) => vbd.vd_id === vd.id)) {
      faults.push(`VD ${vd.id}: being imported, yet a VBD names it`);
    }
    if (input.leases.some((lease) => lease.vd_id === vd.id)) {
      faults.push(`VD ${vd.id}: being imported, yet a server leases it`);
    }
    notes.push(row.isOwnerAlive
      ? `VD ${vd.id}: being imported by pid ${row.pid} (not usable until its copy is complete)`
      : `VD ${vd.id}: import abandoned (pid ${row.pid} is not running): not usable; the next `
        + 'xvd command frees its extents');
  }
}

/** Every fault and note found, one line each; no faults when the catalog is sound. */
export function checkCatalog(input: CheckInput): CheckReport {
  const faults: string[] = [];
  const notes: string[] = [];
  checkMembers(input, faults);
  checkOwnership(input, faults);
  checkVdSizes(input, faults);
  checkPending(input, faults);
  checkVbds(input, faults);
  checkLeases(input, faults, notes);
  checkImports(input, faults, notes);
  return { faults, notes };
}
