/* pwrite-batch.c: pwriteBatch(buffer, pieces, callback): every piece of one request written by
 * one job on the libuv pool. pieces is a Float64Array of (fd, bufferOffset, length, position)
 * quadruples, copied at the call; the pieces are written in order, each to the end (EINTR and
 * short counts retried), and the first failure stops the job. callback(error, index) runs on the
 * JS thread: (null, -1) when all are written; (Error with code/errno/syscall, i) when piece i
 * failed; (null, i) when piece i's pwrite returned 0 (a short write: the caller reports it).
 *
 * Why: a request that a fragmented VD maps onto N extents cost N pool jobs through fs.write, and
 * on this project's machines each job's hand-off (wake a pool thread, then wake the JS thread
 * with the result) costs more than the copy of a 256 KiB piece into the page cache. One job per
 * request makes N pieces cost one hand-off. The buffer is held by a reference until the callback;
 * the caller keeps the descriptors open until then (the engine closes backings only when no
 * request is in flight). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ops.h"
#include "protocol.h"
#include "xvd-assert.h"

/** Pieces per call (LIMITS.backingBatchPiecesMax): a request spans at most this many extents
 * (checked by the caller too). */
#define PIECES_MAX ((size_t)XVD_LIMIT_BACKING_BATCH_PIECES_MAX)

/* (buffer, pieces, callback) read once: the buffer's bytes, the pieces array, their count */
struct batch_args {
  uint8_t *data;
  size_t data_length;
  const double *values;
  size_t count;
};

void xvd_batch_execute(struct xvd_batch *b) {
  XVD_ASSERT(b->count > 0 && b->count <= PIECES_MAX, "a batch holds 1 to PIECES_MAX pieces");
  b->failed = b->count;
  for (size_t i = 0; i < b->count; i++) {
    const struct xvd_piece *p = &b->pieces[i];
    XVD_ASSERT(p->length > 0, "a piece has bytes (batch_init)");
    XVD_ASSERT(p->buffer_offset >= 0 && p->position >= 0, "a piece's offsets are not negative");
    int64_t done = 0;
    while (done < p->length) {
      ssize_t wrote = pwrite(p->fd, b->base + p->buffer_offset + done,
                             (size_t)(p->length - done), (off_t)(p->position + done));
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) {
        b->err = wrote < 0 ? errno : 0;
        b->failed = i;
        return;
      }
      XVD_ASSERT(wrote <= p->length - done, "pwrite writes at most what it was asked");
      done += wrote;
    }
  }
}

/* argv[0..1] = (error or null, index) */
static void batch_result(napi_env env, const struct xvd_batch *b, napi_value *argv) {
  XVD_ASSERT(b->failed <= b->count, "the failed index is a piece's, or count for none");
  if (b->failed < b->count && b->err != 0) {
    argv[0] = xvd_make_errno_error(env, b->err, "pwrite");
    napi_create_int32(env, (int32_t)b->failed, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_int32(env, b->failed < b->count ? (int32_t)b->failed : -1, &argv[1]);
  }
}

static void pool_execute(napi_env env, void *data) {
  (void)env;
  struct xvd_batch_job *job = data;
  xvd_batch_execute(&job->batch);
}

static void pool_complete(napi_env env, napi_status status, void *data) {
  struct xvd_batch_job *job = data;
  napi_delete_async_work(env, job->work);
  xvd_batch_job_finish(env, job, status != napi_ok);
}

void xvd_batch_job_finish(napi_env env, struct xvd_batch_job *job, int is_cancelled) {
  napi_value callback, global, argv[2], ignored;
  napi_get_reference_value(env, job->callback_ref, &callback);
  napi_get_global(env, &global);
  if (is_cancelled) {
    argv[0] = xvd_make_errno_error(env, ECANCELED, "pwrite");
    napi_create_int32(env, 0, &argv[1]);
  } else {
    batch_result(env, &job->batch, argv);
  }
  napi_delete_reference(env, job->buffer_ref);
  napi_delete_reference(env, job->callback_ref);
  free(job);
  napi_call_function(env, global, callback, 2, argv, &ignored);
}

static int batch_parse(napi_env env, napi_value *args, struct batch_args *out) {
  void *data = NULL, *values = NULL;
  size_t element_count = 0;
  napi_typedarray_type type;
  napi_valuetype callback_type;
  if (napi_get_buffer_info(env, args[0], &data, &out->data_length) != napi_ok ||
      napi_get_typedarray_info(env, args[1], &type, &element_count, &values, NULL, NULL) !=
        napi_ok ||
      type != napi_float64_array || napi_typeof(env, args[2], &callback_type) != napi_ok ||
      callback_type != napi_function) {
    napi_throw_type_error(env, NULL, "(buffer, Float64Array pieces, callback) expected");
    return -1;
  }
  out->data = data;
  out->values = values;
  out->count = element_count / 4;
  if (out->count == 0 || out->count > PIECES_MAX || element_count % 4 != 0) {
    napi_throw_range_error(env, NULL, "pwriteBatch: 1 to 4096 pieces of 4 numbers");
    return -1;
  }
  return 0;
}

/* Copies and checks the pieces: integral, non-negative, inside the buffer, fd < 2^31. */
static int batch_init(napi_env env, const struct batch_args *args, struct xvd_batch *b) {
  for (size_t i = 0; i < args->count; i++) {
    const double *v = &args->values[4 * i];
    int ok = 1;
    for (int k = 0; k < 4; k++) {
      if (!(v[k] >= 0 && v[k] <= 9007199254740991.0) || (double)(int64_t)v[k] != v[k]) ok = 0;
    }
    if (ok && (v[0] > 0x7fffffff || v[2] == 0)) ok = 0;
    if (ok) {
      b->pieces[i].fd = (int)v[0];
      b->pieces[i].buffer_offset = (int64_t)v[1];
      b->pieces[i].length = (int64_t)v[2];
      b->pieces[i].position = (int64_t)v[3];
      if ((uint64_t)b->pieces[i].buffer_offset + (uint64_t)b->pieces[i].length >
          args->data_length) {
        ok = 0;
      }
    }
    if (!ok) {
      napi_throw_range_error(env, NULL, "pwriteBatch: a piece is outside the buffer or invalid");
      return -1;
    }
  }
  b->base = args->data;
  b->count = args->count;
  XVD_ASSERT(b->count > 0 && b->count <= PIECES_MAX, "batch_parse bounded the count");
  return 0;
}

struct xvd_batch_job *xvd_batch_job_new(napi_env env, napi_value *args) {
  struct batch_args parsed;
  if (batch_parse(env, args, &parsed) != 0) return NULL;
  struct xvd_batch_job *job = calloc(1, sizeof *job + parsed.count * sizeof(struct xvd_piece));
  if (job == NULL) {
    xvd_throw_errno(env, ENOMEM, "pwrite");
    return NULL;
  }
  if (batch_init(env, &parsed, &job->batch) != 0) {
    free(job);
    return NULL;
  }
  if (napi_create_reference(env, args[0], 1, &job->buffer_ref) != napi_ok) {
    free(job);
    napi_throw_error(env, NULL, "pwriteBatch: cannot hold the buffer");
    return NULL;
  }
  if (napi_create_reference(env, args[2], 1, &job->callback_ref) != napi_ok) {
    napi_delete_reference(env, job->buffer_ref);
    free(job);
    napi_throw_error(env, NULL, "pwriteBatch: cannot hold the callback");
    return NULL;
  }
  return job;
}

napi_value xvd_pwrite_batch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "pwriteBatch(buffer, Float64Array pieces, callback)");
    return NULL;
  }
  struct xvd_batch_job *job = xvd_batch_job_new(env, argv);
  if (job == NULL) return NULL;
  napi_value name;
  napi_create_string_utf8(env, "pwriteBatch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, pool_execute, pool_complete, job, &job->work) !=
        napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_throw_error(env, NULL, "pwriteBatch: could not queue the work");
    return NULL; /* leaks the job on a failing N-API: only when the environment is tearing down */
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}
