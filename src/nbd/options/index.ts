/**
 * nbd/options/index: the option dispatch table (proto.md "Option types") and the
 * supported-features table. Unknown options get NBD_REP_ERR_UNSUP; their payload was already
 * read whole by connection.ts, so the stream stays in sync.
 */
import { NBD_OPT, NBD_REP, nameOf } from '../constants';
import { handleAbort } from './abort';
import { handleExportName } from './export-name';
import { handleGo } from './go';
import { handleInfo } from './info';
import { handleList } from './list';
import { handleListMetaContext, handleSetMetaContext } from './meta-context';
import type { OptionHandler } from './session';
import { handleStartTls } from './starttls';
import { handleStructuredReply } from './structured-reply';

export type { OptionHandler, OptionOutcome, OptionSession, MetaContextState } from './session';

export const OPTION_HANDLERS: Readonly<Record<number, OptionHandler>> = {
  [NBD_OPT.EXPORT_NAME]: handleExportName,
  [NBD_OPT.ABORT]: handleAbort,
  [NBD_OPT.LIST]: handleList,
  [NBD_OPT.STARTTLS]: handleStartTls,
  [NBD_OPT.INFO]: handleInfo,
  [NBD_OPT.GO]: handleGo,
  [NBD_OPT.STRUCTURED_REPLY]: handleStructuredReply,
  [NBD_OPT.LIST_META_CONTEXT]: handleListMetaContext,
  [NBD_OPT.SET_META_CONTEXT]: handleSetMetaContext,
};

export const handleUnsupported: OptionHandler = async (session, option) => {
  session.replyError(option, NBD_REP.ERR_UNSUP, `unsupported option ${nameOf(NBD_OPT, option)}`);
  return 'continue';
};

export function optionHandlerOf(option: number): OptionHandler {
  return OPTION_HANDLERS[option] ?? handleUnsupported;
}
