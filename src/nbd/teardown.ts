/**
 * nbd/teardown: how a connection ends (proto.md "Terminating the transmission phase"), and
 * fencing (invariant 2: no I/O reaches an extent after the catalog handed it on).
 *
 * Graceful (DISC, the client's FIN, NBD_OPT_ABORT, server shutdown): closing stops reading,
 * lets requests in flight finish and their replies go out (a sender thread's queue, a
 * data-path thread's queue: it is stopped gracefully), then ends the stream; a client that
 * never takes the last replies loses the stream after limits.stallTimeoutMs. Hard (protocol
 * violation, stream error, a fault): replies queued in this turn go to the kernel, then the
 * streams are destroyed at once; requests in flight still finish against the Export and their
 * replies are dropped. Either way the export handle is released, and the server forgets the
 * connection, only once nothing is in flight, no option handler runs and a data-path thread
 * was joined (finalized).
 *
 * fence(): every later request fails with ESHUTDOWN; resolves when none is in flight (a
 * data-path thread stops its I/O first). A READ queued on the sender thread for a client that
 * takes no bytes does not hold the fence longer than LIMITS.nbdFenceSenderWaitMs.
 *
 * Log (log-events.ts): a fence gives each connection one `connection-fenced` line; a client
 * ended for stalling (checkStall, or last replies never taken) one `budget-stall` line before
 * its `connection closed`.
 */
import type { Socket } from 'node:net';
import { ProtocolError } from '../errors';
import { LIMITS } from '../limits';
import { LOG_EVENT } from '../log-events';
import type { Connection } from './connection';
import { PHASE, closedPhaseOf } from './phase';
import { unpark } from './request-intake';

/** Graceful: stop reading, let requests in flight finish, then end the stream. */
export function beginClosing(c: Connection, reason: string): void {
  if (c.phase === PHASE.CLOSING || c.isClosed()) return;
  c.log.debug({ reason, inflight: c.inflight }, 'closing');
  c.closeReason = reason;
  c.setPhase(PHASE.CLOSING);
  unpark(c); // never acknowledged: dropped with the connection
  c.input.pause();
  c.datapath?.setPaused(true);
  if (c.inflight === 0) finishClosing(c);
}

export function finishClosing(c: Connection): void {
  if (c.isClosed()) return;
  if (c.channel.pendingOnThread > 0) return; // onThreadSettled calls again
  if (c.datapath !== null && !c.datapath.isStopped) {
    c.datapath.stop(false); // sends what is queued, then onDatapathStopped calls again
    return;
  }
  c.channel.uncork();
  const output = c.output;
  const input = c.input;
  markClosed(c, null, c.closeReason);
  // a client that never takes the last replies must not keep the stream for ever
  const lingerTimer = setTimeout(() => {
    c.log.warn({ event: LOG_EVENT.budgetStall, reason: 'last replies not taken',
      stallTimeoutMs: c.limits.stallTimeoutMs }, 'client stalled: connection ended');
    input.destroy();
    output.destroy();
  }, c.limits.stallTimeoutMs);
  lingerTimer.unref();
  output.end(() => {
    clearTimeout(lingerTimer);
    if ((input as object) !== output || typeof (input as Socket).destroySoon !== 'function') return;
    (input as Socket).destroySoon();
  });
}

/**
 * A bug while serving this connection, not the client's doing: it is logged at error level
 * with its stack, counted (stats.faults, the server's connectionFaults), and ends this
 * connection only. The process and every other connection go on.
 */
export function fault(c: Connection, error: unknown, where: string): void {
  c.counts.faults += 1;
  c.log.error({ err: error, where }, 'internal error: ending the connection');
  try {
    closeHard(c, error, `internal error in ${where}`);
  } catch (inner) {
    // closing itself failed: at least stop all traffic of this connection
    c.log.error({ err: inner }, 'internal error while closing');
    if (!c.isClosed()) c.phase = closedPhaseOf(c.phase);
    c.channel.close();
    c.input.destroy();
    c.output.destroy();
  }
}

/** Hard close: destroy the streams now. */
export function closeHard(c: Connection, error: unknown, reason: string): void {
  if (c.isClosed()) return;
  // replies queued in this turn (an error reply just before a fault) go to the kernel first
  c.channel.uncork();
  markClosed(c, error, reason);
  c.input.destroy();
  if (!c.isDuplex) c.output.destroy();
}

function markClosed(c: Connection, error: unknown, reason: string): void {
  c.setPhase(closedPhaseOf(c.phase));
  unpark(c);
  // graceful: the sender's queue is empty; hard: what is queued completes with ECANCELED
  c.channel.close();
  // graceful: stopped already; hard: stops at once (onDatapathStopped finalizes)
  if (c.datapath !== null) c.datapath.stop(true);
  if (c.handshakeTimer !== null) clearTimeout(c.handshakeTimer);
  c.handshakeTimer = null;
  c.detachStreams();
  c.input.on('error', ignoreError);
  c.output.on('error', ignoreError);
  c.framer.dispose();
  const fields = { reason, inflight: c.inflight, ...c.stats };
  if (error !== null && error !== undefined) {
    c.log.warn({ ...fields, err: error }, 'connection closed');
  } else {
    c.log.info(fields, 'connection closed');
  }
  finalizeIfIdle(c);
}

/** Once closed and idle: release the export handle and leave the server's registry. */
export function finalizeIfIdle(c: Connection): void {
  if ((c.phase !== PHASE.CLOSED && c.phase !== PHASE.FINALIZED) || c.inflight > 0) return;
  if (c.datapath !== null && !c.datapath.isStopped) return; // it may still do I/O
  const handle = c.handle; // a handler orphaned by the close may have bound one since
  c.handle = null;
  if (handle !== null) handle.release();
  if (c.phase === PHASE.FINALIZED) return;
  c.setPhase(PHASE.FINALIZED);
  // what is still counted is queued on a destroyed stream: it goes with it
  if (c.budgetBytes !== 0) c.budget.adjust(-c.budgetBytes);
  c.budgetBytes = 0;
  c.hooks.onClosed(c);
}

/** Every later request fails with ESHUTDOWN; resolves when none is in flight. */
export function fence(c: Connection): Promise<void> {
  if (!c.isFenced) c.log.info({ event: LOG_EVENT.connectionFenced }, 'connection fenced');
  c.isFenced = true;
  if (c.datapath !== null) {
    // its I/O ends first; the requests it forwards from then on are refused here
    return c.datapath.fence().then(() => c.whenIdle());
  }
  const idle = c.whenIdle();
  if (!c.channel.canSendPlanned || c.inflight === 0) return idle; // no sender thread
  // a READ on the sender stays in flight until the client takes its bytes; one that does not
  // read must not hold the fence (and with it the catalog's reconcile) for ever
  const timer = setTimeout(() => {
    if (c.inflight > 0 && c.channel.pendingOnThread > 0) {
      closeHard(c, null, 'fenced while the client was not taking replies');
    }
  }, LIMITS.nbdFenceSenderWaitMs);
  return idle.finally(() => clearTimeout(timer));
}

/**
 * The server's stall sweep (server.ts): a connection that holds at least
 * LIMITS.nbdStallHeldMin bytes while its client neither sends nor takes bytes for
 * limits.stallTimeoutMs is ended, and what it held comes back to the budget (budget.ts).
 * True when it ended the connection.
 */
export function checkStall(c: Connection, now: number): boolean {
  if (c.isClosed()) return false;
  if (c.datapath !== null) {
    const [, bytesRead, bytesWritten] = c.datapath.stats();
    const mark = bytesRead! + bytesWritten!;
    if (mark !== c.progressMark) c.progressAt = now;
    c.progressMark = mark;
  }
  const held = c.heldBytes;
  if (held < LIMITS.nbdStallHeldMin) {
    c.progressAt = now; // the deadline counts from when it began to hold memory
    return false;
  }
  const idleMs = now - c.progressAt;
  if (idleMs < c.limits.stallTimeoutMs) return false;
  const error = new ProtocolError('ERR_NBD_STALLED', `transmission: the client took no ` +
    `bytes for ${idleMs} ms while the server held ${held} bytes for it`);
  c.log.warn({ event: LOG_EVENT.budgetStall, reason: 'no progress while holding memory',
    heldBytes: held, idleMs, err: error }, 'client stalled: connection ended');
  closeHard(c, null, 'client stalled');
  return true;
}

/**
 * The stream a thread owns broke (errno name `code`; the sender's failed job, the data-path
 * thread's failed send or recv): the connection ends. A client that left is routine (info);
 * anything else, such as a read error after a reply's first 4 MiB went out on the sender, is
 * logged as an error.
 */
export function streamBroken(c: Connection, code: string, error?: Error): void {
  if (c.isClosed()) return;
  if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ECANCELED') {
    closeHard(c, null, `client gone (${code})`);
    return;
  }
  c.log.error(error === undefined ? { code } : { err: error },
    'the stream broke: ending the connection');
  closeHard(c, null, `stream broken (${code})`);
}

function ignoreError(): void { /* after close, late stream errors are expected */ }
