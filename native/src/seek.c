/* seek.c: lseek(2) with SEEK_DATA / SEEK_HOLE. ENXIO (no data or hole after offset) is returned
 * as an error code for the caller to interpret; it is not a failure. */
#include <errno.h>
#include <unistd.h>
#include "ops.h"

int64_t xvd_seek(int fd, int whence, int64_t offset, int *err) {
  off_t where = lseek(fd, (off_t)offset, whence);
  *err = where < 0 ? errno : 0;
  return (int64_t)where;
}
