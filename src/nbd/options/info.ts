/** nbd/options/info: NBD_OPT_INFO (proto.md "Option types"); see export-info.ts. */
import { serveExportInfo } from './export-info';
import type { OptionHandler } from './session';

export const handleInfo: OptionHandler = (session, option, payload) =>
  serveExportInfo(session, option, payload, false);
