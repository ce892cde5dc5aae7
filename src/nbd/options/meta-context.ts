/**
 * nbd/options/meta-context: NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (proto.md
 * "Metadata querying"). Payload: u32 export name length, name, u32 query count, queries (u32
 * length + string). The only context is base:allocation; the query "base:" selects it, LIST with
 * no queries lists it, unknown namespaces are ignored. SET needs structured replies first
 * (NBD_REP_ERR_INVALID otherwise), replaces earlier contexts and remembers the export name.
 */
import { LIMITS } from '../../limits';
import { BASE_ALLOCATION, BASE_ALLOCATION_ID, NBD_REP } from '../constants';
import { WireReader, decodeString } from '../wire-reader';
import type { OptionHandler, OptionSession } from './session';

interface MetaRequest {
  exportName: string;
  queries: string[];
}

function decodeMetaRequest(payload: Buffer): MetaRequest | string {
  const reader = new WireReader(payload);
  const nameLength = reader.u32();
  if (nameLength === null || nameLength > LIMITS.nbdStringLengthMax) return 'bad export name';
  const nameBytes = reader.bytes(nameLength);
  const exportName = nameBytes === null ? null : decodeString(nameBytes);
  if (exportName === null) return 'bad export name';
  const count = reader.u32();
  if (count === null) return 'missing query count';
  const queries: string[] = [];
  for (let index = 0; index < count; index++) {
    const length = reader.u32();
    if (length === null || length > LIMITS.nbdStringLengthMax) return 'bad query length';
    const bytes = reader.bytes(length);
    const query = bytes === null ? null : decodeString(bytes);
    if (query === null) return 'bad query';
    queries.push(query);
  }
  if (reader.remaining !== 0) return 'trailing bytes after the queries';
  return { exportName, queries };
}

function selectsBaseAllocation(queries: readonly string[], isList: boolean): boolean {
  if (isList && queries.length === 0) return true;
  return queries.some((query) => query === BASE_ALLOCATION || query === 'base:');
}

function contextReply(id: number): Buffer {
  const name = Buffer.from(BASE_ALLOCATION, 'utf8');
  const frame = Buffer.allocUnsafe(4 + name.length);
  frame.writeUInt32BE(id, 0);
  name.copy(frame, 4);
  return frame;
}

async function serveMetaContext(
  session: OptionSession, option: number, payload: Buffer, isList: boolean,
): Promise<'continue'> {
  if (!isList && !session.isStructured) {
    session.replyError(option, NBD_REP.ERR_INVALID,
      'NBD_OPT_SET_META_CONTEXT: structured replies not negotiated');
    return 'continue';
  }
  const request = decodeMetaRequest(payload);
  if (typeof request === 'string') {
    session.replyError(option, NBD_REP.ERR_INVALID, `meta context: ${request}`);
    return 'continue';
  }
  const name = request.exportName === ''
    ? session.provider.defaultName(session.domain) : request.exportName;
  const handle = name === null ? null : await session.provider.open(name, session.domain);
  if (name === null || handle === null) {
    session.replyError(option, NBD_REP.ERR_UNKNOWN, 'export not found');
    return 'continue';
  }
  handle.release();
  const hasBaseAllocation = selectsBaseAllocation(request.queries, isList);
  if (hasBaseAllocation) {
    session.reply(option, NBD_REP.META_CONTEXT, contextReply(isList ? 0 : BASE_ALLOCATION_ID));
  }
  if (!isList) session.metaContext = { exportName: name, hasBaseAllocation };
  session.reply(option, NBD_REP.ACK);
  return 'continue';
}

export const handleListMetaContext: OptionHandler = (session, option, payload) =>
  serveMetaContext(session, option, payload, true);

export const handleSetMetaContext: OptionHandler = (session, option, payload) =>
  serveMetaContext(session, option, payload, false);
