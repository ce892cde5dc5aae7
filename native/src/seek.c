/* seek.c: the addon's one reading of a file's holes, by lseek(2) with SEEK_DATA / SEEK_HOLE.
 *
 * xvd_hole_from() is the primitive: where the first hole at or after an offset starts. Both
 * users go through it: xvd_data_runs() below (JS's dataRuns binding, which FileBacking maps a
 * file's data runs with, src/backing/file-backing.ts), and the data-path thread's hole probe
 * (dp-map.c dp_is_data()). EINVAL from it means the file system has no SEEK_HOLE: both sides
 * then take the whole file as data (FileBacking's canSeek false), which is correct, since a
 * hole reads as zeros and data that happen to be zeros are still zeros.
 *
 * xvd_data_runs() walks a file's data runs, many in one call, so that mapping a pool member of a
 * thousand extents is one trip to the thread pool, not two thousand. ENXIO (no data after an
 * offset) ends the walk; it is not a failure. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include "ops.h"
#include "xvd-assert.h"

/* Room for `count` more pairs in *runs (capacity in pairs, doubled as needed up to runs_max);
 * false on ENOMEM. */
static int reserve(int64_t **runs, size_t *capacity, size_t count, size_t runs_max) {
  if (count < *capacity) return 1;
  size_t grown = *capacity == 0 ? 64 : 2 * *capacity;
  if (grown > runs_max) grown = runs_max;
  int64_t *moved = realloc(*runs, grown * 2 * sizeof **runs);
  if (moved == NULL) return 0;
  *runs = moved;
  *capacity = grown;
  return 1;
}

int xvd_hole_from(int fd, int64_t offset, int64_t *hole) {
  XVD_ASSERT(offset >= 0, "a hole is looked for at a file offset");
  off_t at = lseek(fd, (off_t)offset, SEEK_HOLE);
  if (at < 0) return errno;
  XVD_ASSERT((int64_t)at >= offset, "SEEK_HOLE answers at or after the offset asked");
  *hole = (int64_t)at;
  return 0;
}

size_t xvd_data_runs(int fd, int64_t offset, int64_t end, size_t runs_max, int64_t **runs,
                     int *err) {
  size_t count = 0, capacity = 0;
  int64_t cursor = offset;
  *runs = NULL;
  *err = 0;
  while (cursor < end && count < runs_max) {
    off_t data = lseek(fd, (off_t)cursor, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) *err = errno;
      break;
    }
    if ((int64_t)data >= end) break;
    int64_t hole = -1;
    int hole_err = xvd_hole_from(fd, (int64_t)data, &hole);
    if (hole_err != 0 && hole_err != ENXIO) {
      *err = hole_err;
      break;
    }
    if (!reserve(runs, &capacity, count, runs_max)) {
      *err = ENOMEM;
      break;
    }
    (*runs)[2 * count] = (int64_t)data;
    (*runs)[2 * count + 1] = hole_err != 0 ? -1 : hole;
    count++;
    if (hole_err != 0) break;
    cursor = hole;
  }
  return count;
}
