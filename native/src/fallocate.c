/* fallocate.c: fallocate(2) with a mode (PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE, plain allocate). */
#include <errno.h>
#include <fcntl.h>
#include "ops.h"

int xvd_fallocate(int fd, int mode, int64_t offset, int64_t length) {
  int rc;
  do {
    rc = fallocate(fd, mode, (off_t)offset, (off_t)length);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}
