/**
 * nbd/handshake: phase 1 (proto.md "Newstyle negotiation", "Option haggling"): the client's
 * flags, then option framing (IHAVEOPT header, bounded payload) and the handler of each option
 * (options/index.ts, one at a time: the socket is paused while it runs), then what its outcome
 * asks for: another option, transmission, a polite or hard close, or STARTTLS.
 *
 * Before a handler runs: a client that is not fixed-newstyle may only send EXPORT_NAME; a
 * server shutting down answers ERR_SHUTDOWN; with TLS required, every option but STARTTLS and
 * ABORT answers ERR_TLS_REQD until TLS is up (EXPORT_NAME, which cannot be refused, disconnects).
 * STARTTLS discards every plaintext byte buffered after it (the CVE class of injected options),
 * swaps the socket for the TLS one and forgets structured replies and meta contexts.
 * A handler that throws a peer violation or an operating failure ends the session; a bug is a
 * fault (connection.ts fault()).
 */
import assert from 'node:assert';
import { isBug, ProtocolError } from '../errors';
import { LOG_EVENT } from '../log-events';
import {
  CLIENT_FLAGS_LENGTH, IHAVEOPT_HIGH, IHAVEOPT_LOW, NBD_FLAG_C, NBD_OPT, NBD_REP,
  OPTION_HEADER_LENGTH, nameOf,
} from './constants';
import type { Connection } from './connection';
import { type OptionOutcome, optionHandlerOf } from './options/index';
import { PHASE } from './phase';
import { startTransmission } from './executors';
import { finalizeIfIdle } from './teardown';
import type { ExportHandle } from './provider';
import { StreamChannel } from './reply-stream';

export function stepClientFlags(c: Connection): boolean {
  if (c.framer.length < CLIENT_FLAGS_LENGTH) return false;
  const flags = c.framer.take(CLIENT_FLAGS_LENGTH).readUInt32BE(0);
  const known = NBD_FLAG_C.FIXED_NEWSTYLE | NBD_FLAG_C.NO_ZEROES;
  if ((flags & ~known) !== 0) {
    throw new ProtocolError('ERR_NBD_CLIENT_FLAGS',
      `handshake: unknown client flags: 0x${flags.toString(16)}`);
  }
  c.isFixedNewstyle = (flags & NBD_FLAG_C.FIXED_NEWSTYLE) !== 0;
  c.noZeroes = (flags & NBD_FLAG_C.NO_ZEROES) !== 0;
  c.setPhase(PHASE.OPTION_HEADER);
  return true;
}

export function stepOptionHeader(c: Connection): boolean {
  if (c.framer.length < OPTION_HEADER_LENGTH) return false;
  const header = c.framer.take(OPTION_HEADER_LENGTH);
  if (header.readUInt32BE(0) !== IHAVEOPT_HIGH || header.readUInt32BE(4) !== IHAVEOPT_LOW) {
    throw new ProtocolError('ERR_NBD_BAD_MAGIC', 'option: bad IHAVEOPT magic');
  }
  c.option = header.readUInt32BE(8);
  c.optionLength = header.readUInt32BE(12);
  c.optionCount += 1;
  if (c.optionCount > c.limits.optionCountMax) {
    throw new ProtocolError('ERR_NBD_TOO_MANY_OPTIONS',
      `option: too many options: ${c.optionCount} > ${c.limits.optionCountMax}`);
  }
  if (c.optionLength > c.limits.optionLengthMax) {
    throw new ProtocolError('ERR_NBD_OPTION_TOO_LONG', `${nameOf(NBD_OPT, c.option)}: ` +
      `option too long: ${c.optionLength} > ${c.limits.optionLengthMax}`);
  }
  c.setPhase(PHASE.OPTION_PAYLOAD);
  return true;
}

export function stepOptionPayload(c: Connection): boolean {
  if (c.framer.length < c.optionLength) return false;
  // a copy: the handler runs across awaits, longer than a received view stays valid
  const payload = Buffer.from(c.framer.take(c.optionLength));
  c.setPhase(PHASE.OPTION_BUSY);
  runOption(c, c.option, payload).then((outcome) => afterOptionSafely(c, outcome),
    (error: unknown) => {
      // a peer violation or an operating failure ends the session; a bug is a fault
      if (isBug(error)) c.fault(error, nameOf(NBD_OPT, c.option));
      else c.closeHard(error, `${nameOf(NBD_OPT, c.option)}: failed`);
      optionSettledAfterClose(c);
    }).catch((error: unknown) => c.fault(error, 'option settled'));
  return false;
}

async function runOption(c: Connection, option: number, payload: Buffer,
): Promise<OptionOutcome> {
  if (!c.isFixedNewstyle && option !== NBD_OPT.EXPORT_NAME) return 'disconnect';
  if (c.isServerShuttingDown() && option !== NBD_OPT.ABORT) {
    if (option === NBD_OPT.EXPORT_NAME) return 'disconnect';
    c.replyError(option, NBD_REP.ERR_SHUTDOWN, 'server shutting down');
    return 'continue';
  }
  const isTlsExempt = option === NBD_OPT.STARTTLS || option === NBD_OPT.ABORT;
  if (c.tls?.mode === 'require' && !c.isTls && !isTlsExempt) {
    // logged once per attempt to open an export, not for every option a client tries
    if (option === NBD_OPT.GO || option === NBD_OPT.INFO || option === NBD_OPT.EXPORT_NAME) {
      c.log.warn({ event: LOG_EVENT.tlsRefused, reason: 'TLS required',
        option: nameOf(NBD_OPT, option) }, 'TLS refused');
    }
    if (option === NBD_OPT.EXPORT_NAME) return 'disconnect';
    c.replyError(option, NBD_REP.ERR_TLS_REQD, 'TLS required');
    return 'continue';
  }
  c.log.debug({ option: nameOf(NBD_OPT, option), length: payload.length }, 'option');
  return optionHandlerOf(option)(c, option, payload);
}

/** A handler settled on a closed connection: nothing of it runs any more; finalize. */
function optionSettledAfterClose(c: Connection): void {
  if (c.phase === PHASE.OPTION_ORPHANED) c.setPhase(PHASE.CLOSED);
  finalizeIfIdle(c);
}

/** A bug in one connection must close that connection, never reject into the event loop. */
function afterOptionSafely(c: Connection, outcome: OptionOutcome): void {
  try {
    afterOption(c, outcome);
  } catch (error) {
    c.fault(error, 'after option');
    optionSettledAfterClose(c);
  }
}

function afterOption(c: Connection, outcome: OptionOutcome): void {
  if (c.isClosed()) {
    optionSettledAfterClose(c);
    return;
  }
  switch (outcome) {
    case 'continue':
      c.setPhase(PHASE.OPTION_HEADER);
      break;
    case 'transmission':
      c.setPhase(PHASE.REQUEST_HEADER);
      startTransmission(c);
      break;
    case 'abort':
      c.beginClosing('NBD_OPT_ABORT');
      return;
    case 'disconnect':
      c.closeHard(null, `${nameOf(NBD_OPT, c.option)}: disconnect`);
      optionSettledAfterClose(c);
      return;
    case 'starttls':
      startTls(c);
      return;
  }
  c.pump();
}

/** NBD_OPT_STARTTLS acknowledged: the TLS handshake, then haggling resumes on the TLS socket. */
function startTls(c: Connection): void {
  const upgrader = c.tls;
  const socket = c.socket;
  assert(upgrader !== null && socket !== null); // options/starttls.ts checked canStartTls
  c.setPhase(PHASE.TLS_HANDSHAKE);
  c.channel.uncork(); // the ACK goes out in plaintext first
  c.detachStreams();
  socket.pause();
  const dropped = c.framer.clear(); // nothing sent before TLS survives (CVE class)
  if (dropped > 0) c.log.warn({ dropped }, 'NBD_OPT_STARTTLS: discarded plaintext');
  c.isStructured = false;
  c.metaContext = null;
  upgrader.upgrade(socket).then(({ secure, domain }) => {
    if (c.isClosed()) {
      secure.destroy();
      return;
    }
    c.input = secure;
    c.output = secure;
    c.socket = null;
    c.isTls = true;
    c.domain = domain;
    c.stream = new StreamChannel(secure, c, c.counts, c.limits.inflightBytesMax);
    c.channel = c.stream;
    c.attachStreams();
    c.log.info({ domain, protocol: secure.getProtocol() }, 'TLS established');
    c.setPhase(PHASE.OPTION_HEADER);
    c.pump();
  }, (error: unknown) => {
    c.log.warn({ event: LOG_EVENT.tlsRefused, reason: 'handshake failed', err: error },
      'TLS refused');
    c.closeHard(null, 'TLS handshake failed');
    socket.destroy();
  });
}

/** OptionSession.bind: the export is bound; transmission starts when the handler returns. */
export function bindExport(c: Connection, handle: ExportHandle, blockSizeMin: number): void {
  assert(c.handle === null);
  c.handle = handle;
  if (c.isClosed()) return; // the option's settling releases it (teardown.ts)
  c.boundExport = handle.export;
  const context = c.validateContext;
  context.eflags = c.eflagsFor(handle);
  context.isStructured = c.isStructured;
  context.blockSizeMin = blockSizeMin;
  context.hasBaseAllocation = c.isStructured && c.metaContext !== null &&
    c.metaContext.hasBaseAllocation;
  if (c.fencedNamesWhileNegotiating.includes(handle.export.name)) c.isFenced = true;
  c.fencedNamesWhileNegotiating = [];
  if (c.handshakeTimer !== null) clearTimeout(c.handshakeTimer);
  c.handshakeTimer = null;
  c.log = c.log.child({ export: handle.export.name, domain: c.domain });
  c.log.info({ size: handle.export.size, eflags: context.eflags, structured: c.isStructured,
    baseAllocation: context.hasBaseAllocation, tls: c.isTls },
  'export negotiated');
  c.hooks.onBound(c);
}
