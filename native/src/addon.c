/* addon.c: registration of the xvd native addon (Node-API 9, plain C), and the four calls that
 * run as async work on the libuv pool (fallocate, blkDiscard, blkZeroout, dataRuns).
 *
 * Exports (each file named has the details in its header):
 *   fallocate(fd, mode, offset, length)    -> Promise<void>                      (fallocate.c)
 *   blkDiscard(fd, offset, length)         -> Promise<void>                      (blkdev.c)
 *   blkZeroout(fd, offset, length)         -> Promise<void>                      (blkdev.c)
 *   dataRuns(fd, offset, end, runsMax)     -> Promise<Float64Array> of (data start, hole start)
 *                                             pairs from offset on, starting before end, at most
 *                                             runsMax (a hole start may be past end, -1 for
 *                                             none)                              (seek.c)
 *   blkGetSize64(fd), blkGetSectorSize(fd) -> number; blkGetDiscardZeroes(fd) -> boolean
 *                                             (synchronous, O(1) ioctls)         (blkdev.c)
 *   preadNoWait(fd, buf, bufOff, len, pos) -> bytes, or -errno (-EAGAIN: not in the page
 *                                             cache; synchronous)                (pread-nowait.c)
 *   pwriteBatch(buffer, pieces, callback)  one request's pieces in one pool job (pwrite-batch.c)
 *   createWriter(), writerSubmit(w, buffer, pieces, callback), closeWriter(w)
 *                                          a writer thread per backing file      (writer.c)
 *   createSender(socketFd, mode), senderSubmit(s, bytes, pieces, callback),
 *   closeSender(s, abort)                  a sender thread per connection        (sender.c)
 *   createDatapath(...), datapathSubmit(dp, bytes, callback), datapathControl(dp, op, value),
 *   datapathStats(dp), datapathRemap(dp, extents, dirty, sequence)
 *                                          the data-path thread   (datapath-binding.c, datapath.h)
 *   budgetSync(jsHeldBytes, maxBytes)      -> bytes the threads hold              (budget.c)
 *   requestStep(bytes, size, eflags, options, blockSizeMin) request.c's verdict, for tests
 *                                                                   (request-binding.c)
 *   setSockOptInt(fd, level, name, value)  -> 0 or -errno; getSockOptInt(fd, level, name) ->
 *                                             value or -errno (synchronous)      (sockopt.c)
 *   cephConnect, cephShutdown, cephAddrs, cephMonCommand
 *                                          the process's one RADOS client, librados loaded at
 *                                          run time                          (ceph.c, ceph.h)
 *   cephWaitForLatestOsdmap()              that client fetches the latest osdmap (ceph-osdmap.c)
 *   rbdCreate, rbdOpen, rbdClose, rbdAio, rbdAllocated
 *                                          RBD images and their asynchronous I/O (rbd.c)
 *   constants                              { FALLOC_FL_*, DATA_RUNS_MAX, SOL_SOCKET, SO_SNDBUF,
 *                                             SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVLOWAT,
 *                                             DATAPATH_* (datapath-binding.c), RBD_OP_* (rbd.c) }
 * Rejections and throws are Errors with code = errno name, errno and syscall (errors.c).
 * The JS side (src/sys/index.ts) validates arguments; this side re-checks types and signs
 * cheaply. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <sys/socket.h>
#include "ceph.h"
#include "ceph-osdmap.h"
#include "ops.h"

static void work_execute(napi_env env, void *data) {
  (void)env;
  struct xvd_work *w = data;
  switch (w->op) {
    case XVD_OP_FALLOCATE:
      w->err = xvd_fallocate(w->fd, w->mode, w->offset, w->length);
      break;
    case XVD_OP_DISCARD:
      w->err = xvd_blk_discard(w->fd, w->offset, w->length);
      break;
    case XVD_OP_ZEROOUT:
      w->err = xvd_blk_zeroout(w->fd, w->offset, w->length);
      break;
    case XVD_OP_DATA_RUNS:
      w->result = (int64_t)xvd_data_runs(w->fd, w->offset, w->end, (size_t)w->length, &w->runs,
                                         &w->err);
      break;
  }
}

/* The pairs of a finished XVD_OP_DATA_RUNS as a Float64Array (offsets are below 2^53). */
static napi_value runs_array(napi_env env, const struct xvd_work *w) {
  size_t count = 2 * (size_t)w->result;
  void *data;
  napi_value buffer, array;
  if (napi_create_arraybuffer(env, count * sizeof(double), &data, &buffer) != napi_ok) {
    return NULL;
  }
  double *out = data;
  for (size_t i = 0; i < count; i++) out[i] = (double)w->runs[i];
  if (napi_create_typedarray(env, napi_float64_array, count, buffer, 0, &array) != napi_ok) {
    return NULL;
  }
  return array;
}

static void work_complete(napi_env env, napi_status status, void *data) {
  struct xvd_work *w = data;
  napi_value value;
  if (status != napi_ok) {
    napi_reject_deferred(env, w->deferred, xvd_make_errno_error(env, ECANCELED, w->syscall));
  } else if (w->err != 0) {
    napi_reject_deferred(env, w->deferred, xvd_make_errno_error(env, w->err, w->syscall));
  } else if (w->op == XVD_OP_DATA_RUNS) {
    value = runs_array(env, w);
    if (value == NULL) {
      napi_reject_deferred(env, w->deferred, xvd_make_errno_error(env, ENOMEM, w->syscall));
    } else {
      napi_resolve_deferred(env, w->deferred, value);
    }
  } else {
    napi_get_undefined(env, &value);
    napi_resolve_deferred(env, w->deferred, value);
  }
  napi_delete_async_work(env, w->work);
  free(w->runs);
  free(w);
}

/* Reads argv[index] as a non-negative safe integer. */
static int get_int64(napi_env env, napi_value value, int64_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok) return -1;
  if (!(number >= 0 && number <= 9007199254740991.0)) return -1;
  if ((double)(int64_t)number != number) return -1;
  *out = (int64_t)number;
  return 0;
}

/* Queues w (its op and arguments set) on the thread pool; returns its promise. */
static napi_value queue_work(napi_env env, struct xvd_work *w) {
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, w->syscall, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, work_execute, work_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

static struct xvd_work *new_work(napi_env env, enum xvd_op op, const char *syscall, int fd) {
  struct xvd_work *w = calloc(1, sizeof *w);
  if (w == NULL) {
    xvd_throw_errno(env, ENOMEM, syscall);
    return NULL;
  }
  w->op = op;
  w->fd = fd;
  w->syscall = syscall;
  return w;
}

static napi_value queue(napi_env env, enum xvd_op op, const char *syscall, int fd, int mode,
                        int64_t offset, int64_t length) {
  struct xvd_work *w = new_work(env, op, syscall, fd);
  if (w == NULL) return NULL;
  w->mode = mode;
  w->offset = offset;
  w->length = length;
  return queue_work(env, w);
}

/* dataRuns: `length` is the most pairs wanted. */
static napi_value queue_runs(napi_env env, int fd, int64_t offset, int64_t end, int64_t runs_max) {
  struct xvd_work *w = new_work(env, XVD_OP_DATA_RUNS, "lseek(SEEK_DATA)", fd);
  if (w == NULL) return NULL;
  w->offset = offset;
  w->end = end;
  w->length = runs_max;
  return queue_work(env, w);
}

/* Parses (fd, [mode,] offset[, length]) with every value a non-negative integer. */
static int parse_args(napi_env env, napi_callback_info info, size_t want, int64_t *values) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "missing arguments");
    return -1;
  }
  for (size_t i = 0; i < want; i++) {
    if (get_int64(env, argv[i], &values[i]) != 0) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                             "arguments must be non-negative safe integers");
      return -1;
    }
  }
  if (values[0] > 0x7fffffff) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "fd out of range");
    return -1;
  }
  return 0;
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  int64_t v[4];
  if (parse_args(env, info, 4, v) != 0) return NULL;
  if (v[3] == 0 || v[1] > 0xff) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "fallocate: length must be > 0, mode a flag set");
    return NULL;
  }
  return queue(env, XVD_OP_FALLOCATE, "fallocate", (int)v[0], (int)v[1], v[2], v[3]);
}

static napi_value js_range(napi_env env, napi_callback_info info, enum xvd_op op,
                           const char *name) {
  int64_t v[3];
  if (parse_args(env, info, 3, v) != 0) return NULL;
  if (v[2] == 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "length must be > 0");
    return NULL;
  }
  return queue(env, op, name, (int)v[0], 0, v[1], v[2]);
}

static napi_value js_blk_discard(napi_env env, napi_callback_info info) {
  return js_range(env, info, XVD_OP_DISCARD, "ioctl(BLKDISCARD)");
}

static napi_value js_blk_zeroout(napi_env env, napi_callback_info info) {
  return js_range(env, info, XVD_OP_ZEROOUT, "ioctl(BLKZEROOUT)");
}

static napi_value js_data_runs(napi_env env, napi_callback_info info) {
  int64_t v[4];
  if (parse_args(env, info, 4, v) != 0) return NULL;
  if (v[3] == 0 || v[3] > XVD_DATA_RUNS_MAX || v[2] < v[1]) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "dataRuns: end must be >= offset, runsMax 1 to DATA_RUNS_MAX");
    return NULL;
  }
  return queue_runs(env, (int)v[0], v[1], v[2], v[3]);
}

static void set_int(napi_env env, napi_value object, const char *name, int value) {
  napi_value v;
  napi_create_int32(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

static void set_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  set_fn(env, exports, "fallocate", js_fallocate);
  set_fn(env, exports, "blkDiscard", js_blk_discard);
  set_fn(env, exports, "blkZeroout", js_blk_zeroout);
  set_fn(env, exports, "dataRuns", js_data_runs);
  set_fn(env, exports, "blkGetSize64", xvd_blk_get_size64);
  set_fn(env, exports, "blkGetSectorSize", xvd_blk_get_sector_size);
  set_fn(env, exports, "blkGetDiscardZeroes", xvd_blk_get_discard_zeroes);
  set_fn(env, exports, "preadNoWait", xvd_pread_nowait);
  set_fn(env, exports, "pwriteBatch", xvd_pwrite_batch);
  set_fn(env, exports, "createWriter", xvd_create_writer);
  set_fn(env, exports, "writerSubmit", xvd_writer_submit);
  set_fn(env, exports, "closeWriter", xvd_close_writer);
  set_fn(env, exports, "createSender", xvd_create_sender);
  set_fn(env, exports, "senderSubmit", xvd_sender_submit);
  set_fn(env, exports, "closeSender", xvd_close_sender);
  set_fn(env, exports, "createDatapath", xvd_create_datapath);
  set_fn(env, exports, "datapathSubmit", xvd_datapath_submit);
  set_fn(env, exports, "datapathControl", xvd_datapath_control);
  set_fn(env, exports, "datapathStats", xvd_datapath_stats);
  set_fn(env, exports, "datapathRemap", xvd_datapath_remap);
  set_fn(env, exports, "budgetSync", xvd_budget_sync);
  set_fn(env, exports, "requestStep", xvd_request_step_js);
  set_fn(env, exports, "setSockOptInt", xvd_set_sockopt_int);
  set_fn(env, exports, "getSockOptInt", xvd_get_sockopt_int);
  set_fn(env, exports, "cephConnect", xvd_ceph_connect);
  set_fn(env, exports, "cephShutdown", xvd_ceph_shutdown);
  set_fn(env, exports, "cephAddrs", xvd_ceph_addrs);
  set_fn(env, exports, "cephMonCommand", xvd_ceph_mon_command);
  set_fn(env, exports, "cephWaitForLatestOsdmap", xvd_ceph_wait_osdmap);
  set_fn(env, exports, "rbdCreate", xvd_rbd_create);
  set_fn(env, exports, "rbdOpen", xvd_rbd_open);
  set_fn(env, exports, "rbdClose", xvd_rbd_close);
  set_fn(env, exports, "rbdAio", xvd_rbd_aio);
  set_fn(env, exports, "rbdAllocated", xvd_rbd_allocated);
  napi_value constants;
  napi_create_object(env, &constants);
  set_int(env, constants, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  set_int(env, constants, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  set_int(env, constants, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  set_int(env, constants, "DATA_RUNS_MAX", XVD_DATA_RUNS_MAX);
  set_int(env, constants, "SOL_SOCKET", SOL_SOCKET);
  set_int(env, constants, "SO_SNDBUF", SO_SNDBUF);
  set_int(env, constants, "SO_RCVBUF", SO_RCVBUF);
  set_int(env, constants, "SO_SNDBUFFORCE", SO_SNDBUFFORCE);
  set_int(env, constants, "SO_RCVLOWAT", SO_RCVLOWAT);
  xvd_datapath_constants(env, constants);
  xvd_rbd_constants(env, constants);
  napi_set_named_property(env, exports, "constants", constants);
  return exports;
}
