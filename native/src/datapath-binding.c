/* datapath-binding.c: the data-path thread's N-API face: createDatapath, datapathSubmit,
 * datapathControl, datapathStats, the delivery of its events on the JS thread, its finalizer,
 * and the constants the limits test compares. The thread and its parts are described in
 * datapath.h; this file runs on the JS thread only.
 *
 * createDatapath(socketFd, extents, size, options, blockSizeMin, spinMicros, dirty, initial,
 *                onEvent) -> handle:
 *   extents, dirty  the map, in the one form dp-map.c's header documents
 *   size       the export's size in bytes
 *   options    DP_STRUCTURED (READ replies as one OFFSET_DATA chunk), DP_WRITABLE, DP_TCP,
 *              DP_READER (large READs read by a reader thread beside it while a CPU is free:
 *              dp-reader.c), DP_READER_ALWAYS (whether a CPU is free or not: for tests)
 *   spinMicros busy-poll budget (0: none; at most DP_SPIN_MAX_US; dp-loop.c spin())
 *   initial    bytes the JS side had already received (or null)
 *   onEvent(kind, bytes, value) on the JS thread: DP_EV_FORWARD (bytes: stream bytes the JS
 *              side must handle, in stream order), DP_EV_EOF, DP_EV_ERROR (value: errno),
 *              DP_EV_FENCED, DP_EV_STOPPED (last; the thread is joined), DP_EV_REMAPPED
 *              (value: the sequence of the datapathRemap whose map the thread now uses)
 * datapathRemap(dp, extents, dirty, sequence): a new map for the thread (dp-map.c)
 * datapathSubmit(dp, bytes, callback|null): a reply frame from JS, sent whole; callback(error)
 * datapathControl(dp, op, value): DP_PAUSE (value 1/0: stop/resume reading), DP_FENCE (returns
 *   1 when no I/O is under way, else DP_EV_FENCED follows once it ended; from then on every byte
 *   is forwarded), DP_STOP (value 1: abort; 0: after the frames queued; DP_EV_STOPPED follows)
 * datapathStats(dp) -> Float64Array [requests served here, bytes received, bytes sent here,
 *   busy-polls that found a request, busy-polls that found none, receive buffer capacity, reply
 *   buffer capacity (both 0 once the thread freed them), READs served here, their bytes, WRITEs
 *   served here, their bytes, READs the reader thread read, then DP_LAT_BUCKETS service-time
 *   buckets (datapath.h)]; the last
 *   counts once the thread is gone
 *
 * Lifetime: the thread holds the thread-safe function (ref'd: the JS socket is paused, so this
 * keeps the loop alive) until its end; it is joined when DP_EV_STOPPED is delivered, so stopping
 * never blocks the JS thread. The environment's cleanup hook and the handle's finalizer
 * (handle.c) abort and join synchronously. Memory is freed by the thread-safe function's
 * finalizer (datapath_finalize), after the join. Forwarded bytes leave the budget when they are
 * delivered (JS counts them from then on) and `unacked` falls; crossing below DP_FORWARD_MAX
 * wakes the thread, which stopped reading above it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "datapath.h"

static const napi_type_tag DATAPATH_TAG = {0x7876644461746170ULL, 0x6174685468726403ULL};

static void frame_free(napi_env env, struct dp_frame *frame) {
  if (env != NULL) {
    if (frame->bytes_ref != NULL) napi_delete_reference(env, frame->bytes_ref);
    if (frame->callback_ref != NULL) napi_delete_reference(env, frame->callback_ref);
  }
  free(frame);
}

static void free_bytes(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void join(struct datapath *dp) {
  if (dp->is_joined) return;
  dp->is_joined = 1;
  pthread_join(dp->thread, NULL);
  XVD_ASSERT(dp->is_closed, "a joined thread closed its queue on its way out");
}

static void call(napi_env env, napi_value callback, size_t argc, napi_value *argv) {
  napi_value global, ignored;
  napi_get_global(env, &global);
  napi_call_function(env, global, callback, argc, argv, &ignored);
}

/* On the JS thread: one event. env is NULL while the environment is torn down. */
static void datapath_deliver(napi_env env, napi_value on_event, void *context, void *data) {
  struct datapath *dp = context;
  struct dp_event *event = data;
  struct dp_frame *frame = event->frames;
  if (env == NULL) {
    while (frame != NULL) {
      struct dp_frame *next = frame->next;
      frame_free(NULL, frame);
      frame = next;
    }
    if (event->bytes != NULL) xvd_budget_give((int64_t)event->length);
    free(event->bytes);
    free(event);
    return;
  }
  napi_value argv[3];
  if (event->kind == DP_EV_FRAMES) {
    while (frame != NULL) {
      struct dp_frame *next = frame->next;
      napi_value callback = NULL;
      if (frame->callback_ref != NULL) {
        napi_get_reference_value(env, frame->callback_ref, &callback);
      }
      if (frame->err == 0) napi_get_null(env, &argv[0]);
      else argv[0] = xvd_make_errno_error(env, frame->err, "send");
      frame_free(env, frame);
      if (callback != NULL) call(env, callback, 1, argv);
      frame = next;
    }
    free(event);
    return;
  }
  if (event->kind == DP_EV_STOPPED) join(dp);
  napi_create_int32(env, event->kind, &argv[0]);
  if (event->bytes != NULL) {
    if (napi_create_external_buffer(env, event->length, event->bytes, free_bytes, NULL,
                                    &argv[1]) != napi_ok) {
      napi_create_buffer_copy(env, event->length, event->bytes, NULL, &argv[1]);
      free(event->bytes);
    }
    xvd_budget_give((int64_t)event->length); /* JS holds them now, in its own count */
    int64_t before = __atomic_fetch_sub(&dp->unacked, (int64_t)event->length, __ATOMIC_SEQ_CST);
    XVD_ASSERT(before >= (int64_t)event->length, "bytes are delivered once, after counting");
    if (before >= DP_FORWARD_MAX && before - (int64_t)event->length < DP_FORWARD_MAX &&
        !dp->is_joined) {
      dp_wake(dp);
    }
  } else {
    napi_get_null(env, &argv[1]);
  }
  napi_create_int32(env, event->value, &argv[2]);
  free(event);
  call(env, on_event, 3, argv);
}

static void read_stats(struct datapath *dp, double *values) {
  uint64_t *counters[DP_STATS_COUNTS] = {
      &dp->stat_requests, &dp->stat_received,   &dp->stat_sent,   &dp->stat_spin_hits,
      &dp->stat_spin_misses, &dp->stat_rcap,    &dp->stat_scap,   &dp->stat_reads,
      &dp->stat_read_bytes,  &dp->stat_writes,  &dp->stat_write_bytes, &dp->stat_reader_reads};
  for (int i = 0; i < DP_STATS_COUNTS; i++) {
    values[i] = (double)__atomic_load_n(counters[i], __ATOMIC_RELAXED);
  }
  for (int i = 0; i < DP_LAT_BUCKETS; i++) {
    values[DP_STATS_COUNTS + i] = (double)__atomic_load_n(&dp->stat_latency[i], __ATOMIC_RELAXED);
  }
}

static void datapath_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  struct datapath *dp = data;
  if (dp->box != NULL) {
    read_stats(dp, dp->box->last_stats);
    dp->box->base.object = NULL;
  }
  for (size_t i = 0; env != NULL && i < dp->ref_count; i++) {
    if (dp->dirty_refs[i] != NULL) napi_delete_reference(env, dp->dirty_refs[i]);
  }
  free(dp->dirty_refs);
  free(dp->dirty_data);
  dp_map_next_free(dp->map_next);
  if (dp->wake_fd >= 0) close(dp->wake_fd);
  pthread_mutex_destroy(&dp->mutex);
  pthread_mutex_destroy(&dp->reader.mutex);
  pthread_cond_destroy(&dp->reader.work);
  pthread_cond_destroy(&dp->reader.done);
  dp_map_free(dp);
  free(dp->rbuf);
  free(dp->sbuf);
  free(dp);
}

/* Asks the thread to stop: after the queued frames, or at once (abort). */
static void request_stop(struct datapath *dp, int abort) {
  enum dp_stop_mode want = abort ? DP_STOP_ABORT : DP_STOP_DRAIN;
  pthread_mutex_lock(&dp->mutex);
  if (dp->stop_mode < want) dp->stop_mode = want; /* never backwards (datapath.h) */
  pthread_mutex_unlock(&dp->mutex);
  if (abort) {
    dp_store(&dp->is_aborted, 1);
    /* the peer sees the end now, not when a pwrite under way returns; the thread closes it */
    pthread_mutex_lock(&dp->mutex);
    if (!dp->is_closed) shutdown(dp->sock, SHUT_RDWR);
    pthread_mutex_unlock(&dp->mutex);
  }
  dp_wake(dp);
}

/* The box's stop (handle.c), synchronous: abort and join (environment teardown, a collected
 * handle; a JS stop is datapathControl's DP_STOP). */
static void box_stop(struct xvd_thread_box *base, int abort) {
  (void)abort;
  struct datapath *dp = base->object;
  if (dp == NULL) return;
  request_stop(dp, 1);
  join(dp);
}

/* The box is freed next: the datapath, if still there, must not point at it. */
static void box_release(struct xvd_thread_box *base) {
  struct datapath *dp = base->object;
  if (dp != NULL) dp->box = NULL;
}

/* createDatapath's arguments, checked. */
struct create_args {
  napi_value argv[9];
  int32_t fd, options;
  double size, block_min, spin_micros;
  napi_valuetype initial_type;
};

/* Reads and checks createDatapath's arguments; false after throwing. */
static int read_create_args(napi_env env, napi_callback_info info, struct create_args *a) {
  size_t argc = 9;
  napi_value *argv = a->argv;
  napi_valuetype callback_type = napi_undefined;
  bool is_buffer = false;
  *a = (struct create_args){.fd = -1, .size = -1, .spin_micros = -1,
                            .initial_type = napi_undefined};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 9 ||
      napi_get_value_int32(env, argv[0], &a->fd) != napi_ok ||
      napi_get_value_double(env, argv[2], &a->size) != napi_ok ||
      napi_get_value_int32(env, argv[3], &a->options) != napi_ok ||
      napi_get_value_double(env, argv[4], &a->block_min) != napi_ok ||
      napi_get_value_double(env, argv[5], &a->spin_micros) != napi_ok || a->fd < 0 ||
      !dp_is_whole(a->size, 9007199254740991.0) || !dp_is_whole(a->block_min, 1 << 30) ||
      a->block_min < 1 || !dp_is_whole(a->spin_micros, DP_SPIN_MAX_US) ||
      (a->options & ~(DP_STRUCTURED | DP_WRITABLE | DP_TCP | DP_READER | DP_READER_ALWAYS)) !=
          0 ||
      napi_typeof(env, argv[7], &a->initial_type) != napi_ok ||
      napi_typeof(env, argv[8], &callback_type) != napi_ok || callback_type != napi_function ||
      (a->initial_type != napi_null &&
       (napi_is_buffer(env, argv[7], &is_buffer) != napi_ok || !is_buffer))) {
    napi_throw_type_error(env, NULL, "createDatapath(socketFd, extents, size, options, "
                                     "blockSizeMin, spinMicros, dirty, initial, onEvent)");
    return 0;
  }
  return 1;
}

/* A datapath from checked arguments, its map read and its buffers allocated (the initial bytes
 * copied in); NULL after throwing, with nothing left allocated. No thread, socket or eventfd
 * yet. */
static struct datapath *new_datapath(napi_env env, const struct create_args *a) {
  struct datapath *dp = calloc(1, sizeof *dp);
  if (dp == NULL) {
    xvd_throw_errno(env, ENOMEM, "createDatapath");
    return NULL;
  }
  pthread_mutex_init(&dp->mutex, NULL);
  pthread_mutex_init(&dp->reader.mutex, NULL);
  pthread_cond_init(&dp->reader.work, NULL);
  pthread_cond_init(&dp->reader.done, NULL);
  dp->sock = -1;
  dp->wake_fd = -1;
  dp->size = (int64_t)a->size;
  dp->block_min = (int64_t)a->block_min;
  dp->options = a->options;
  dp->params = (struct xvd_request_params){
      .size = (uint64_t)a->size,
      .block_min = (uint64_t)a->block_min,
      /* the thread serves only plain READs and WRITEs: read-only is all it needs to know */
      .eflags = (a->options & DP_WRITABLE) != 0 ? 0 : XVD_NBD_FLAG_T_READ_ONLY,
      .is_structured = (a->options & DP_STRUCTURED) != 0,
  };
  dp->spin_ns = (int64_t)a->spin_micros * 1000;
  dp->is_receiving = 1;
  dp->framing = DP_FRAMING;
  const char *problem = dp_map_read(env, dp, a->argv[1], a->argv[6]);
  size_t initial_length = 0;
  void *initial = NULL;
  if (a->initial_type != napi_null) {
    napi_get_buffer_info(env, a->argv[7], &initial, &initial_length);
  }
  dp->rcap = initial_length > DP_RECV_MIN ? initial_length : DP_RECV_MIN;
  dp->scap = DP_SEND_BATCH;
  if (problem == NULL) {
    dp->rbuf = malloc(dp->rcap);
    dp->sbuf = malloc(dp->scap);
    if (dp->rbuf == NULL || dp->sbuf == NULL) problem = "out of memory";
  }
  if (problem != NULL) {
    datapath_finalize(env, dp, NULL);
    napi_throw_range_error(env, NULL, problem);
    return NULL;
  }
  /* bytes JS had received beyond the first size: counted as the thread's from here on */
  dp->budget_own = (int64_t)(dp->rcap - DP_RECV_MIN);
  xvd_budget_charge(dp->budget_own);
  dp_note_capacity(dp);
  if (initial_length > 0) memcpy(dp->rbuf, initial, initial_length);
  dp->rend = initial_length;
  dp_assert_buffers(dp);
  return dp;
}

/* Gives dp its socket (a dup of fd), eventfd and thread-safe function, and starts its thread;
 * false after throwing, dp freed. */
static int start_datapath(napi_env env, struct datapath *dp, int fd, napi_value on_event) {
  napi_value name;
  dp->sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  dp->wake_fd = dp->sock < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (dp->sock < 0 || dp->wake_fd < 0) {
    int err = errno;
    const char *syscall = dp->sock < 0 ? "dup" : "eventfd";
    if (dp->sock >= 0) close(dp->sock);
    datapath_finalize(env, dp, NULL);
    xvd_throw_errno(env, err, syscall);
    return 0;
  }
  napi_create_string_utf8(env, "xvd datapath", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, on_event, NULL, name, 0, 1, dp, datapath_finalize, dp,
                                      datapath_deliver, &dp->tsfn) != napi_ok) {
    close(dp->sock);
    datapath_finalize(env, dp, NULL);
    napi_throw_error(env, NULL, "createDatapath: no thread-safe function");
    return 0;
  }
  /* ref'd until the thread released it: the JS socket is paused, so this keeps the loop alive */
  int err = pthread_create(&dp->thread, NULL, dp_main, dp);
  if (err != 0) {
    close(dp->sock);
    napi_release_threadsafe_function(dp->tsfn, napi_tsfn_release); /* finalizes: frees dp */
    xvd_throw_errno(env, err, "pthread_create");
    return 0;
  }
  return 1;
}

napi_value xvd_create_datapath(napi_env env, napi_callback_info info) {
  struct create_args args;
  if (!read_create_args(env, info, &args)) return NULL;
  struct dp_box *box = calloc(1, sizeof *box);
  if (box == NULL) {
    xvd_throw_errno(env, ENOMEM, "createDatapath");
    return NULL;
  }
  struct datapath *dp = new_datapath(env, &args);
  if (dp == NULL || !start_datapath(env, dp, args.fd, args.argv[8])) {
    free(box);
    return NULL;
  }
  box->base.object = dp;
  box->base.stop = box_stop;
  box->base.release = box_release;
  dp->box = box;
  return xvd_thread_handle_new(env, &box->base, &DATAPATH_TAG, "createDatapath");
}

/* The running datapath of argv[0]; NULL after throwing. */
struct datapath *xvd_datapath_running(napi_env env, napi_value value) {
  struct dp_box *box = xvd_handle_get(env, value, &DATAPATH_TAG);
  struct datapath *dp = box == NULL ? NULL : box->base.object;
  if (dp == NULL || dp->is_joined) {
    napi_throw_error(env, NULL, box == NULL ? "not a datapath" : "the datapath has stopped");
    return NULL;
  }
  return dp;
}

napi_value xvd_datapath_submit(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], undefined;
  napi_get_undefined(env, &undefined);
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "datapathSubmit(datapath, bytes, callback)");
    return NULL;
  }
  struct datapath *dp = xvd_datapath_running(env, argv[0]);
  if (dp == NULL) return NULL;
  bool is_buffer = false;
  napi_valuetype callback_type;
  napi_is_buffer(env, argv[1], &is_buffer);
  napi_typeof(env, argv[2], &callback_type);
  if (!is_buffer || (callback_type != napi_function && callback_type != napi_null)) {
    napi_throw_type_error(env, NULL, "datapathSubmit: bytes must be a Buffer, callback a "
                                     "function or null");
    return NULL;
  }
  struct dp_frame *frame = calloc(1, sizeof *frame);
  if (frame == NULL) {
    xvd_throw_errno(env, ENOMEM, "datapathSubmit");
    return NULL;
  }
  void *bytes = NULL;
  napi_get_buffer_info(env, argv[1], &bytes, &frame->length);
  frame->bytes = bytes;
  if (napi_create_reference(env, argv[1], 1, &frame->bytes_ref) != napi_ok ||
      (callback_type == napi_function &&
       napi_create_reference(env, argv[2], 1, &frame->callback_ref) != napi_ok)) {
    frame_free(env, frame);
    napi_throw_error(env, NULL, "datapathSubmit: no reference");
    return NULL;
  }
  pthread_mutex_lock(&dp->mutex);
  int is_closed = dp->is_closed;
  int was_empty = dp->tail == NULL;
  if (is_closed) {
  } else if (was_empty) {
    dp->head = dp->tail = frame;
  } else {
    dp->tail->next = frame;
    dp->tail = frame;
  }
  pthread_mutex_unlock(&dp->mutex);
  if (is_closed) {
    frame_free(env, frame);
    napi_throw_error(env, NULL, "datapathSubmit: the datapath has stopped");
    return NULL;
  }
  if (was_empty) dp_wake(dp);
  return undefined;
}

napi_value xvd_datapath_control(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  int32_t op = 0, value = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[1], &op) != napi_ok ||
      napi_get_value_int32(env, argv[2], &value) != napi_ok || op < DP_PAUSE || op > DP_STOP) {
    napi_throw_type_error(env, NULL, "datapathControl(datapath, op 1|2|3, value)");
    return NULL;
  }
  struct datapath *dp = xvd_datapath_running(env, argv[0]);
  if (dp == NULL) return NULL;
  int out = 0;
  switch (op) {
    case DP_PAUSE:
      dp_store(&dp->is_paused, value != 0);
      if (value == 0) dp_wake(dp);
      break;
    case DP_FENCE:
      dp_store(&dp->is_fenced, 1);
      out = dp_load(&dp->ops_active) == 0;
      dp_wake(dp);
      break;
    default:
      request_stop(dp, value != 0);
      break;
  }
  napi_create_int32(env, out, &result);
  return result;
}

napi_value xvd_datapath_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], buffer, array;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, "datapathStats(datapath)");
    return NULL;
  }
  struct dp_box *box = xvd_handle_get(env, argv[0], &DATAPATH_TAG);
  if (box == NULL) {
    napi_throw_error(env, NULL, "not a datapath");
    return NULL;
  }
  double *values = NULL;
  if (napi_create_arraybuffer(env, DP_STATS * sizeof(double), (void **)&values, &buffer) !=
          napi_ok ||
      napi_create_typedarray(env, napi_float64_array, DP_STATS, buffer, 0, &array) != napi_ok) {
    napi_throw_error(env, NULL, "datapathStats: no array");
    return NULL;
  }
  if (box->base.object != NULL) read_stats(box->base.object, values);
  else memcpy(values, box->last_stats, sizeof box->last_stats);
  return array;
}

/* The bounds of datapath.h, for the test that keeps them equal to src/limits.ts. */
void xvd_datapath_constants(napi_env env, napi_value constants) {
  const struct {
    const char *name;
    double value;
  } all[] = {
      {"DATAPATH_PAYLOAD_MAX", (double)DP_PAYLOAD_MAX},
      {"DATAPATH_SPARSE_MIN", (double)DP_SPARSE_MIN},
      {"DATAPATH_RECV_MIN", (double)DP_RECV_MIN},
      {"DATAPATH_LOWAT_MIN", (double)DP_LOWAT_MIN},
      {"DATAPATH_LOWAT_MAX", (double)DP_LOWAT_MAX},
      {"DATAPATH_FORWARD_MAX", (double)DP_FORWARD_MAX},
      {"DATAPATH_SEND_BATCH", (double)DP_SEND_BATCH},
      {"DATAPATH_SPIN_MAX_US", (double)DP_SPIN_MAX_US},
      {"DATAPATH_SPIN_LENGTH_MAX", (double)DP_SPIN_LENGTH_MAX},
      {"DATAPATH_SPINNERS_MAX", (double)dp_spinners_max()},
      {"DATAPATH_STATS_COUNTS", (double)DP_STATS_COUNTS},
      {"DATAPATH_LATENCY_BUCKETS", (double)DP_LAT_BUCKETS},
  };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    napi_value value;
    napi_create_double(env, all[i].value, &value);
    napi_set_named_property(env, constants, all[i].name, value);
  }
}
