/**
 * nbd/executors: at the start of transmission, which code serves this connection's requests,
 * decided once: the JS path (transmission.ts) with replies on the stream; the JS path with
 * large READ replies on a sender thread (SenderChannel); or a data-path thread that reads the
 * socket, serves plain READs and WRITEs itself and forwards every other request's bytes here
 * (datapath.ts, DatapathChannel).
 *
 * The data-path thread takes the socket only when the connection reads it into arenas (so
 * pausing it stops libuv reading), without TLS, unfenced, with an export whose backings all
 * have descriptors, and once the handshake's last reply went out; bytes already received go to
 * the thread first. If the thread cannot start, the JS path goes on, unless it had taken
 * bytes (then the connection ends: they are gone with the receiver).
 */
import { LIMITS } from '../limits';
import type { Connection } from './connection';
import type { ConnectionStats } from './connection-options';
import { Datapath, isDatapathWanted } from './datapath';
import { Framer } from './framer';
import { PHASE } from './phase';
import { finalizeIfIdle, finishClosing } from './teardown';
import { guarded } from './reply-channel';
import { DatapathChannel } from './reply-datapath';
import { SenderChannel } from './reply-sender-channel';
import { senderModeOf } from './reply-sender';

/** What the server's options say about executors (the routes' inputs). */
export interface ExecutorSettings {
  /** large READ replies on unix sockets by sendfile(2) (server option; reply-sender.ts) */
  isSendfile: boolean;
}

export function startTransmission(c: Connection): void {
  const socket = c.socket;
  const isOwnSocket = socket !== null && c.output === socket && !c.isTls;
  const mode = isOwnSocket ? senderModeOf(socket, c.executors.isSendfile) : null;
  if (mode !== null) {
    c.channel = new SenderChannel(c.stream, socket!, mode, c, c.counts,
      2 * c.limits.inflightMax);
    return;
  }
  startDatapath(c);
}

function startDatapath(c: Connection): void {
  const socket = c.socket;
  if (!c.isSelfReading || socket === null || c.output !== socket || c.isTls ||
    c.isFenced || !isDatapathWanted(socket, c.executors.isSendfile) ||
    c.limits.writeDiscardMax < LIMITS.nbdPayloadMax) { // the thread serves up to that
    return;
  }
  const exp = c.export;
  const map = exp.datapathMap?.() ?? null;
  if (map === null) return;
  // the handshake's last reply goes out before the thread writes anything
  c.channel.uncork();
  if (c.output.writableLength > 0) return;
  const buffered = c.framer.length;
  const initial = buffered > 0 ? Buffer.from(c.framer.take(buffered)) : null;
  const datapath = Datapath.start(socket, {
    ...map, isStructured: c.isStructured, blockSizeMin: c.validateContext.blockSizeMin,
    isTcp: typeof socket.remotePort === 'number', spinMicros: c.limits.busyPollMicros,
  }, initial, {
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
  if (datapath === null) {
    if (initial === null) return; // the JS path goes on as it was
    // the bytes it had are gone with the receiver: the stream cannot be resumed here
    c.closeHard(new Error('data path: no thread'), 'no data-path thread');
    return;
  }
  c.input.pause();
  c.framer.dispose();
  c.framer = new Framer();
  c.datapath = datapath;
  c.channel = new DatapathChannel(datapath, c, c.limits.inflightBytesMax);
  c.unsubscribeMap = exp.onMapReplaced?.(() => datapath.handOff()) ?? null;
}

/** The thread was joined: nothing of it touches the export's descriptors any more. */
function onDatapathStopped(c: Connection): void {
  if (c.unsubscribeMap !== null) c.unsubscribeMap();
  c.unsubscribeMap = null;
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
 * (datapath.c spin()): those that found a request and those that found none. */
export function statsOf(c: Connection): ConnectionStats {
  if (c.datapath === null) {
    return { ...c.counts, threadRequests: 0, busyPollHits: 0, busyPollMisses: 0 };
  }
  const [requests, bytesRead, bytesWritten, hits, misses] = c.datapath.stats();
  return { requests: c.counts.requests + requests!, errors: c.counts.errors,
    faults: c.counts.faults,
    bytesRead: c.counts.bytesRead + bytesRead!,
    bytesWritten: c.counts.bytesWritten + bytesWritten!, threadRequests: requests!,
    busyPollHits: hits!, busyPollMisses: misses! };
}
