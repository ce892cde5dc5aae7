/**
 * log-events: the names of the log lines an operator acts on. Each such line carries
 * `event: LOG_EVENT.x`, and each happening is logged once, where it is decided: a fence, a lease
 * taken, released or lost, the takeover of a dead server's rows, a connection or export refused,
 * the memory budget making requests wait or ending a stalled client. The names are stable (the
 * README's "Log events" table lists them with their level and fields, and a test compares the
 * two), so `jq 'select(.event == "fence")'` keeps working across releases. Every other line is
 * for reading, not for matching.
 *
 * Fields: `export` ("DOMAIN/DEVICE"), `domain` (the client's authenticated domain, null without
 * one), `peer` ("HOST:PORT", "[V6]:PORT", "unix" or "stream") where they apply; connection
 * lines have `conn`, `peer` and, once an export is bound, `export` and `domain` bound into their
 * logger, so every line of a connection names them.
 */
import type { Socket } from 'node:net';

export const LOG_EVENT = {
  /** the catalog took an export away (VBD removed, VD deleted or expired, map changed) */
  fence: 'fence',
  /** one connection of a fenced export: its later requests fail with NBD_ESHUTDOWN */
  connectionFenced: 'connection-fenced',
  leaseTaken: 'lease-taken',
  leaseReleased: 'lease-released',
  /** this server's catalog row (and with it every lease) is gone while it runs */
  leaseLost: 'lease-lost',
  /** at start, the rows and leases of a registered server that no longer runs were removed */
  takeover: 'takeover',
  /** a VD this server serves was cloned: its exports now copy shared extents on first write */
  cowSwitch: 'cow-switch',
  /** over --max-connections, or while shutting down */
  connectionRefused: 'connection-refused',
  /** no TLS where --tls require asks for it, or a TLS handshake that failed */
  tlsRefused: 'tls-refused',
  /** NBD_OPT_GO, INFO or EXPORT_NAME for an export that does not exist or is not the client's */
  exportRefused: 'export-refused',
  /** the memory budget is full: requests wait (logged at most once per budgetWaitLogMs) */
  budgetWait: 'budget-wait',
  /** a connection holding memory whose client took and sent nothing for the stall timeout */
  budgetStall: 'budget-stall',
} as const;

export type LogEvent = (typeof LOG_EVENT)[keyof typeof LOG_EVENT];

/** How a connection's peer is named in log lines (and in `xvd status`). */
export function peerOf(socket: Socket | null): string {
  if (socket === null) return 'stream';
  const address = socket.remoteAddress;
  if (address === undefined) return 'unix';
  const host = address.includes(':') ? `[${address}]` : address;
  return `${host}:${socket.remotePort ?? 0}`;
}
