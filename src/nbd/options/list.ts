/**
 * nbd/options/list: NBD_OPT_LIST (proto.md "Option types"): one NBD_REP_SERVER per export the
 * provider shows this domain (u32 name length, name, description), then NBD_REP_ACK. A payload
 * is NBD_REP_ERR_INVALID. At most LIMITS.nbdListExportsMax entries.
 */
import { LIMITS } from '../../limits';
import { NBD_REP } from '../constants';
import type { OptionHandler } from './session';

function serverEntry(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8').subarray(0, LIMITS.nbdStringLengthMax);
  const text = Buffer.from(description, 'utf8').subarray(0, LIMITS.nbdStringLengthMax);
  const frame = Buffer.allocUnsafe(4 + nameBytes.length + text.length);
  frame.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(frame, 4);
  text.copy(frame, 4 + nameBytes.length);
  return frame;
}

export const handleList: OptionHandler = async (session, option, payload) => {
  if (payload.length !== 0) {
    session.replyError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_LIST: payload must be empty');
    return 'continue';
  }
  const listing = session.provider.list(session.domain).slice(0, LIMITS.nbdListExportsMax);
  for (const entry of listing) {
    session.reply(option, NBD_REP.SERVER, serverEntry(entry.name, entry.description));
  }
  session.reply(option, NBD_REP.ACK);
  return 'continue';
};
