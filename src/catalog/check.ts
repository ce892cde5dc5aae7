/**
 * check: the catalog's fsck, a pure function over its rows (and which servers are alive, which
 * the caller learns from /proc). Per member, the free runs and every VD's runs (live or dead: a
 * dead VD keeps its extents until the allocator takes them) must partition [0, extent_count)
 * exactly: no extent owned twice, none outside the member, none lost. A live VD must hold at
 * least its size; pending zeroing must lie inside its VD's runs. VBD rows and their sharing:
 * ./check-vbds.ts. A lease names an existing server and VD, at a generation the VD has had; a
 * lease of a live server on a VD whose extents went to another VD breaks invariant 2. Leases of
 * servers that are not running are stale: they hold nothing, so they are notes, not faults.
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
  servers: { id: number; pid: number }[];
  /** Ids of the servers whose process is running. */
  liveServerIds: number[];
  leases: { server_id: number; vd_id: number; generation: number }[];
  /** Imports in progress (schema 5; absent: none) and whether their process still runs. */
  imports?: { vd_id: number; pid: number; isOwnerAlive: boolean }[];
  now: number;
}


interface Owned {
  first: number;
  end: number;
  owner: string;
}

function checkMembers(input: CheckInput, faults: string[]): void {
  for (const m of input.members) {
    if (m.extent_count !== Math.floor(m.size_bytes / m.extent_size)) {
      faults.push(`member ${m.id} (${m.path}): extent count ${m.extent_count} does not match `
        + `${m.size_bytes} bytes / ${m.extent_size}`);
    }
  }
}

function ownedByMember(input: CheckInput): Map<number, Owned[]> {
  const owned = new Map<number, Owned[]>();
  const add = (memberId: number, first: number, count: number, owner: string) => {
    const list = owned.get(memberId) ?? [];
    list.push({ first, end: first + count, owner });
    owned.set(memberId, list);
  };
  for (const f of input.freeRuns) add(f.member_id, f.first_extent, f.extent_count, 'free');
  for (const r of input.runs) add(r.member_id, r.first_extent, r.extent_count, `VD ${r.vd_id}`);
  return owned;
}

function checkOwnership(input: CheckInput, faults: string[]): void {
  const owned = ownedByMember(input);
  const members = new Map(input.members.map((m) => [m.id, m]));
  for (const memberId of owned.keys()) {
    if (!members.has(memberId)) faults.push(`runs name member ${memberId}, which does not exist`);
  }
  for (const m of input.members) {
    const list = (owned.get(m.id) ?? []).sort((a, b) => a.first - b.first);
    let cursor = 0;
    let previous: Owned | null = null;
    for (const o of list) {
      if (o.first < cursor && previous !== null) {
        faults.push(`member ${m.id} (${m.path}): extents [${o.first}, ${Math.min(cursor, o.end)}) `
          + `are owned by both ${previous.owner} and ${o.owner}`);
      } else if (o.first > cursor) {
        faults.push(`member ${m.id} (${m.path}): extents [${cursor}, ${o.first}) are lost `
          + '(neither free nor owned by a VD)');
      }
      if (o.end > cursor) {
        cursor = o.end;
        previous = o;
      }
    }
    if (cursor > m.extent_count) {
      faults.push(`member ${m.id} (${m.path}): runs reach extent ${cursor}, past its `
        + `${m.extent_count} extents`);
    } else if (cursor < m.extent_count) {
      faults.push(`member ${m.id} (${m.path}): extents [${cursor}, ${m.extent_count}) are lost `
        + '(neither free nor owned by a VD)');
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

function checkLeases(input: CheckInput, faults: string[], notes: string[]): void {
  for (const lease of input.leases) checkLease(input, lease, faults);
  for (const server of input.servers) {
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
