/**
 * nbd/errno: the only map from an Export failure (IoError.errno, a name such as 'ENOSPC') to an
 * NBD error value (proto.md "Error values"). Aware of the request flags: ENOTSUP may only answer a
 * request with NBD_CMD_FLAG_FAST_ZERO and EOVERFLOW only a request with NBD_CMD_FLAG_DF; otherwise
 * they become EINVAL. ENOMEM is never sent (the spec asks servers to avoid it): it becomes EIO.
 */
import { IoError } from '../errors';
import { NBD_CMD_FLAG, NBD_E, type NbdErrno } from './constants';

const BY_NAME: Readonly<Record<string, NbdErrno>> = {
  EPERM: NBD_E.EPERM,
  EROFS: NBD_E.EPERM,
  EACCES: NBD_E.EPERM,
  EIO: NBD_E.EIO,
  EINVAL: NBD_E.EINVAL,
  ENOSPC: NBD_E.ENOSPC,
  EDQUOT: NBD_E.ENOSPC,
  EFBIG: NBD_E.ENOSPC,
  ESHUTDOWN: NBD_E.ESHUTDOWN,
};

export function nbdErrnoOf(error: unknown, commandFlags: number): NbdErrno {
  const name = error instanceof IoError ? error.errno : 'EIO';
  if (name === 'ENOTSUP' || name === 'EOPNOTSUPP') {
    return (commandFlags & NBD_CMD_FLAG.FAST_ZERO) !== 0 ? NBD_E.ENOTSUP : NBD_E.EINVAL;
  }
  if (name === 'EOVERFLOW') {
    return (commandFlags & NBD_CMD_FLAG.DF) !== 0 ? NBD_E.EOVERFLOW : NBD_E.EINVAL;
  }
  return BY_NAME[name] ?? NBD_E.EIO;
}
