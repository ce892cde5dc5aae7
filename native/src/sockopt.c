/* sockopt.c: setSockOptInt(fd, level, name, value) -> 0 or -errno, and getSockOptInt(fd, level,
 * name) -> value or -errno, synchronous. Node sets no socket buffer sizes or SO_RCVLOWAT on
 * stream sockets; the server tunes the ones it accepted (nbd/server.ts). Never throws for a
 * failing syscall: the caller logs the errno and goes on with the defaults. */
#include <errno.h>
#include <sys/socket.h>
#include "ops.h"

static int sockopt_args(napi_env env, napi_callback_info info, size_t count, int32_t *values) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count) return -1;
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_int32(env, argv[i], &values[i]) != napi_ok) return -1;
  }
  return values[0] < 0 ? -1 : 0;
}

napi_value xvd_set_sockopt_int(napi_env env, napi_callback_info info) {
  int32_t v[4];
  napi_value result;
  if (sockopt_args(env, info, 4, v) != 0) {
    napi_throw_type_error(env, NULL, "setSockOptInt(fd, level, name, value)");
    return NULL;
  }
  int value = v[3];
  int rc = setsockopt(v[0], v[1], v[2], &value, sizeof value);
  napi_create_int32(env, rc == 0 ? 0 : -errno, &result);
  return result;
}

napi_value xvd_get_sockopt_int(napi_env env, napi_callback_info info) {
  int32_t v[3];
  napi_value result;
  if (sockopt_args(env, info, 3, v) != 0) {
    napi_throw_type_error(env, NULL, "getSockOptInt(fd, level, name)");
    return NULL;
  }
  int value = 0;
  socklen_t length = sizeof value;
  int rc = getsockopt(v[0], v[1], v[2], &value, &length);
  napi_create_int32(env, rc == 0 ? value : -errno, &result);
  return result;
}
