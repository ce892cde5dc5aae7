/* pread-nowait.c: preadNoWait(fd, buffer, bufferOffset, length, position) -> number, synchronous.
 * preadv2(RWF_NOWAIT): reads only what the page cache holds without blocking, so the JS thread
 * can serve cached reads itself instead of handing each one to the libuv pool (a thread hop of
 * several microseconds per read). Returns bytes read (0 at EOF), or -errno: -EAGAIN when the
 * data is not cached (the caller then uses fs.read), -EOPNOTSUPP when the file does not support
 * RWF_NOWAIT. Never throws for I/O errors: the caller retries through fs.read, which reports
 * them. */
#include <errno.h>
#include <sys/uio.h>
#include "ops.h"

napi_value xvd_pread_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_value result;
  void *data = NULL;
  size_t data_length = 0;
  int32_t fd = -1;
  int64_t buffer_offset = -1, length = -1, position = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &data_length) != napi_ok ||
      napi_get_value_int64(env, argv[2], &buffer_offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok ||
      napi_get_value_int64(env, argv[4], &position) != napi_ok) {
    napi_throw_type_error(env, NULL, "preadNoWait(fd, buffer, bufferOffset, length, position)");
    return NULL;
  }
  if (fd < 0 || buffer_offset < 0 || length < 0 || position < 0 ||
      (uint64_t)buffer_offset + (uint64_t)length > (uint64_t)data_length) {
    napi_throw_range_error(env, NULL, "preadNoWait: range outside the buffer");
    return NULL;
  }
  struct iovec iov = { .iov_base = (char *)data + buffer_offset, .iov_len = (size_t)length };
  ssize_t got;
  do {
    got = preadv2(fd, &iov, 1, (off_t)position, RWF_NOWAIT);
  } while (got < 0 && errno == EINTR);
  napi_create_double(env, got < 0 ? -(double)errno : (double)got, &result);
  return result;
}
