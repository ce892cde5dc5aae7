/* rbd.c: RBD images through librbd's C API (loaded at run time, ceph.h), on the process's one
 * RADOS client (ceph.c).
 *
 * Exports (src/sys/ceph.ts wraps them; src/backing/rbd-backing.ts uses them):
 *   rbdCreate(pool, image, size, features) -> Promise<void>          rbd_create2, on the pool
 *   rbdOpen(pool, image, isReadOnly) -> Promise<{ handle, size }>    rbd_open(_read_only)
 *   rbdClose(handle) -> Promise<void>                                rbd_close; once nothing is
 *                                                                    in flight on the image
 *   rbdAio(handle, op, buffer | null, bufferOffset, length, position, callback)
 *       one asynchronous call, op one of constants.RBD_OP_*: READ (rbd_aio_read into
 *       buffer[bufferOffset..]), WRITE (rbd_aio_write from it), FLUSH (rbd_aio_flush), DISCARD
 *       (rbd_aio_discard), WRITE_ZEROES (rbd_aio_write_zeroes; EOPNOTSUPP where librbd lacks
 *       it). callback(error | null, bytes) runs on the JS thread, always asynchronously:
 *       bytes is what was read for READ, `length` for the others.
 *   rbdAllocated(handle, offset, length, runsMax) -> Promise<Float64Array> of (start, end)
 *       pairs: the runs of [offset, offset+length) that RBD says may hold data (objects that
 *       exist, the parent's included: rbd_diff_iterate2 whole-object), merged, at most runsMax
 *       (the last pair then ends where the answer stops). Everything else reads as zeros.
 *
 * Completions: librbd calls its completion callback on one of its own threads; the callback
 * takes the result, releases the completion and hands the request to the image's thread-safe
 * function (unbounded queue, never blocking librbd), whose call on the JS thread runs the JS
 * callback. The thread-safe function is ref'd only while requests are in flight, so an idle
 * image never keeps the process alive. The JS handle owns a small box; the image's own struct
 * is freed by the thread-safe function's finalizer, after rbdClose (rbd_close runs on the libuv
 * pool: it may wait on the network) and the last completion. Buffers and callbacks are held by
 * references until their request completes. Nothing here blocks the event loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "ops.h"
#include "rbd.h"

/* the kind of this file's handles (handle.c) */
static const napi_type_tag IMAGE_TAG = {0x7876645262644963ULL, 0x496d616765000001ULL};
const struct xvd_ceph_api *xvd_rbd_api;
#define api xvd_rbd_api

static const struct xvd_ceph_api *api_or_throw(napi_env env, const char *syscall) {
  const char *why;
  api = xvd_ceph_api(&why);
  if (api == NULL) napi_throw(env, xvd_ceph_error(env, ENOSYS, syscall, why));
  return api;
}

/* The connected client, or NULL after throwing ENOTCONN. */
static xvd_rados_t cluster_or_throw(napi_env env, const char *syscall) {
  if (api_or_throw(env, syscall) == NULL) return NULL;
  xvd_rados_t cluster = xvd_ceph_cluster();
  if (cluster == NULL) napi_throw(env, xvd_ceph_error(env, ENOTCONN, syscall, "not connected"));
  return cluster;
}

int xvd_rbd_number(napi_env env, napi_value value, int64_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok) return -1;
  if (!(number >= 0 && number <= 9007199254740991.0)) return -1;
  if ((double)(int64_t)number != number) return -1;
  *out = (int64_t)number;
  return 0;
}

/* --- create, open, close, allocated: jobs on the libuv pool --- */

struct image_job {
  struct xvd_ceph_job job;
  xvd_rados_t cluster;
  char *pool, *name;
  int is_read_only;
  uint64_t size, features;
  struct image *image;
  /* rbdAllocated */
  int64_t offset, length, runs_max, count, *runs;
};

static void image_job_release(struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  if (j->cluster != NULL) xvd_ceph_users--;
  free(j->pool);
  free(j->name);
  free(j->runs);
  free(j);
}

/* A job on pool/name (args[0], args[1]) of the connected client; NULL after throwing. */
static struct image_job *image_job_new(napi_env env, napi_value *args, const char *syscall) {
  xvd_rados_t cluster = cluster_or_throw(env, syscall);
  if (cluster == NULL) return NULL;
  struct image_job *j = calloc(1, sizeof *j);
  if (j == NULL) return xvd_throw_errno(env, ENOMEM, syscall), NULL;
  j->job.release = image_job_release;
  j->job.syscall = syscall;
  j->pool = xvd_ceph_string(env, args[0], "pool");
  j->name = j->pool == NULL ? NULL : xvd_ceph_string(env, args[1], "image");
  if (j->name == NULL) {
    image_job_release(&j->job);
    return NULL;
  }
  j->cluster = cluster;
  xvd_ceph_users++;
  return j;
}

static void create_run(struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  xvd_rados_ioctx_t io;
  int order = 0; /* the default object size */
  int ret = api->rados_ioctx_create(j->cluster, j->pool, &io);
  if (ret < 0) {
    job->syscall = "rados_ioctx_create";
    job->err = -ret;
    return;
  }
  ret = api->rbd_create2(io, j->name, j->size, j->features, &order);
  if (ret < 0) job->err = -ret;
  api->rados_ioctx_destroy(io);
}

napi_value xvd_rbd_create(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int64_t size, features;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || xvd_rbd_number(env, argv[2], &size) != 0 || size == 0 ||
      xvd_rbd_number(env, argv[3], &features) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "rbdCreate(pool, image, size, features)");
    return NULL;
  }
  struct image_job *j = image_job_new(env, argv, "rbd_create2");
  if (j == NULL) return NULL;
  j->size = (uint64_t)size;
  j->features = (uint64_t)features;
  j->job.run = create_run;
  return xvd_ceph_job_queue(env, &j->job);
}

static void open_run(struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  struct image *image = calloc(1, sizeof *image);
  if (image == NULL) {
    job->err = ENOMEM;
    return;
  }
  int ret = api->rados_ioctx_create(j->cluster, j->pool, &image->io);
  if (ret < 0) {
    job->syscall = "rados_ioctx_create";
    job->err = -ret;
    free(image);
    return;
  }
  ret = j->is_read_only ? api->rbd_open_read_only(image->io, j->name, &image->rbd, NULL)
                        : api->rbd_open(image->io, j->name, &image->rbd, NULL);
  if (ret >= 0) {
    ret = api->rbd_get_size(image->rbd, &j->size);
    if (ret < 0) api->rbd_close(image->rbd);
  }
  if (ret < 0) {
    job->err = -ret;
    api->rados_ioctx_destroy(image->io);
    free(image);
    return;
  }
  j->image = image;
}

static void image_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void box_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data); /* an image never closed stays open: closing can block, finalizers must not */
}

static napi_value open_settle(napi_env env, struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  struct image *image = j->image;
  struct image_box *box = calloc(1, sizeof *box);
  napi_value name, handle, size, result;
  napi_create_string_utf8(env, "xvd rbd completions", NAPI_AUTO_LENGTH, &name);
  if (box == NULL || napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, image,
                                                    image_finalize, image,
                                                    xvd_rbd_complete_js, &image->done) != napi_ok) {
    free(box);
    job->err = ENOMEM;
    api->rbd_close(image->rbd); /* rare; the image was just opened and has no I/O */
    api->rados_ioctx_destroy(image->io);
    free(image);
    return NULL;
  }
  napi_unref_threadsafe_function(env, image->done);
  box->image = image;
  xvd_ceph_users++; /* until rbdClose */
  if (xvd_handle_new(env, box, box_finalize, &IMAGE_TAG, &handle) != napi_ok) {
    job->err = ENOMEM;
    return NULL;
  }
  napi_create_object(env, &result);
  napi_create_double(env, (double)j->size, &size);
  napi_set_named_property(env, result, "handle", handle);
  napi_set_named_property(env, result, "size", size);
  return result;
}

napi_value xvd_rbd_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  bool is_read_only;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_value_bool(env, argv[2], &is_read_only) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "rbdOpen(pool, image, isReadOnly)");
    return NULL;
  }
  struct image_job *j = image_job_new(env, argv, "rbd_open");
  if (j == NULL) return NULL;
  j->is_read_only = is_read_only;
  j->job.run = open_run;
  j->job.settle = open_settle;
  return xvd_ceph_job_queue(env, &j->job);
}

/* The open image of a handle, or NULL after throwing. */
struct image *xvd_rbd_image_of(napi_env env, napi_value handle, const char *syscall) {
  struct image_box *box = xvd_handle_get(env, handle, &IMAGE_TAG);
  if (box == NULL || box->image == NULL) {
    napi_throw(env, xvd_ceph_error(env, EBADF, syscall, "not an open RBD image"));
    return NULL;
  }
  return box->image;
}

struct close_job {
  struct xvd_ceph_job job;
  struct image *image;
};

static void close_run(struct xvd_ceph_job *job) {
  struct image *image = ((struct close_job *)job)->image;
  int ret = api->rbd_close(image->rbd);
  api->rados_ioctx_destroy(image->io);
  if (ret < 0) job->err = -ret;
}

static void close_release(struct xvd_ceph_job *job) {
  struct close_job *c = (struct close_job *)job;
  /* the image's struct goes with its thread-safe function (image_finalize) */
  napi_release_threadsafe_function(c->image->done, napi_tsfn_release);
  xvd_ceph_users--;
  free(c);
}

napi_value xvd_rbd_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value handle;
  napi_get_cb_info(env, info, &argc, &handle, NULL, NULL);
  if (api_or_throw(env, "rbd_close") == NULL) return NULL;
  struct image_box *box = argc < 1 ? NULL : xvd_handle_get(env, handle, &IMAGE_TAG);
  if (box == NULL || box->image == NULL) {
    napi_throw(env, xvd_ceph_error(env, EBADF, "rbd_close", "not an open RBD image"));
    return NULL;
  }
  if (box->image->pending > 0 || box->image->jobs > 0) {
    napi_throw(env, xvd_ceph_error(env, EBUSY, "rbd_close", "requests are in flight"));
    return NULL;
  }
  struct close_job *c = calloc(1, sizeof *c);
  if (c == NULL) return xvd_throw_errno(env, ENOMEM, "rbd_close"), NULL;
  c->image = box->image;
  box->image = NULL;
  c->job.run = close_run;
  c->job.release = close_release;
  c->job.syscall = "rbd_close";
  return xvd_ceph_job_queue(env, &c->job);
}

/* --- allocation (block status) --- */

static int allocated_cb(uint64_t offset, size_t length, int exists, void *arg) {
  struct image_job *j = arg;
  if (!exists || length == 0) return 0;
  int64_t start = (int64_t)offset, end = (int64_t)(offset + length);
  if (j->count > 0 && j->runs[2 * j->count - 1] >= start) { /* touches the last run: merge */
    if (end > j->runs[2 * j->count - 1]) j->runs[2 * j->count - 1] = end;
    return 0;
  }
  if (j->count == j->runs_max) return -ERANGE; /* enough: stop the walk */
  j->runs[2 * j->count] = start;
  j->runs[2 * j->count + 1] = end;
  j->count++;
  return 0;
}

static void allocated_run(struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  j->runs = malloc(2 * (size_t)j->runs_max * sizeof *j->runs);
  if (j->runs == NULL) {
    job->err = ENOMEM;
    return;
  }
  int ret = api->rbd_diff_iterate2(j->image->rbd, NULL, (uint64_t)j->offset, (uint64_t)j->length,
                                   1, 1, allocated_cb, j);
  if (ret < 0 && ret != -ERANGE) job->err = -ret;
}

static napi_value allocated_settle(napi_env env, struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  size_t count = 2 * (size_t)j->count;
  void *data;
  napi_value buffer, array;
  if (napi_create_arraybuffer(env, count * sizeof(double), &data, &buffer) != napi_ok) {
    job->err = ENOMEM;
    return NULL;
  }
  double *out = data;
  for (size_t i = 0; i < count; i++) out[i] = (double)j->runs[i];
  napi_create_typedarray(env, napi_float64_array, count, buffer, 0, &array);
  return array;
}

static void allocated_release(struct xvd_ceph_job *job) {
  struct image_job *j = (struct image_job *)job;
  j->image->jobs--;
  image_job_release(job);
}

napi_value xvd_rbd_allocated(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int64_t v[3]; /* offset, length, runsMax */
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || xvd_rbd_number(env, argv[1], &v[0]) != 0 ||
      xvd_rbd_number(env, argv[2], &v[1]) != 0 ||
      xvd_rbd_number(env, argv[3], &v[2]) != 0 || v[1] == 0 || v[2] == 0 ||
      v[2] > XVD_DATA_RUNS_MAX) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE",
                           "rbdAllocated(handle, offset, length, runsMax): bad arguments");
    return NULL;
  }
  struct image *image = xvd_rbd_image_of(env, argv[0], "rbd_diff_iterate2");
  if (image == NULL) return NULL;
  struct image_job *j = calloc(1, sizeof *j);
  if (j == NULL) return xvd_throw_errno(env, ENOMEM, "rbd_diff_iterate2"), NULL;
  j->image = image;
  j->offset = v[0];
  j->length = v[1];
  j->runs_max = v[2];
  j->job.run = allocated_run;
  j->job.settle = allocated_settle;
  j->job.release = allocated_release;
  j->job.syscall = "rbd_diff_iterate2";
  image->jobs++;
  return xvd_ceph_job_queue(env, &j->job);
}

void xvd_rbd_constants(napi_env env, napi_value constants) {
  static const struct { const char *name; int value; } list[] = {
      {"RBD_OP_READ", RBD_OP_READ},       {"RBD_OP_WRITE", RBD_OP_WRITE},
      {"RBD_OP_FLUSH", RBD_OP_FLUSH},     {"RBD_OP_DISCARD", RBD_OP_DISCARD},
      {"RBD_OP_WRITE_ZEROES", RBD_OP_WRITE_ZEROES},
  };
  for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
    napi_value v;
    napi_create_int32(env, list[i].value, &v);
    napi_set_named_property(env, constants, list[i].name, v);
  }
}
