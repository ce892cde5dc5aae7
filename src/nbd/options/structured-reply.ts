/**
 * nbd/options/structured-reply: NBD_OPT_STRUCTURED_REPLY (proto.md "Structured replies"). A
 * payload is NBD_REP_ERR_INVALID; a repeat is acknowledged again (libnbd accepts either).
 */
import { NBD_REP } from '../constants';
import type { OptionHandler } from './session';

export const handleStructuredReply: OptionHandler = async (session, option, payload) => {
  if (payload.length !== 0) {
    session.replyError(option, NBD_REP.ERR_INVALID,
      'NBD_OPT_STRUCTURED_REPLY: payload must be empty');
    return 'continue';
  }
  session.isStructured = true;
  session.reply(option, NBD_REP.ACK);
  return 'continue';
};
