/**
 * nbd/phase: every state a connection is in, and the moves between them (proto.md "Protocol
 * phases"), written down as data. connection.ts moves only through nextPhase(), which asserts
 * that the table allows the move; test/unit/phase.test.ts walks the table.
 *
 * Handshake: client-flags → option-header → option-payload → option-busy (a handler runs; the
 * socket is paused) → option-header again, tls-handshake (STARTTLS) or request-header.
 * Transmission: request-header → write-payload (a WRITE's data arrives) or write-discard (a
 * refused WRITE's data is skipped) → request-header.
 * Ending: closing (graceful: no more reading; requests in flight finish, then the stream ends),
 * then closed (streams gone; requests in flight, a data-path thread may still be finishing).
 * A hard close goes to closed from any live phase, or to option-orphaned when an option handler
 * is still running (it may still bind an export: its handle is released when it settles, and
 * the connection moves on to closed). finalized: nothing in flight, the export handle released,
 * the connection has left the server's registry; nothing follows it.
 *
 * State that is not the connection's own lives with its owner: corking and "waiting for drain"
 * in the reply channel (reply-channel.ts), the sender thread's queue in its channel, a request
 * waiting for the memory budget in the request intake (request-intake.ts).
 */
import assert from 'node:assert';

export const PHASE = {
  CLIENT_FLAGS: 'client-flags',
  OPTION_HEADER: 'option-header',
  OPTION_PAYLOAD: 'option-payload',
  OPTION_BUSY: 'option-busy',
  TLS_HANDSHAKE: 'tls-handshake',
  REQUEST_HEADER: 'request-header',
  WRITE_PAYLOAD: 'write-payload',
  WRITE_DISCARD: 'write-discard',
  CLOSING: 'closing',
  OPTION_ORPHANED: 'option-orphaned',
  CLOSED: 'closed',
  FINALIZED: 'finalized',
} as const;
export type Phase = (typeof PHASE)[keyof typeof PHASE];

/** The phase every connection starts in (after the server sent its greeting). */
export const PHASE_INITIAL: Phase = PHASE.CLIENT_FLAGS;

/** Allowed phase transitions. */
export const PHASE_TRANSITIONS: Readonly<Record<Phase, readonly Phase[]>> = {
  'client-flags': ['option-header', 'closing', 'closed'],
  'option-header': ['option-payload', 'closing', 'closed'],
  'option-payload': ['option-busy', 'closing', 'closed'],
  'option-busy': ['option-header', 'request-header', 'tls-handshake', 'closing', 'closed',
    'option-orphaned'],
  'tls-handshake': ['option-header', 'closing', 'closed'],
  'request-header': ['write-payload', 'write-discard', 'closing', 'closed'],
  'write-payload': ['request-header', 'closing', 'closed'],
  'write-discard': ['request-header', 'closing', 'closed'],
  closing: ['closed'],
  'option-orphaned': ['closed'],
  closed: ['finalized'],
  finalized: [],
};

/** `to` after checking that the table allows moving there from `from` (a bug otherwise). */
export function nextPhase(from: Phase, to: Phase): Phase {
  assert(PHASE_TRANSITIONS[from].includes(to), `connection: bad phase transition ${from} -> ${to}`);
  return to;
}

/** Where a hard close goes from `from`: closed, or option-orphaned while a handler runs. */
export function closedPhaseOf(from: Phase): Phase {
  return from === PHASE.OPTION_BUSY ? PHASE.OPTION_ORPHANED : PHASE.CLOSED;
}

/** True once the streams are gone (closed, a handler orphaned, or finalized). */
export function isClosedPhase(phase: Phase): boolean {
  return phase === PHASE.CLOSED || phase === PHASE.OPTION_ORPHANED || phase === PHASE.FINALIZED;
}

/** Phases in which no frame is read: a handler or TLS runs, or the connection is ending. */
export function isReadingPhase(phase: Phase): boolean {
  return phase !== PHASE.OPTION_BUSY && phase !== PHASE.TLS_HANDSHAKE &&
    phase !== PHASE.CLOSING && !isClosedPhase(phase);
}
