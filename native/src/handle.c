/* handle.c: the opaque handles JS holds for native objects (writer, sender and data-path
 * threads): externals tagged with their kind, so a handle of one kind passed where another is
 * expected is refused instead of being read as the wrong struct; and the lifecycle those three
 * share (struct xvd_thread_box): the thread is stopped and joined by close, by the
 * environment's cleanup hook or by the handle's finalizer, whichever comes first.
 *
 * The cleanup hook matters at environment teardown (a worker's end, process exit): hooks run
 * in reverse order of registration, and this one is registered after the object's thread-safe
 * function was created, so the thread has released that function before Node deletes it. */
#include <stdio.h>
#include <stdlib.h>
#include "ops.h"

/* Owns `data` from the call: on failure `finalize` has run, or runs when the untagged external
 * is collected; the caller must not free it either way. */
napi_status xvd_handle_new(napi_env env, void *data, napi_finalize finalize,
                           const napi_type_tag *tag, napi_value *result) {
  napi_status status = napi_create_external(env, data, finalize, NULL, result);
  if (status != napi_ok) {
    finalize(env, data, NULL);
    return status;
  }
  return napi_type_tag_object(env, *result, tag);
}

void *xvd_handle_get(napi_env env, napi_value value, const napi_type_tag *tag) {
  void *data = NULL;
  bool is_tagged = false;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, value, tag, &is_tagged) != napi_ok || !is_tagged ||
      napi_get_value_external(env, value, &data) != napi_ok) {
    return NULL;
  }
  return data;
}

static void thread_box_cleanup_hook(void *data) {
  struct xvd_thread_box *box = data;
  box->is_hooked = 0;
  box->stop(box, 1);
}

void xvd_thread_box_close(struct xvd_thread_box *box, int abort) {
  if (box->is_hooked) napi_remove_env_cleanup_hook(box->env, thread_box_cleanup_hook, box);
  box->is_hooked = 0;
  box->stop(box, abort);
}

static void thread_box_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct xvd_thread_box *box = data;
  xvd_thread_box_close(box, 1);
  if (box->release != NULL) box->release(box);
  free(box);
}

napi_value xvd_thread_handle_new(napi_env env, struct xvd_thread_box *box,
                                 const napi_type_tag *tag, const char *what) {
  char message[96];
  napi_value handle;
  box->env = env;
  box->is_hooked = napi_add_env_cleanup_hook(env, thread_box_cleanup_hook, box) == napi_ok;
  if (!box->is_hooked) {
    thread_box_finalize(env, box, NULL);
    snprintf(message, sizeof message, "%s: no cleanup hook", what);
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  if (xvd_handle_new(env, box, thread_box_finalize, tag, &handle) != napi_ok) {
    snprintf(message, sizeof message, "%s: no handle", what); /* the box is finalized by then */
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  return handle;
}
