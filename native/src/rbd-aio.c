/* rbd-aio.c: rbdAio, one asynchronous librbd call on an open image (rbd.c's header has the
 * contract). The request holds its buffer and callback by reference; librbd's completion
 * callback, on a librbd thread, takes the result, releases the completion and queues the request
 * on the image's thread-safe function, which never blocks; the JS callback runs from there. A
 * call that librbd refuses at submission completes the same way, asynchronously. */
#include <errno.h>
#include <stdlib.h>
#include "ops.h"
#include "rbd.h"

#define api xvd_rbd_api


static void request_free(napi_env env, struct request *r) {
  if (env != NULL) {
    if (r->buffer_ref != NULL) napi_delete_reference(env, r->buffer_ref);
    napi_delete_reference(env, r->callback_ref);
  }
  free(r);
}

static const char *op_name(int op) {
  switch (op) {
    case RBD_OP_READ: return "rbd_aio_read";
    case RBD_OP_WRITE: return "rbd_aio_write";
    case RBD_OP_FLUSH: return "rbd_aio_flush";
    case RBD_OP_DISCARD: return "rbd_aio_discard";
    default: return "rbd_aio_write_zeroes";
  }
}

/* On the JS thread: one finished request. env is NULL while the environment is torn down. */
void xvd_rbd_complete_js(napi_env env, napi_value js_callback, void *context, void *data) {
  (void)js_callback;
  struct image *image = context;
  struct request *r = data;
  if (env == NULL) {
    request_free(NULL, r);
    return;
  }
  if (--image->pending == 0) napi_unref_threadsafe_function(env, image->done);
  napi_value callback, global, argv[2];
  napi_get_reference_value(env, r->callback_ref, &callback);
  napi_get_global(env, &global);
  if (r->result < 0) {
    argv[0] = xvd_ceph_error(env, (int)-r->result, op_name(r->op), NULL);
    napi_create_double(env, 0, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    double bytes = r->op == RBD_OP_READ ? (double)r->result : (double)r->length;
    napi_create_double(env, bytes, &argv[1]);
  }
  request_free(env, r);
  napi_call_function(env, global, callback, 2, argv, NULL);
}

/* On a librbd thread: hands the result to the JS thread, never blocking. */
static void request_complete(xvd_rbd_completion_t c, void *arg) {
  struct request *r = arg;
  r->result = api->rbd_aio_get_return_value(c);
  api->rbd_aio_release(c);
  napi_call_threadsafe_function(r->image->done, r, napi_tsfn_nonblocking);
}

static int request_start(struct image *image, struct request *r, uint8_t *at, int64_t position) {
  xvd_rbd_completion_t c;
  int ret = api->rbd_aio_create_completion(r, request_complete, &c);
  if (ret < 0) return ret;
  uint64_t off = (uint64_t)position;
  switch (r->op) {
    case RBD_OP_READ: ret = api->rbd_aio_read(image->rbd, off, r->length, (char *)at, c); break;
    case RBD_OP_WRITE: ret = api->rbd_aio_write(image->rbd, off, r->length, (char *)at, c); break;
    case RBD_OP_FLUSH: ret = api->rbd_aio_flush(image->rbd, c); break;
    case RBD_OP_DISCARD: ret = api->rbd_aio_discard(image->rbd, off, r->length, c); break;
    default:
      ret = api->rbd_aio_write_zeroes == NULL
                ? -EOPNOTSUPP
                : api->rbd_aio_write_zeroes(image->rbd, off, r->length, c, 0, 0);
  }
  if (ret < 0) api->rbd_aio_release(c);
  return ret;
}

/* (handle, op, buffer|null, bufferOffset, length, position, callback): see the header */
static int parse_aio(napi_env env, napi_value *argv, int *op, uint8_t **at, int64_t *v) {
  uint32_t op_value;
  napi_valuetype type;
  if (napi_get_value_uint32(env, argv[1], &op_value) != napi_ok || op_value < RBD_OP_READ ||
      op_value > RBD_OP_WRITE_ZEROES || xvd_rbd_number(env, argv[3], &v[0]) != 0 ||
      xvd_rbd_number(env, argv[4], &v[1]) != 0 || xvd_rbd_number(env, argv[5], &v[2]) != 0 ||
      napi_typeof(env, argv[6], &type) != napi_ok || type != napi_function) {
    return -1;
  }
  *op = (int)op_value;
  *at = NULL;
  if (*op == RBD_OP_READ || *op == RBD_OP_WRITE) {
    void *data;
    size_t size;
    if (napi_get_buffer_info(env, argv[2], &data, &size) != napi_ok) return -1;
    if (v[0] > (int64_t)size || v[1] > (int64_t)size - v[0]) return -1;
    *at = (uint8_t *)data + v[0];
  }
  return 0;
}

napi_value xvd_rbd_aio(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int op;
  uint8_t *at;
  int64_t v[3]; /* bufferOffset, length, position */
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7 || parse_aio(env, argv, &op, &at, v) != 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "rbdAio(handle, op, buffer, bufferOffset, "
                           "length, position, callback): bad arguments");
    return NULL;
  }
  struct image *image = xvd_rbd_image_of(env, argv[0], op_name(op));
  if (image == NULL) return NULL;
  struct request *r = calloc(1, sizeof *r);
  if (r == NULL) return xvd_throw_errno(env, ENOMEM, op_name(op)), NULL;
  r->image = image;
  r->op = op;
  r->length = (size_t)v[1];
  if ((at != NULL && napi_create_reference(env, argv[2], 1, &r->buffer_ref) != napi_ok) ||
      napi_create_reference(env, argv[6], 1, &r->callback_ref) != napi_ok) {
    request_free(env, r);
    return xvd_throw_errno(env, ENOMEM, op_name(op)), NULL;
  }
  if (image->pending++ == 0) napi_ref_threadsafe_function(env, image->done);
  int ret = request_start(image, r, at, v[2]);
  if (ret < 0) { /* fails asynchronously too, through the same queue */
    r->result = ret;
    napi_call_threadsafe_function(image->done, r, napi_tsfn_nonblocking);
  }
  return NULL;
}

