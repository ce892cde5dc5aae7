/**
 * catalog/leases: the servers registered in the catalog and the leases they hold on the VDs they
 * serve (the catalog's part of invariant 2; the server's part is src/serve/catalog-provider.ts,
 * and across hosts src/serve/host-lease.ts).
 *
 * Contract: each mutator is one IMMEDIATE transaction. A server row names its process (pid and
 * start time from /proc); a lease names (server, VD, the VD's generation when taken) and is
 * taken only on a live VD that is not being imported.
 *
 * Two kinds of server:
 * - Without a host (the single-host default): a lease counts only while its server process
 *   lives. A server that is alive but slow (or stopped) may still have writes in flight, so its
 *   leases hold until it releases them or dies; once it is dead nothing of it is in flight. The
 *   heartbeat is informational. registerServer removes the rows of such servers that no longer
 *   run. Leases of these servers do not exclude each other (one host, one set of files).
 * - With a host (`xvd serve --host`, every server on a catalog in RADOS): its lease on a VD is
 *   live while its heartbeat is fresh (heartbeat_at within lease_ttl_ms) and excludes every
 *   other server from that VD (acquireLease refuses with ERR_LEASE_HELD naming the host). An
 *   expired lease still holds, for the allocator and for acquireLease, until its row is removed:
 *   only by the server itself (unregister) or by takeOverServer, which a server calls after it
 *   fenced the expired one (blocklisted its RADOS clients, or killed it on this host), so that
 *   nothing it still has in flight can land once its extents or its VD change hands.
 * registerServer also records where the new server answers `xvd status` (its control socket,
 * src/serve/control.ts), which listServers reads back.
 */
import { XvdError } from '../errors';
import { isProcessAlive, processStartTime } from './liveness';
import { all, get, invalid, tx, type CatalogContext, type ServerRow } from './statements';
import type { HostIdentity, Lease, ServerInfo } from './types';
import { releaseIdleReserves } from './owners';
import { liveVdRow } from './vd-rows';

/** Its process runs (no host), or its heartbeat is fresh at `now` (host). */
export function isServerAlive(row: ServerRow, now: number): boolean {
  if (row.host === null) return isProcessAlive(row.pid, row.pid_start_time);
  return now - row.heartbeat_at < (row.lease_ttl_ms ?? 0);
}

/** Its leases keep its VDs' extents from the allocator: alive, or a host row not yet fenced. */
export function holdsLeases(row: ServerRow, now: number): boolean {
  return row.host !== null || isServerAlive(row, now);
}

function addrsOf(row: ServerRow): string[] {
  const parsed = JSON.parse(row.rados_addrs) as unknown;
  return Array.isArray(parsed) ? parsed.filter((a): a is string => typeof a === 'string') : [];
}

function infoOf(s: ServerRow, now: number): ServerInfo {
  return {
    id: s.id, pid: s.pid, startedAtMs: s.started_at, heartbeatAtMs: s.heartbeat_at,
    controlPath: s.control_path ?? null, isAlive: isServerAlive(s, now), host: s.host,
    leaseTtlMs: s.lease_ttl_ms, radosAddrs: addrsOf(s), pidStartTime: s.pid_start_time,
  };
}

/** Leases that keep their VDs' extents from the allocator (holdsLeases). */
export function liveLeases(cx: CatalogContext): Lease[] {
  const now = cx.now();
  const holding = new Set(all<ServerRow>(cx.st.servers)
    .filter((s) => holdsLeases(s, now)).map((s) => s.id));
  return all<{ server_id: number; vd_id: number; generation: number }>(cx.st.leases)
    .filter((l) => holding.has(l.server_id))
    .map((l) => ({ serverId: l.server_id, vdId: l.vd_id, generation: l.generation }));
}

/**
 * VD ids whose extents must stay put although dead: leased by a live server that has not yet
 * fenced and drained them (invariant 2); also the VDs whose copy-on-write reserves are kept.
 * A VBD that still names a dead VD holds nothing: as in the Xen tools, deleting frees the
 * space; the VBD dangles and is not served.
 */
export function heldVdIds(cx: CatalogContext): Set<number> {
  return new Set(liveLeases(cx).map((lease) => lease.vdId));
}

export function registerServer(cx: CatalogContext, controlPath: string | null,
  identity: HostIdentity | null = null): number {
  return tx(cx, () => {
    const now = cx.now();
    for (const s of all<ServerRow>(cx.st.servers)) {
      if (s.host === null && !isServerAlive(s, now)) cx.st.deleteServer.run(s.id);
    }
    const start = processStartTime(process.pid);
    const info = cx.st.insertServer.run(process.pid, start, now, now, controlPath,
      identity?.host ?? null, identity?.leaseTtlMs ?? null,
      JSON.stringify(identity?.radosAddrs ?? []));
    return Number(info.lastInsertRowid);
  });
}

/** Every registered server, running or not (a row outlives a crashed server until the next
 * registerServer, or a host's until it is taken over), in id order. */
export function listServers(cx: CatalogContext): ServerInfo[] {
  const now = cx.now();
  return all<ServerRow>(cx.st.servers).map((s) => infoOf(s, now));
}

function serverRow(cx: CatalogContext, op: string, serverId: number): ServerRow {
  const row = get<ServerRow>(cx.st.server, serverId);
  if (row === undefined) {
    throw new XvdError('ERR_CATALOG_SERVER_UNKNOWN', `${op}: no registered server ${serverId}`);
  }
  return row;
}

export function heartbeat(cx: CatalogContext, serverId: number): void {
  tx(cx, () => {
    serverRow(cx, 'heartbeat', serverId);
    cx.st.heartbeat.run(cx.now(), serverId);
  });
}

/** Records the RADOS clients a server writes through (before it writes through a new one). */
export function setServerAddrs(cx: CatalogContext, serverId: number, addrs: string[]): void {
  tx(cx, () => {
    serverRow(cx, 'addresses', serverId);
    cx.st.setServerAddrs.run(JSON.stringify(addrs), serverId);
  });
}

/** Removes the server, its leases, and the copy-on-write reserves only it held. */
export function unregisterServer(cx: CatalogContext, serverId: number): void {
  tx(cx, () => {
    cx.st.deleteServer.run(serverId);
    releaseIdleReserves(cx, heldVdIds(cx));
  });
}

/** The servers leasing VD `vdId`, in id order. */
export function leaseHolders(cx: CatalogContext, vdId: number): ServerInfo[] {
  const now = cx.now();
  return all<{ server_id: number }>(cx.st.leasesOfVd, vdId)
    .map((l) => get<ServerRow>(cx.st.server, l.server_id))
    .filter((s): s is ServerRow => s !== undefined)
    .map((s) => infoOf(s, now));
}

/**
 * Removes a fenced server's row and leases, if its lease has expired and it has not beaten
 * since `heartbeatAtMs` (what the caller saw before fencing it). True when removed.
 */
export function takeOverServer(cx: CatalogContext, serverId: number, heartbeatAtMs: number,
): boolean {
  return tx(cx, () => {
    const row = get<ServerRow>(cx.st.server, serverId);
    if (row === undefined || row.host === null || isServerAlive(row, cx.now())) return false;
    return cx.st.deleteServerSeen.run(serverId, heartbeatAtMs).changes === 1;
  });
}

function refuseHeld(cx: CatalogContext, serverId: number, vdId: number): void {
  const now = cx.now();
  for (const lease of all<{ server_id: number }>(cx.st.leasesOfVd, vdId)) {
    if (lease.server_id === serverId) continue;
    const other = get<ServerRow>(cx.st.server, lease.server_id);
    if (other === undefined || other.host === null) continue;
    const ageS = ((now - other.heartbeat_at) / 1000).toFixed(1);
    const ttlS = ((other.lease_ttl_ms ?? 0) / 1000).toFixed(1);
    const state = isServerAlive(other, now) ? `its lease is live (last heartbeat ${ageS} s ago, ` +
      `TTL ${ttlS} s)` : `its lease expired ${ageS} s after its last heartbeat and it is not ` +
      'fenced yet';
    throw new XvdError('ERR_LEASE_HELD', `lease: VD ${vdId} is served by host ${other.host} ` +
      `(server ${other.id}): ${state}`);
  }
}

/**
 * Takes or renews the lease at the VD's generation, or at `generation` when given: the one
 * the server has switched to (copy-on-write for the clones made up to it, clones.ts), which
 * may be older than the VD's current one when another clone came since (ERR_CATALOG_INVALID
 * when it is newer, or older than the lease already records).
 */
export function acquireLease(
  cx: CatalogContext, serverId: number, vdId: number, generation?: number,
): Lease {
  return tx(cx, () => {
    const now = cx.now();
    serverRow(cx, 'lease', serverId);
    const vd = liveVdRow(cx, 'lease', vdId, now);
    refuseHeld(cx, serverId, vdId);
    const held = get<{ generation: number }>(cx.st.lease, serverId, vdId)?.generation ?? 1;
    const recorded = generation ?? vd.generation;
    if (!Number.isSafeInteger(recorded) || recorded > vd.generation || recorded < held) {
      invalid(`lease: VD ${vdId}: generation ${recorded} is not between the lease's ${held} `
        + `and the VD's ${vd.generation}`);
    }
    cx.st.heartbeat.run(now, serverId);
    cx.st.upsertLease.run(serverId, vdId, recorded);
    return { serverId, vdId, generation: recorded };
  });
}

/** Drops the lease; the VD's copy-on-write reserve goes back to the free runs with the last. */
export function releaseLease(cx: CatalogContext, serverId: number, vdId: number): void {
  tx(cx, () => {
    cx.st.deleteLease.run(serverId, vdId);
    releaseIdleReserves(cx, heldVdIds(cx));
  });
}
