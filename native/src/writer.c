/* writer.c: one writer thread per writable backing file. createWriter() -> handle;
 * writerSubmit(handle, buffer, pieces, callback) queues one request's pieces (the same
 * Float64Array of (fd, bufferOffset, length, position) quadruples as pwriteBatch, copied at the
 * call); closeWriter(handle) waits for the queue to drain and joins the thread.
 *
 * Why a thread per file rather than the libuv pool: ext4 takes the inode lock for every buffered
 * write, so two pool threads writing one file take turns at the lock, and on this project's
 * paravirtual machines every turn is a sleep and a wake-up that costs more than a 4 KiB copy.
 * One thread per file writes its queue back to back without contention (measured with the pool
 * cut to one thread: 4 KiB random writes +30%, nbdcopy into an export +12%), while reads, syncs
 * and other files keep the pool's threads.
 *
 * Completions go back through a thread-safe function, which runs callback(error, index) on the JS
 * thread with pwriteBatch's contract. The thread-safe function is ref'd only while requests are
 * pending, so an idle writer never keeps the process alive and a pending write always does. The
 * writer's memory is freed by the thread-safe function's finalizer, after the last completion has
 * been delivered; the JS handle owns only a small box pointing at it (handle.c). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ops.h"

struct writer {
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  struct xvd_batch_job *head, *tail; /* guarded by mutex */
  int is_stopping;         /* guarded by mutex */
  napi_threadsafe_function done;
  size_t pending; /* JS thread only */
};

/* the kind of this file's handles (handle.c) */
static const napi_type_tag WRITER_TAG = {0x7876645772697465ULL, 0x7254687265616401ULL};

static void *writer_main(void *data) {
  struct writer *w = data;
  for (;;) {
    pthread_mutex_lock(&w->mutex);
    while (w->head == NULL && !w->is_stopping) pthread_cond_wait(&w->wake, &w->mutex);
    struct xvd_batch_job *job = w->head;
    w->head = w->tail = NULL;
    pthread_mutex_unlock(&w->mutex);
    if (job == NULL) break; /* stopping, queue empty */
    while (job != NULL) {
      struct xvd_batch_job *next = job->next;
      xvd_batch_execute(&job->batch);
      napi_call_threadsafe_function(w->done, job, napi_tsfn_blocking);
      job = next;
    }
  }
  napi_release_threadsafe_function(w->done, napi_tsfn_release);
  return NULL;
}

/* On the JS thread: one completed job. env is NULL while the environment is torn down. */
static void writer_complete(napi_env env, napi_value js_callback, void *context, void *data) {
  (void)js_callback;
  struct writer *w = context;
  struct xvd_batch_job *job = data;
  if (env == NULL) {
    free(job);
    return;
  }
  if (--w->pending == 0) napi_unref_threadsafe_function(env, w->done);
  xvd_batch_job_finish(env, job, 0);
}

static void writer_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct writer *w = data;
  pthread_mutex_destroy(&w->mutex);
  pthread_cond_destroy(&w->wake);
  free(w);
}

/* The box's stop (handle.c): the thread ends once its queue is empty (aborting too: a write
 * under way or queued is not cut short) and is joined; the memory goes with the tsfn. `object`
 * is NULL once closed. */
static void writer_stop(struct xvd_thread_box *box, int abort) {
  (void)abort;
  struct writer *w = box->object;
  if (w == NULL) return;
  box->object = NULL;
  pthread_mutex_lock(&w->mutex);
  w->is_stopping = 1;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->mutex);
  pthread_join(w->thread, NULL);
}

napi_value xvd_create_writer(napi_env env, napi_callback_info info) {
  (void)info;
  struct writer *w = calloc(1, sizeof *w);
  struct xvd_thread_box *box = calloc(1, sizeof *box);
  napi_value name;
  if (w == NULL || box == NULL) {
    free(w);
    free(box);
    xvd_throw_errno(env, ENOMEM, "createWriter");
    return NULL;
  }
  pthread_mutex_init(&w->mutex, NULL);
  pthread_cond_init(&w->wake, NULL);
  napi_create_string_utf8(env, "xvd writer", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, w, writer_finalize, w,
                                      writer_complete, &w->done) != napi_ok) {
    writer_finalize(env, w, NULL);
    free(box);
    napi_throw_error(env, NULL, "createWriter: no thread-safe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, w->done);
  int err = pthread_create(&w->thread, NULL, writer_main, w);
  if (err != 0) {
    /* releasing the only reference finalizes it, which frees w */
    napi_release_threadsafe_function(w->done, napi_tsfn_release);
    free(box);
    xvd_throw_errno(env, err, "pthread_create");
    return NULL;
  }
  box->object = w;
  box->stop = writer_stop;
  return xvd_thread_handle_new(env, box, &WRITER_TAG, "createWriter");
}

static struct xvd_thread_box *get_box(napi_env env, napi_value value) {
  return xvd_handle_get(env, value, &WRITER_TAG);
}

napi_value xvd_writer_submit(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    napi_throw_type_error(env, NULL, "writerSubmit(writer, buffer, pieces, callback)");
    return NULL;
  }
  struct xvd_thread_box *box = get_box(env, argv[0]);
  if (box == NULL || box->object == NULL) {
    napi_throw_error(env, NULL, box == NULL ? "writerSubmit: not a writer"
                                            : "writerSubmit: the writer is closed");
    return NULL;
  }
  struct xvd_batch_job *job = xvd_batch_job_new(env, argv + 1);
  if (job == NULL) return NULL;
  struct writer *w = box->object;
  if (w->pending++ == 0) napi_ref_threadsafe_function(env, w->done);
  pthread_mutex_lock(&w->mutex);
  if (w->tail == NULL) {
    w->head = w->tail = job;
    pthread_cond_signal(&w->wake);
  } else {
    w->tail->next = job;
    w->tail = job;
  }
  pthread_mutex_unlock(&w->mutex);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

napi_value xvd_close_writer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], undefined;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct xvd_thread_box *box = argc < 1 ? NULL : get_box(env, argv[0]);
  if (box == NULL) {
    napi_throw_type_error(env, NULL, "closeWriter(writer)");
    return NULL;
  }
  xvd_thread_box_close(box, 0);
  napi_get_undefined(env, &undefined);
  return undefined;
}
