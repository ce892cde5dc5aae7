/**
 * nbd/executors: at the start of transmission, routesOf (dataplane/routes.ts) decides once
 * which code serves this connection's requests, the decision is logged with its reason, and
 * the executors it chose start: a sender thread behind the stream (SenderChannel), or a
 * data-path thread that takes the socket (dataplane/datapath.ts, DatapathChannel); otherwise
 * the JS path with replies on the stream goes on as in the handshake.
 *
 * The data-path thread starts once the handshake's last reply went out, with the bytes already
 * received; if it cannot (no descriptors now, a reply still queued, no thread), the JS path
 * goes on, unless the thread had taken bytes (then the connection ends: they are gone).
 */
import assert from 'node:assert';
import { Datapath } from '../dataplane/datapath';
import { type RouteSettings, type Routes, routesOf } from '../dataplane/routes';
import { LIMITS } from '../limits';
import * as sys from '../sys/index';
import type { Connection } from './connection';
import type { ConnectionStats } from './connection-options';
import { Framer } from './framer';
import { PHASE } from './phase';
import { finalizeIfIdle, finishClosing } from './teardown';
import { guarded } from './reply-channel';
import { DatapathChannel } from './reply-datapath';
import { SenderChannel } from './reply-sender-channel';
import { socketFdOf } from './user-buffer-socket';

/** The server's settings that routesOf weighs (dataplane/routes.ts). */
export type ExecutorSettings = RouteSettings;
export type { Routes } from '../dataplane/routes';

/** The routes for `c` now (its export bound, transmission starting). */
export function routesFor(c: Connection): Routes {
  const socket = c.socket;
  const isOwnSocket = socket !== null && c.output === socket && socketFdOf(socket) !== null;
  return routesOf({
    ...c.executors,
    isNative: sys.isNative,
    hasSocketFd: isOwnSocket,
    isTcp: socket !== null && typeof socket.remotePort === 'number',
    isTls: c.isTls,
    isArenaReceive: c.isSelfReading,
    isFenced: c.isFenced,
    hasDataPlane: c.dataPlane !== undefined,
    isWriteMaxFull: c.limits.writeDiscardMax >= LIMITS.nbdPayloadMax,
  });
}

/** Asks routesOf once, logs its answer, and starts the executors it chose. */
export function startTransmission(c: Connection): void {
  c.dataPlane = c.export.dataPlane;
  const routes = routesFor(c);
  c.routes = routes;
  c.log.info({ routes }, `routes: ${routes.reason}`);
  if (routes.senderMode !== null) {
    const socketFd = c.socket === null ? null : socketFdOf(c.socket);
    assert(socketFd !== null); // routesOf: a socket of its own
    c.channel = new SenderChannel(c.stream, socketFd, routes.senderMode, c, c.counts,
      2 * c.limits.inflightMax);
  } else if (routes.receive === 'datapath') {
    startDatapath(c);
  }
}

function startDatapath(c: Connection): void {
  const socket = c.socket;
  const socketFd = socket === null ? null : socketFdOf(socket);
  const source = c.dataPlane;
  assert(socket !== null && socketFd !== null && source !== undefined); // routesOf checked
  // the handshake's last reply goes out before the thread writes anything
  c.channel.uncork();
  if (c.output.writableLength > 0) {
    c.log.info('data path: a reply is still queued: JS serves every request');
    return;
  }
  let hadInitial = false;
  const started = Datapath.start(socketFd, source, {
    isStructured: c.isStructured, blockSizeMin: c.validateContext.blockSizeMin,
    isTcp: typeof socket.remotePort === 'number', spinMicros: c.limits.busyPollMicros,
    hasReader: c.routes?.reader === 'always' ? 'always' : c.routes?.reader === 'auto',
  }, () => {
    const buffered = c.framer.length;
    hadInitial = buffered > 0;
    return hadInitial ? Buffer.from(c.framer.take(buffered)) : null;
  }, {
    onForward: guarded(c, 'onDatapathForward', (bytes: Buffer): void => {
      if (c.isClosed()) return;
      (c.framer as Framer).push(bytes);
      c.pump();
    }),
    onEof: c.onEnd,
    onError: (code) => c.onStreamBroken(code),
    onStopped: guarded(c, 'onDatapathStopped', () => onDatapathStopped(c)),
    onStartFailed: (error) => c.log.error({ err: error }, 'data path: no thread'),
  });
  if (started === 'no-map') {
    c.log.info('data path: the export has no descriptors now: JS serves every request');
    return;
  }
  if (started === 'no-thread') {
    if (!hadInitial) return; // the JS path goes on as it was
    // the bytes it had are gone with the receiver: the stream cannot be resumed here
    c.closeHard(new Error('data path: no thread'), 'no data-path thread');
    return;
  }
  c.input.pause();
  c.framer.dispose();
  c.framer = new Framer();
  c.datapath = started;
  c.channel = new DatapathChannel(started, c, c.limits.inflightBytesMax);
}

/** The thread was joined: nothing of it touches the export's descriptors any more. */
function onDatapathStopped(c: Connection): void {
  if (c.phase === PHASE.CLOSING) {
    // stopped when asked (nothing in flight) or on its own (a failure: an error came first)
    if (c.inflight === 0) finishClosing(c);
    else c.closeHard(null, 'data path stopped');
  } else if (c.isClosed()) {
    finalizeIfIdle(c);
  } else {
    c.closeHard(null, 'data path stopped'); // on its own: its error was reported first
  }
}

/** Requests, refusals and bytes so far, the data-path thread's included, and its busy-polls
 * (native/src/dp-loop.c spin()): those that found a request and those that found none. */
export function statsOf(c: Connection): ConnectionStats {
  if (c.datapath === null) {
    return { ...c.counts, threadRequests: 0, readerRequests: 0, busyPollHits: 0,
      busyPollMisses: 0 };
  }
  const stats = c.datapath.stats();
  const [requests, bytesRead, bytesWritten, hits, misses] = stats;
  return { requests: c.counts.requests + requests!, errors: c.counts.errors,
    faults: c.counts.faults,
    bytesRead: c.counts.bytesRead + bytesRead!,
    bytesWritten: c.counts.bytesWritten + bytesWritten!, threadRequests: requests!,
    readerRequests: stats[11] ?? 0, busyPollHits: hits!, busyPollMisses: misses! };
}
