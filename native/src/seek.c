/* seek.c: a file's data runs by lseek(2) with SEEK_DATA / SEEK_HOLE, many in one call, so that
 * mapping a pool member of a thousand extents is one trip to the thread pool, not two thousand.
 * ENXIO (no data after an offset) ends the walk; it is not a failure. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include "ops.h"

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
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0 && errno != ENXIO) {
      *err = errno;
      break;
    }
    if (!reserve(runs, &capacity, count, runs_max)) {
      *err = ENOMEM;
      break;
    }
    (*runs)[2 * count] = (int64_t)data;
    (*runs)[2 * count + 1] = hole < 0 ? -1 : (int64_t)hole;
    count++;
    if (hole < 0) break;
    cursor = (int64_t)hole;
  }
  return count;
}
