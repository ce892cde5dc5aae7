/**
 * dataplane/routes: which code serves a connection's requests, decided once, at the start of
 * transmission (nbd/executors.ts asks), by one pure function. Its inputs are the server's
 * settings (serve --sendfile; XVD_DATAPATH, XVD_SENDER, parsed by src/cli/route-env.ts) and
 * what the connection is (socket or stream pair, TCP or unix, TLS, how it reads: receiveOf,
 * decided at accept; fenced; what the export offers). The answer names an executor for each
 * kind of work, and why.
 *
 * The executors:
 * - js: nbd/transmission.ts on the JS thread; replies on the stream (nbd/reply-stream.ts).
 * - sender: the JS path, but READs of LIMITS.nbdSenderReadMin or more that the export can send
 *   from descriptors without holes a sparse reply would describe go out on a sender thread
 *   (dataplane/reply-sender.ts); while it has jobs queued every reply goes through it.
 * - datapath: a data-path thread (dataplane/datapath.ts) reads the socket, serves plain READs and
 *   WRITEs itself; every other request (and any it cannot serve: flags, errors, a fence, a map
 *   replaced) is forwarded to the JS path; JS replies are submitted to the thread. Its READs of
 *   LIMITS.nbdDatapathReaderMin or more on a unix socket are read by a reader thread beside it
 *   while a CPU is free, so the read of one overlaps the send of the one before
 *   (native/src/dp-reader.c); XVD_DATAPATH=thread leaves the reader out, =reader-always takes
 *   it on TCP too and ignores the CPU gate. On TCP the thread reads inline: since its large
 *   replies go out corked (LIMITS.nbdDatapathCorkMin), 1 MiB reads at qd8 measured 1.3x faster
 *   without the reader than with it, whose hand-offs then cost more than the overlap saves.
 *
 * The sender comes first: a sender mode means no data-path thread (it needs the JS path's
 * READs). The mode: XVD_SENDER off, sendfile, copy, or on (sendfile on unix sockets, copy on
 * TCP); unset or anything else ("auto"): sendfile on unix sockets when serve --sendfile asked,
 * else none. The data-path thread needs, in this order: the native addon, XVD_DATAPATH not
 * off, no TLS, a socket of its own, a socket read into arenas (pausing it stops libuv
 * reading), an unfenced export, an export with a data plane, and a WRITE limit at least
 * LIMITS.nbdPayloadMax (the thread frames WRITEs up to that). Even when chosen it can fail to
 * start (the export has no descriptors now, a reply is still queued, no thread): then the
 * connection stays on the js routes, and says so in its log.
 */
import type { SenderMode } from '../sys/index';

/** XVD_DATAPATH: 'off' keeps every request on the JS path; 'auto' (or 'reader'): the thread
 * when it can, on a unix socket with its reader thread while a CPU is free; 'thread': the thread
 * without its reader; 'reader-always': with its reader for every large READ, TCP or unix, free
 * CPU or not (tests). */
export type DatapathSetting = 'auto' | 'off' | 'thread' | 'reader' | 'reader-always';
/** XVD_SENDER: a sender mode, 'on' (by transport), 'off', or 'auto' (serve --sendfile). */
export type SenderSetting = 'auto' | 'off' | 'sendfile' | 'copy' | 'on';
/** XVD_NBD_RECEIVE: how sockets are read, into arenas (default) or through stream chunks. */
export type ReceiveSetting = 'arena' | 'stream';

/** The server's side of the inputs (NbdServerOptions). */
export interface RouteSettings {
  datapath: DatapathSetting;
  sender: SenderSetting;
  /** serve --sendfile: READ replies on unix sockets by sendfile(2) */
  isSendfile: boolean;
}

export const ROUTE_SETTINGS_DEFAULT: Readonly<RouteSettings> = {
  datapath: 'auto', sender: 'auto', isSendfile: false,
};

export interface RouteInputs extends RouteSettings {
  /** the native addon is loaded (sys.isNative) */
  isNative: boolean;
  /** the connection writes its own socket, which has a descriptor (not a stream pair) */
  hasSocketFd: boolean;
  /** that socket is TCP (else unix) */
  isTcp: boolean;
  /** the connection runs over TLS */
  isTls: boolean;
  /** the socket is read into arenas (else stream chunks; always so with TLS) */
  isArenaReceive: boolean;
  /** the export was fenced while the connection negotiated */
  isFenced: boolean;
  /** the export offers a data plane (engine/export.ts Export.dataPlane) */
  hasDataPlane: boolean;
  /** limits.writeDiscardMax >= LIMITS.nbdPayloadMax */
  isWriteMaxFull: boolean;
}

export interface Routes {
  /** who reads the socket */
  receive: 'stream' | 'arena' | 'datapath';
  /** plain READs */
  read: 'js' | 'sender' | 'datapath';
  /** plain WRITEs */
  write: 'js' | 'datapath';
  /** every other request: always the JS path */
  other: 'js';
  /** who writes JS replies to the socket */
  replies: 'stream' | 'sender' | 'datapath';
  /** the sender thread's mode when `read` is 'sender' */
  senderMode: SenderMode | null;
  /** when `read` is 'datapath': whether its reader thread takes large READs ('auto': while a
   * CPU is free), or null (never) */
  reader: 'auto' | 'always' | null;
  /** why: what chose the sender or the thread, or the first thing that kept the thread off */
  reason: string;
}

/**
 * How an accepted socket is read, decided at accept, before the handshake (so before
 * routesOf): into arenas, unless the setting says stream chunks or the server offers TLS
 * (STARTTLS swaps the stream under the connection). Adopting a socket for arenas can still
 * fail (nbd/user-buffer-socket.ts): then it is read through stream chunks.
 */
export function receiveOf(setting: ReceiveSetting, hasTls: boolean): ReceiveSetting {
  return setting === 'arena' && !hasTls ? 'arena' : 'stream';
}

/** The sender thread's mode for these inputs, or null (see the header). */
export function senderModeOf(inputs: RouteInputs): SenderMode | null {
  if (!inputs.isNative || !inputs.hasSocketFd || inputs.isTls) return null;
  switch (inputs.sender) {
    case 'off':
      return null;
    case 'sendfile':
      return 'sendfile';
    case 'copy':
      return 'copy';
    case 'on':
      return inputs.isTcp ? 'copy' : 'sendfile';
    case 'auto':
      return inputs.isSendfile && !inputs.isTcp ? 'sendfile' : null;
  }
}

/** The first condition that keeps the data-path thread off, or null when it may run. */
function datapathRefusalOf(inputs: RouteInputs): string | null {
  if (!inputs.isNative) return 'no native addon';
  if (inputs.datapath === 'off') return 'XVD_DATAPATH=off';
  if (inputs.isTls) return 'TLS';
  if (!inputs.hasSocketFd) return 'not a socket of its own';
  if (!inputs.isArenaReceive) return 'stream receive';
  if (inputs.isFenced) return 'fenced';
  if (!inputs.hasDataPlane) return 'export without a data plane';
  if (!inputs.isWriteMaxFull) return 'WRITE limit below the data path\'s';
  return null;
}

/** Which executor serves what on a connection with these inputs (see the header). */
export function routesOf(inputs: RouteInputs): Routes {
  const receive = inputs.isArenaReceive ? 'arena' : 'stream';
  const senderMode = senderModeOf(inputs);
  if (senderMode !== null) {
    const reason = inputs.sender === 'auto' ? 'serve --sendfile on a unix socket'
      : `XVD_SENDER=${inputs.sender}`;
    return { receive, read: 'sender', write: 'js', other: 'js', replies: 'sender', senderMode,
      reader: null, reason };
  }
  const refusal = datapathRefusalOf(inputs);
  if (refusal === null) {
    const reader = inputs.datapath === 'reader-always' ? 'always'
      : inputs.datapath === 'thread' || inputs.isTcp ? null : 'auto';
    return { receive: 'datapath', read: 'datapath', write: 'datapath', other: 'js',
      replies: 'datapath', senderMode: null, reader, reason: 'data-path thread' };
  }
  return { receive, read: 'js', write: 'js', other: 'js', replies: 'stream', senderMode: null,
    reader: null, reason: refusal };
}
