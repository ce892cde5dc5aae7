/* errors.c: errno → Error with code (errno name), errno (number) and syscall.
 * ENODEV from an optional method means "not supported here", so it is reported as EOPNOTSUPP. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "ops.h"

const char *xvd_errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "EOPNOTSUPP";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ENOTTY: return "ENOTTY";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EDQUOT: return "EDQUOT";
    case EINTR: return "EINTR";
    case ECANCELED: return "ECANCELED";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    default: return "EUNKNOWN";
  }
}

napi_value xvd_make_errno_error(napi_env env, int err, const char *syscall) {
  const char *name = xvd_errno_name(err);
  char text[256];
  snprintf(text, sizeof text, "%s: %s: %s", syscall, name,
           strerror(err == ENODEV ? EOPNOTSUPP : err));
  napi_value message, code, error, number, sys;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err == ENODEV ? EOPNOTSUPP : err, &number);
  napi_set_named_property(env, error, "errno", number);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  return error;
}

int xvd_throw_errno(napi_env env, int err, const char *syscall) {
  napi_throw(env, xvd_make_errno_error(env, err, syscall));
  return 0;
}
