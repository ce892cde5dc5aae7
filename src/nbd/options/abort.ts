/**
 * nbd/options/abort: NBD_OPT_ABORT (proto.md "Option types"): reply NBD_REP_ACK, then close.
 * The client may close without reading the ACK (nbd-client -l); connection.ts tolerates that.
 */
import { NBD_REP } from '../constants';
import type { OptionHandler } from './session';

export const handleAbort: OptionHandler = async (session, option) => {
  session.reply(option, NBD_REP.ACK);
  return 'abort';
};
