/**
 * nbd/options/starttls: NBD_OPT_STARTTLS (proto.md "TLS support"). Without TLS configured:
 * NBD_REP_ERR_POLICY. With a payload, or a second time: NBD_REP_ERR_INVALID. Otherwise the ACK
 * goes out in plaintext and connection.ts runs the TLS handshake, discarding every byte the
 * client sent after this option and every bit of negotiation state from before it.
 */
import { NBD_REP } from '../constants';
import type { OptionHandler } from './session';

export const handleStartTls: OptionHandler = async (session, option, payload) => {
  if (!session.canStartTls) {
    session.replyError(option, NBD_REP.ERR_POLICY, 'NBD_OPT_STARTTLS: TLS is not configured');
    return 'continue';
  }
  if (payload.length !== 0 || session.isTls) {
    const why = session.isTls ? 'TLS is already active' : 'payload must be empty';
    session.replyError(option, NBD_REP.ERR_INVALID, `NBD_OPT_STARTTLS: ${why}`);
    return 'continue';
  }
  session.reply(option, NBD_REP.ACK);
  return 'starttls';
};
