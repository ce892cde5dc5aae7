/* ops.h: the declarations the addon's files share (addon.c registers what they export, and its
 * header lists it). One section per file, in the order of binding.gyp: the syscall groups Node
 * lacks (fallocate modes, BLKDISCARD, BLKZEROOUT, BLKGETSIZE64, BLKSSZGET, SEEK_DATA/SEEK_HOLE,
 * RWF_NOWAIT, int socket options), the thread-backed objects (writer, sender, data path) and
 * their shared handle lifecycle, the memory budget, and request.c's test binding. Calls that can
 * block run as async work or on the objects' own threads; only O(1) calls are synchronous.
 * The data path's internal contract is datapath.h; the wire constants are protocol.h
 * (generated); the assertion macro is xvd-assert.h. */
#ifndef XVD_OPS_H
#define XVD_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <node_api.h>

/* After a send or write that took `done` bytes of iov[0..count): skips the iovecs taken whole
 * (*iov moves past them), trims the first one left, and returns how many are left. */
static inline int xvd_iov_advance(struct iovec **iov, int count, size_t done) {
  struct iovec *at = *iov;
  while (count > 0 && done >= at->iov_len) {
    done -= at->iov_len;
    at++;
    count--;
  }
  if (count > 0) {
    at->iov_base = (uint8_t *)at->iov_base + done;
    at->iov_len -= done;
  }
  *iov = at;
  return count;
}

/* dataRuns returns at most this many pairs per call (16 MiB of them) */
#define XVD_DATA_RUNS_MAX (1 << 20)

enum xvd_op {
  XVD_OP_FALLOCATE = 1,
  XVD_OP_DISCARD = 2,
  XVD_OP_ZEROOUT = 3,
  XVD_OP_DATA_RUNS = 4,
};

struct xvd_work {
  napi_async_work work;
  napi_deferred deferred;
  enum xvd_op op;
  int fd;
  int mode;
  int64_t offset;
  int64_t length;
  int64_t end;       /* XVD_OP_DATA_RUNS: where the walk stops */
  int64_t result;
  int64_t *runs;     /* XVD_OP_DATA_RUNS: (data, hole) pairs, at most `length` of them */
  int err; /* errno, 0 on success */
  const char *syscall;
};

/* errors.c */
napi_value xvd_make_errno_error(napi_env env, int err, const char *syscall);
const char *xvd_errno_name(int err);
int xvd_throw_errno(napi_env env, int err, const char *syscall);

/* blkdev.c: synchronous O(1) ioctls and the two range ioctls (run in a worker) */
napi_value xvd_blk_get_size64(napi_env env, napi_callback_info info);
napi_value xvd_blk_get_sector_size(napi_env env, napi_callback_info info);
napi_value xvd_blk_get_discard_zeroes(napi_env env, napi_callback_info info);
int xvd_blk_discard(int fd, int64_t offset, int64_t length);
int xvd_blk_zeroout(int fd, int64_t offset, int64_t length);

/* fallocate.c */
int xvd_fallocate(int fd, int mode, int64_t offset, int64_t length);

/* pread-nowait.c: synchronous preadv2(RWF_NOWAIT); bytes or -errno */
napi_value xvd_pread_nowait(napi_env env, napi_callback_info info);

/* pwrite-batch.c: every piece of one request in one pool job; callback(error, index) */
struct xvd_piece {
  int fd;
  int64_t buffer_offset;
  int64_t length;
  int64_t position;
};
struct xvd_batch {
  uint8_t *base; /* the buffer's bytes, kept alive by the caller's reference */
  size_t count;
  size_t failed; /* index of the failed piece, or count */
  int err;       /* errno of the failure; 0 with failed < count: pwrite returned 0 */
  struct xvd_piece pieces[];
};
/* One request's pieces and its JS callback; `next` queues it on a writer, `work` on the pool. */
struct xvd_batch_job {
  struct xvd_batch_job *next;
  napi_async_work work;
  napi_ref buffer_ref;
  napi_ref callback_ref;
  struct xvd_batch batch;
};
napi_value xvd_pwrite_batch(napi_env env, napi_callback_info info);
/* args: (buffer, pieces, callback); copies and checks the pieces and holds the buffer and the
 * callback; NULL after throwing */
struct xvd_batch_job *xvd_batch_job_new(napi_env env, napi_value *args);
/* off the JS thread: writes the pieces in order, stopping at the first failure */
void xvd_batch_execute(struct xvd_batch *b);
/* on the JS thread: callback(error or null, index) with the result (ECANCELED when
 * cancelled), then frees the job */
void xvd_batch_job_finish(napi_env env, struct xvd_batch_job *job, int is_cancelled);

/* writer.c: a writer thread per backing file; same contract as pwriteBatch */
napi_value xvd_create_writer(napi_env env, napi_callback_info info);
napi_value xvd_writer_submit(napi_env env, napi_callback_info info);
napi_value xvd_close_writer(napi_env env, napi_callback_info info);

/* sender.c: a sender thread per connection (sendfile or pread+send); see the file's header */
napi_value xvd_create_sender(napi_env env, napi_callback_info info);
napi_value xvd_sender_submit(napi_env env, napi_callback_info info);
napi_value xvd_close_sender(napi_env env, napi_callback_info info);

/* datapath-binding.c: a thread per connection serving plain READ/WRITE itself (its parts:
 * datapath.h) */
napi_value xvd_create_datapath(napi_env env, napi_callback_info info);
napi_value xvd_datapath_submit(napi_env env, napi_callback_info info);
napi_value xvd_datapath_control(napi_env env, napi_callback_info info);
napi_value xvd_datapath_stats(napi_env env, napi_callback_info info);
napi_value xvd_datapath_remap(napi_env env, napi_callback_info info); /* dp-map.c */
void xvd_datapath_constants(napi_env env, napi_value constants);

/* budget.c: the process-wide memory budget of the data-path threads and JS; see the file */
int xvd_budget_take(int64_t bytes);
void xvd_budget_charge(int64_t bytes);
void xvd_budget_give(int64_t bytes);
napi_value xvd_budget_sync(napi_env env, napi_callback_info info);

/* request-binding.c: request.c's verdict on a stream's first bytes, for tests */
napi_value xvd_request_step_js(napi_env env, napi_callback_info info);

/* handle.c: externals tagged with their kind; get returns NULL for anything else. new owns
 * `data` from the call, also when it fails (see handle.c). */
napi_status xvd_handle_new(napi_env env, void *data, napi_finalize finalize,
                           const napi_type_tag *tag, napi_value *result);
void *xvd_handle_get(napi_env env, napi_value value, const napi_type_tag *tag);

/* handle.c: what JS owns of a native object that runs a thread (writer.c, sender.c,
 * datapath-binding.c), usually embedded first in a larger box. stop(box, abort) stops the
 * object's thread and joins it; it runs from close, from the environment's cleanup hook and
 * from the handle's finalizer (both aborting), so after the first call it must do nothing.
 * release(box), when set, runs just before the box is freed. */
struct xvd_thread_box {
  void *object;
  napi_env env;
  int is_hooked; /* the environment cleanup hook is registered */
  void (*stop)(struct xvd_thread_box *box, int abort);
  void (*release)(struct xvd_thread_box *box);
};

/* Once the object's thread runs: registers the cleanup hook that stops it at environment
 * teardown and wraps the box (malloc'd, `object` and `stop` set) in a handle tagged `tag`.
 * NULL after throwing ("<what>: no cleanup hook" or "no handle"); the thread is stopped and the
 * box freed by then. */
napi_value xvd_thread_handle_new(napi_env env, struct xvd_thread_box *box,
                                 const napi_type_tag *tag, const char *what);
/* Removes the cleanup hook, then stop(box, abort). */
void xvd_thread_box_close(struct xvd_thread_box *box, int abort);

/* file-read.c: for sender.c. xvd_pread_full reads exactly `length` bytes (zeros past EOF): 0
 * or errno. xvd_is_cached: 1 when all of the range is in the page cache (or cachestat(2) is
 * missing), 0 when not or unsure. */
int xvd_pread_full(int fd, uint8_t *at, size_t length, int64_t position);
int xvd_is_cached(int fd, int64_t position, int64_t length);

/* sockopt.c: synchronous int socket options; 0/value or -errno */
napi_value xvd_set_sockopt_int(napi_env env, napi_callback_info info);
napi_value xvd_get_sockopt_int(napi_env env, napi_callback_info info);

/* seek.c: fd's data runs from `offset` on that start before `end`, at most runs_max: pairs
 * (data start, hole start) in *runs (malloc'd as they are found; the caller frees it), the hole
 * start being where the run really ends (maybe past `end`; -1 when lseek found none). Returns the
 * pair count; *err is 0, an lseek's errno or ENOMEM. */
size_t xvd_data_runs(int fd, int64_t offset, int64_t end, size_t runs_max, int64_t **runs,
                     int *err);
/* seek.c: where the first hole at or after `offset` starts (the file's end counts as one): 0
 * and *hole, or lseek's errno (EINVAL: no SEEK_HOLE on this file system, all of it is data;
 * ENXIO: offset at or past the end). The one hole primitive of JS's dataRuns and the data path. */
int xvd_hole_from(int fd, int64_t offset, int64_t *hole);

#endif
