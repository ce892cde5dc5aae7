/**
 * nbd/request-intake: the transmission phase's input side (proto.md "Transmission", "Request
 * message"): a 28-byte header is decoded and validated (validate.ts: decodeRequest, pure, and
 * validateRequest) and
 * dispatched to transmission.ts; a WRITE's payload is received into the Receiver first, or
 * skipped when the request was refused. Each step consumes one frame and says whether it did.
 *
 * Memory: a READ or WRITE the server's budget (budget.ts) cannot take now is parked: reading
 * stops until the budget resumes it, so the connections that hold the most are the ones that
 * wait. A WRITE's length is held from its header until its payload arrived (writeReserveBytes),
 * then as a request in flight until it settled (inflightBytes). A park says so in a `budget-wait`
 * line (log-events.ts) at most once in ten seconds (budget.ts waitReportDue).
 *
 * A request that validation refuses is answered here (an error reply); a WRITE above
 * limits.writeDiscardMax ends the connection (its payload cannot be skipped in bounded time).
 *
 * Counts (request-stats.ts): a refused request by command and errno; an executed one also with
 * its bytes and its service time, from dispatch (its frame whole) to its reply handed on.
 */
import assert from 'node:assert';
import { ProtocolError } from '../errors';
import { LOG_EVENT } from '../log-events';
import { NBD_CMD, NBD_E, REQUEST_LENGTH, nameOf } from './constants';
import type { Connection } from './connection';
import type { Payload } from './framer';
import { PHASE } from './phase';
import { finalizeIfIdle, finishClosing } from './teardown';
import { executeRequest, sendError } from './transmission';
import { type Request, decodeRequest, validateRequest } from './validate';

export function stepRequestHeader(c: Connection): boolean {
  if (c.framer.length < REQUEST_LENGTH) return false;
  const request = decodeRequest(c.framer.take(REQUEST_LENGTH));
  c.counts.requests += 1;
  if (request.type === NBD_CMD.DISC) {
    c.beginClosing('NBD_CMD_DISC');
    return false;
  }
  let errno: number = NBD_E.ESHUTDOWN;
  if (!c.isFenced) {
    const context = c.validateContext; // set at bind; the size may grow (a map replaced)
    context.size = c.export.size;
    errno = validateRequest(request, context);
  }
  if (request.type === NBD_CMD.WRITE && request.length > c.limits.writeDiscardMax) {
    throw new ProtocolError('ERR_NBD_OVERSIZE_WRITE', `NBD_CMD_WRITE: payload too large: ` +
      `${request.length} > ${c.limits.writeDiscardMax}`);
  }
  if (errno === NBD_E.OK && mustPark(c, request)) return false;
  proceed(c, request, errno);
  return true;
}

/** A decoded request goes on: a WRITE starts receiving its payload, others run. */
function proceed(c: Connection, request: Request, errno: number): void {
  if (request.type === NBD_CMD.WRITE) acceptWrite(c, request, errno);
  else if (errno !== NBD_E.OK) refuse(c, request, errno);
  else dispatch(c, request, null);
}

/** Parks a READ or WRITE the budget cannot take now (see the header); true when it did. */
function mustPark(c: Connection, request: Request): boolean {
  const isCounted = request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE;
  if (!isCounted || c.budget.canTake(c.heldBytes, request.length)) return false;
  c.parked = request;
  c.budget.park(c.onBudget);
  const parked = c.budget.waitReportDue(Date.now());
  if (parked !== null) {
    c.log.warn({ event: LOG_EVENT.budgetWait, command: nameOf(NBD_CMD, request.type),
      length: request.length, heldBytes: c.heldBytes, budgetHeldBytes: c.budget.heldBytes,
      budgetMaxBytes: c.budget.maxBytes, parked }, 'memory budget full: requests wait');
  }
  return true;
}

/** The budget's waiter (Connection.onBudget): resumes the parked request once it may run. */
export function resumeParked(c: Connection): boolean {
  const request = c.parked;
  if (request === null || c.phase !== PHASE.REQUEST_HEADER) return true; // nothing waits
  if (!c.budget.canResume(c.heldBytes, request.length)) return false;
  c.parked = null;
  try {
    proceed(c, request, NBD_E.OK);
  } catch (error) {
    c.fault(error, 'budget resume');
  }
  setImmediate(c.pumpLater);
  return true;
}

/** A parked request is dropped (the connection is closing): the budget forgets it. */
export function unpark(c: Connection): void {
  if (c.parked === null) return;
  c.parked = null;
  c.budget.unpark(c.onBudget);
}

function acceptWrite(c: Connection, request: Request, errno: number): void {
  c.pending = request;
  if (errno === NBD_E.OK) {
    c.writeReserveBytes = request.length;
    c.syncBudget();
    c.framer.expect(request.length);
    c.setPhase(PHASE.WRITE_PAYLOAD);
  } else {
    c.pendingErrno = errno;
    c.discardRemaining = request.length;
    c.setPhase(PHASE.WRITE_DISCARD);
  }
}

export function stepWritePayload(c: Connection): boolean {
  const request = c.pending;
  assert(request !== null);
  if (c.framer.length < request.length) return false;
  const payload = c.framer.takePayload(request.length);
  c.framer.expect(0);
  c.pending = null;
  c.writeReserveBytes = 0; // held from here as a request in flight (dispatch)
  c.setPhase(PHASE.REQUEST_HEADER);
  dispatch(c, request, payload);
  return true;
}

export function stepWriteDiscard(c: Connection): boolean {
  const request = c.pending;
  assert(request !== null);
  c.discardRemaining -= c.framer.skip(c.discardRemaining);
  if (c.discardRemaining > 0) return false;
  c.pending = null;
  c.setPhase(PHASE.REQUEST_HEADER);
  refuse(c, request, c.pendingErrno);
  return true;
}

function refuse(c: Connection, request: Request, errno: number): void {
  c.counts.errors += 1;
  c.requestCounts.refused(request.type, errno);
  c.log.debug({ command: nameOf(NBD_CMD, request.type), flags: request.flags,
    offset: request.offset, length: request.length, errno }, 'request refused');
  sendError(c, request, errno, 'request refused');
}

/**
 * Runs a request; a WRITE `payload` is released once the request settled: the Export settles
 * a write only after every piece did, so nothing reads it any more.
 */
function dispatch(c: Connection, request: Request, payload: Payload | null): void {
  const cost = request.type === NBD_CMD.READ || request.type === NBD_CMD.WRITE
    ? request.length : 0;
  c.inflight += 1;
  c.inflightBytes += cost;
  c.syncBudget();
  const startMs = performance.now();
  // resolves with the errno replied; never rejects (kept for safety: counted as EIO)
  const settle = (errno: unknown): void => {
    afterRequestSafely(c, request, typeof errno === 'number' ? errno : NBD_E.EIO, startMs, cost,
      payload);
  };
  executeRequest(c, request, payload === null ? null : payload.data).then(settle, settle);
}

function afterRequestSafely(c: Connection, request: Request, errno: number, startMs: number,
  cost: number, payload: Payload | null): void {
  try {
    c.requestCounts.settled(request.type, request.length, errno, startMs);
    if (payload !== null) payload.release();
    afterRequest(c, cost);
  } catch (error) {
    c.fault(error, 'after request');
  }
}

function afterRequest(c: Connection, cost: number): void {
  c.inflight -= 1;
  c.inflightBytes -= cost;
  assert(c.inflight >= 0);
  c.syncBudget();
  if (c.inflight > 0) {
    if (!c.isClosed()) c.pump();
    return;
  }
  const waiters = c.idleWaiters;
  c.idleWaiters = [];
  for (const waiter of waiters) waiter();
  if (c.phase === PHASE.CLOSING) finishClosing(c);
  else if (c.isClosed()) finalizeIfIdle(c);
  else c.pump();
}
