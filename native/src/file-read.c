/* file-read.c: reading a backing file for a reply that goes out on a sender thread (sender.c):
 * a pread of an exact length that reads zeros past EOF, as reads past the end of a file are,
 * and cachestat(2)'s answer to "is all of this range in the page cache?".
 *
 * Contract: both run on any thread and keep no state but has_no_cachestat (atomic, set once).
 * xvd_is_cached() says 1 only when every page of the range is cached, or when the kernel has no
 * cachestat (before 6.5: sendfile is then used on uncached ranges too, as before it existed);
 * any other failure says 0, "unsure": cachestat needs the caller to own the file or be root for
 * an O_RDONLY descriptor (EPERM otherwise). Pages can be evicted right after the answer. */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ops.h"
#include "xvd-assert.h"

/* pread of exactly `length` bytes (zeros past EOF) */
int xvd_pread_full(int fd, uint8_t *at, size_t length, int64_t position) {
  XVD_ASSERT(position >= 0, "a read is at a file offset");
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, at + done, length - done, (off_t)position + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) {
      memset(at + done, 0, length - done);
      break;
    }
    done += (size_t)n;
  }
  return 0;
}

#ifndef __NR_cachestat
#define __NR_cachestat 451 /* Linux 6.5; the same number on every architecture */
#endif
struct xvd_cachestat_range {
  uint64_t off;
  uint64_t len;
};
struct xvd_cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* cachestat(2) is missing (kernel before 6.5): sendfile then goes uncached ranges too */
static int has_no_cachestat;

int xvd_is_cached(int fd, int64_t position, int64_t length) {
  XVD_ASSERT(position >= 0, "a range is at a file offset");
  XVD_ASSERT(length >= 0, "a range has a length");
  long page = sysconf(_SC_PAGESIZE);
  uint64_t first = (uint64_t)position / (uint64_t)page;
  uint64_t end = ((uint64_t)position + (uint64_t)length + (uint64_t)page - 1) / (uint64_t)page;
  struct xvd_cachestat_range range = {.off = (uint64_t)position, .len = (uint64_t)length};
  struct xvd_cachestat stat;
  if (syscall(__NR_cachestat, fd, &range, &stat, 0) != 0) {
    if (errno == ENOSYS) __atomic_store_n(&has_no_cachestat, 1, __ATOMIC_RELAXED);
    return __atomic_load_n(&has_no_cachestat, __ATOMIC_RELAXED);
  }
  return stat.nr_cache >= end - first;
}
