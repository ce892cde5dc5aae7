/** nbd/options/go: NBD_OPT_GO (proto.md "Option types"); see export-info.ts. */
import { serveExportInfo } from './export-info';
import type { OptionHandler } from './session';

export const handleGo: OptionHandler = (session, option, payload) =>
  serveExportInfo(session, option, payload, true);
