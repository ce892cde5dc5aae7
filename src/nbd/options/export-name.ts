/**
 * nbd/options/export-name: NBD_OPT_EXPORT_NAME (proto.md "Option types"). The payload is the
 * whole name; success is size (u64), transmission flags (u16) and 124 zero bytes unless
 * NBD_FLAG_C_NO_ZEROES was agreed. There is no error reply: an unknown or over-long name is a
 * hard disconnect.
 */
import { LIMITS } from '../../limits';
import { EXPORT_NAME_PADDING_LENGTH } from '../constants';
import { decodeString } from '../wire-reader';
import { writeU64 } from '../wire-writer';
import { ExportRefusal } from '../provider';
import { logExportRefused, openOrRefusal } from './export-info';
import type { OptionHandler } from './session';

export const handleExportName: OptionHandler = async (session, option, payload) => {
  if (payload.length > LIMITS.nbdStringLengthMax) return 'disconnect';
  const requested = decodeString(payload);
  if (requested === null) return 'disconnect';
  const name = requested === '' ? session.provider.defaultName(session.domain) : requested;
  const handle = name === null ? null : await openOrRefusal(session, name);
  if (handle === null || handle instanceof ExportRefusal) {
    logExportRefused(session, option, name, handle?.message);
    return 'disconnect';
  }
  const padding = session.noZeroes ? 0 : EXPORT_NAME_PADDING_LENGTH;
  const frame = Buffer.alloc(10 + padding);
  writeU64(frame, handle.export.size, 0);
  frame.writeUInt16BE(session.eflagsFor(handle), 8);
  session.sendRaw(frame);
  session.bind(handle, 1);
  return 'transmission';
};
