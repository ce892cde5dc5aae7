/**
 * nbd/options/export-info: the shared body of NBD_OPT_INFO and NBD_OPT_GO (proto.md "Option
 * types", NBD_OPT_INFO/NBD_OPT_GO and "Information types"). Payload: u32 name length, name, u16
 * count, count × u16 info requests; any inconsistency is NBD_REP_ERR_INVALID with the stream in
 * sync (the payload was already read whole). NBD_INFO_EXPORT is always sent, even unrequested
 * (nbd-client 3.24 asks for nothing); NAME, DESCRIPTION and BLOCK_SIZE when asked. The block
 * size minimum is enforced in transmission only when the client asked for BLOCK_SIZE.
 * An export the provider does not open is refused with one `export-refused` line (log-events.ts;
 * NBD_OPT_EXPORT_NAME's handler logs it the same way); one it refuses with a reason
 * (ExportRefusal: a VD another host serves) is answered NBD_REP_ERR_POLICY with that reason.
 */
import { LIMITS } from '../../limits';
import { LOG_EVENT } from '../../log-events';
import { NBD_INFO, NBD_OPT, NBD_REP, nameOf } from '../constants';
import { ExportRefusal, type ExportHandle } from '../provider';
import { WireReader, decodeString } from '../wire-reader';
import { writeU64 } from '../wire-writer';
import type { OptionSession } from './session';

export interface InfoRequest {
  name: string;
  infos: number[];
}

/** Decodes the GO/INFO payload; a string is the NBD_REP_ERR_INVALID message. */
export function decodeInfoRequest(payload: Buffer): InfoRequest | string {
  const reader = new WireReader(payload);
  const nameLength = reader.u32();
  if (nameLength === null) return 'payload shorter than 6 bytes';
  if (nameLength > LIMITS.nbdStringLengthMax) {
    return `export name too long: ${nameLength} > ${LIMITS.nbdStringLengthMax}`;
  }
  const nameBytes = reader.bytes(nameLength);
  if (nameBytes === null) return 'name length exceeds the option length';
  const name = decodeString(nameBytes);
  if (name === null) return 'export name is not UTF-8 or contains NUL';
  const count = reader.u16();
  if (count === null || reader.remaining !== 2 * count) return 'inconsistent info request count';
  const infos: number[] = [];
  for (let index = 0; index < count; index++) infos.push(reader.u16() ?? 0);
  return { name, infos };
}

function infoString(type: number, text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8').subarray(0, LIMITS.nbdStringLengthMax);
  const frame = Buffer.allocUnsafe(2 + bytes.length);
  frame.writeUInt16BE(type, 0);
  bytes.copy(frame, 2);
  return frame;
}

function sendInfos(
  session: OptionSession, option: number, handle: ExportHandle, name: string, infos: number[],
): void {
  const exp = handle.export;
  const exportInfo = Buffer.allocUnsafe(12);
  exportInfo.writeUInt16BE(NBD_INFO.EXPORT, 0);
  writeU64(exportInfo, exp.size, 2);
  exportInfo.writeUInt16BE(session.eflagsFor(handle), 10);
  session.reply(option, NBD_REP.INFO, exportInfo);
  if (infos.includes(NBD_INFO.NAME)) {
    session.reply(option, NBD_REP.INFO, infoString(NBD_INFO.NAME, name));
  }
  if (infos.includes(NBD_INFO.DESCRIPTION) && exp.description !== '') {
    session.reply(option, NBD_REP.INFO, infoString(NBD_INFO.DESCRIPTION, exp.description));
  }
  if (infos.includes(NBD_INFO.BLOCK_SIZE)) {
    const blockInfo = Buffer.allocUnsafe(14);
    blockInfo.writeUInt16BE(NBD_INFO.BLOCK_SIZE, 0);
    blockInfo.writeUInt32BE(exp.blockSizeMin, 2);
    blockInfo.writeUInt32BE(exp.blockSizePreferred, 6);
    blockInfo.writeUInt32BE(Math.min(exp.blockSizeMax, LIMITS.nbdPayloadMax), 10);
    session.reply(option, NBD_REP.INFO, blockInfo);
  }
}

/**
 * Why an export was not opened, as far as the listings tell: another domain's export (the
 * client is authenticated to a domain), one this client may see that could not be opened now
 * (its VD is being zeroed, its backing failed, the server is stopping), or none by that name.
 */
function refusalOf(session: OptionSession, name: string | null, why?: string): string {
  if (why !== undefined) return why;
  if (name === null) return 'no default export';
  const isListed = (domain: number | null): boolean =>
    session.provider.list(domain).some((listing) => listing.name === name);
  if (isListed(session.domain)) return 'unavailable';
  return session.domain !== null && isListed(null) ? 'another domain' : 'unknown';
}

/** The `export-refused` line of an open that found no export (`name` null: no default). */
export function logExportRefused(session: OptionSession, option: number, name: string | null,
  why?: string): void {
  session.log.warn({ event: LOG_EVENT.exportRefused, option: nameOf(NBD_OPT, option),
    export: name?.slice(0, LIMITS.nbdEchoLengthMax) ?? '', domain: session.domain,
    reason: refusalOf(session, name, why) }, 'export refused');
}

/** The provider's open, with an ExportRefusal returned rather than thrown. */
export async function openOrRefusal(session: OptionSession, name: string,
): Promise<ExportHandle | ExportRefusal | null> {
  try {
    return await session.provider.open(name, session.domain);
  } catch (error) {
    if (error instanceof ExportRefusal) return error;
    throw error;
  }
}

/** Answers INFO (isGo false: the export is released again) or GO (bound on success). */
export async function serveExportInfo(
  session: OptionSession, option: number, payload: Buffer, isGo: boolean,
): Promise<'continue' | 'transmission'> {
  const request = decodeInfoRequest(payload);
  if (typeof request === 'string') {
    session.replyError(option, NBD_REP.ERR_INVALID, request);
    return 'continue';
  }
  const name = request.name === '' ? session.provider.defaultName(session.domain) : request.name;
  const handle = name === null ? null : await openOrRefusal(session, name);
  if (handle instanceof ExportRefusal) {
    logExportRefused(session, option, name, handle.message);
    session.replyError(option, NBD_REP.ERR_POLICY, handle.message);
    return 'continue';
  }
  if (name === null || handle === null) {
    logExportRefused(session, option, name);
    session.replyError(option, NBD_REP.ERR_UNKNOWN, 'export not found');
    return 'continue';
  }
  sendInfos(session, option, handle, name, request.infos);
  session.reply(option, NBD_REP.ACK);
  if (!isGo) {
    handle.release();
    return 'continue';
  }
  const wantsBlockSize = request.infos.includes(NBD_INFO.BLOCK_SIZE);
  if (session.metaContext !== null && session.metaContext.exportName !== name) {
    session.metaContext = null; // contexts were negotiated for another export
  }
  session.bind(handle, wantsBlockSize ? handle.export.blockSizeMin : 1);
  return 'transmission';
}
