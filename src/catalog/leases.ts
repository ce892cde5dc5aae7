/**
 * catalog/leases: the servers registered in the catalog and the leases they hold on the VDs they
 * serve (the catalog's part of invariant 2; the server's part is src/serve/catalog-provider.ts).
 *
 * Contract: each mutator is one IMMEDIATE transaction. A server row names its process (pid and
 * start time from /proc); a lease names (server, VD, the VD's generation when taken) and is
 * taken only on a live VD that is not being imported. A lease counts only while its server
 * process lives: liveness is the process itself, not its heartbeat, since a server that is alive
 * but slow (or stopped) may still have writes in flight, so its leases hold until it releases
 * them or dies; once it is dead nothing of it is in flight. The heartbeat is informational.
 * registerServer also removes the rows of servers that are no longer running, and records where
 * the new server answers `xvd status` (its control socket, src/serve/control.ts), which
 * listServers reads back.
 */
import { XvdError } from '../errors';
import { isProcessAlive, processStartTime } from './liveness';
import { all, get, tx, type CatalogContext, type ServerRow } from './statements';
import type { Lease, ServerInfo } from './types';
import { liveVdRow } from './vd-rows';

export function isServerAlive(row: ServerRow): boolean {
  return isProcessAlive(row.pid, row.pid_start_time);
}

/** Leases held by servers whose process runs. */
export function liveLeases(cx: CatalogContext): Lease[] {
  const alive = new Set(all<ServerRow>(cx.st.servers)
    .filter((s) => isServerAlive(s)).map((s) => s.id));
  return all<{ server_id: number; vd_id: number; generation: number }>(cx.st.leases)
    .filter((l) => alive.has(l.server_id))
    .map((l) => ({ serverId: l.server_id, vdId: l.vd_id, generation: l.generation }));
}

export function registerServer(cx: CatalogContext, controlPath: string | null): number {
  return tx(cx, () => {
    const now = cx.now();
    for (const s of all<ServerRow>(cx.st.servers)) {
      if (!isServerAlive(s)) cx.st.deleteServer.run(s.id);
    }
    const start = processStartTime(process.pid);
    const info = cx.st.insertServer.run(process.pid, start, now, now, controlPath);
    return Number(info.lastInsertRowid);
  });
}

/** Every registered server, running or not (a row outlives a crashed server until the next
 * registerServer), in id order. */
export function listServers(cx: CatalogContext): ServerInfo[] {
  return all<ServerRow>(cx.st.servers).map((s) => ({
    id: s.id, pid: s.pid, startedAtMs: s.started_at, heartbeatAtMs: s.heartbeat_at,
    controlPath: s.control_path ?? null, isAlive: isServerAlive(s),
  }));
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

export function unregisterServer(cx: CatalogContext, serverId: number): void {
  tx(cx, () => {
    cx.st.deleteServer.run(serverId);
  });
}

export function acquireLease(cx: CatalogContext, serverId: number, vdId: number): Lease {
  return tx(cx, () => {
    const now = cx.now();
    serverRow(cx, 'lease', serverId);
    const vd = liveVdRow(cx, 'lease', vdId, now);
    cx.st.heartbeat.run(now, serverId);
    cx.st.upsertLease.run(serverId, vdId, vd.generation);
    return { serverId, vdId, generation: vd.generation };
  });
}

export function releaseLease(cx: CatalogContext, serverId: number, vdId: number): void {
  tx(cx, () => {
    cx.st.deleteLease.run(serverId, vdId);
  });
}
