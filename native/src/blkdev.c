/* blkdev.c: block-device ioctls. Size and sector size are O(1) and synchronous (used at open time);
 * BLKDISCARD and BLKZEROOUT can take long over large ranges and run in a worker thread. */
#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include "ops.h"

static int get_fd(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a non-negative integer");
    return -1;
  }
  return 0;
}

napi_value xvd_blk_get_size64(napi_env env, napi_callback_info info) {
  int fd;
  if (get_fd(env, info, &fd) != 0) return NULL;
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    xvd_throw_errno(env, errno, "ioctl(BLKGETSIZE64)");
    return NULL;
  }
  napi_value result;
  napi_create_double(env, (double)size, &result);
  return result;
}

napi_value xvd_blk_get_sector_size(napi_env env, napi_callback_info info) {
  int fd;
  if (get_fd(env, info, &fd) != 0) return NULL;
  int size = 0;
  if (ioctl(fd, BLKSSZGET, &size) != 0) {
    xvd_throw_errno(env, errno, "ioctl(BLKSSZGET)");
    return NULL;
  }
  napi_value result;
  napi_create_int32(env, size, &result);
  return result;
}

napi_value xvd_blk_get_discard_zeroes(napi_env env, napi_callback_info info) {
  int fd;
  if (get_fd(env, info, &fd) != 0) return NULL;
  unsigned int zeroes = 0;
  if (ioctl(fd, BLKDISCARDZEROES, &zeroes) != 0) {
    xvd_throw_errno(env, errno, "ioctl(BLKDISCARDZEROES)");
    return NULL;
  }
  napi_value result;
  napi_get_boolean(env, zeroes != 0, &result);
  return result;
}

int xvd_blk_discard(int fd, int64_t offset, int64_t length) {
  uint64_t range[2] = {(uint64_t)offset, (uint64_t)length};
  return ioctl(fd, BLKDISCARD, range) == 0 ? 0 : errno;
}

int xvd_blk_zeroout(int fd, int64_t offset, int64_t length) {
  uint64_t range[2] = {(uint64_t)offset, (uint64_t)length};
  return ioctl(fd, BLKZEROOUT, range) == 0 ? 0 : errno;
}
