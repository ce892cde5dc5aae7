/* rbd.h: what rbd.c (images: create, open, close, allocation) and rbd-aio.c (their asynchronous
 * I/O) share: an open image, one request, and the few helpers both use. The exports and the
 * lifecycle are described in rbd.c's header. */
#ifndef XVD_RBD_H
#define XVD_RBD_H

#include "ceph.h"

enum { RBD_OP_READ = 1, RBD_OP_WRITE, RBD_OP_FLUSH, RBD_OP_DISCARD, RBD_OP_WRITE_ZEROES };

/* an open image; freed by its thread-safe function's finalizer (rbd.c) */
struct image {
  xvd_rados_ioctx_t io;
  xvd_rbd_image_t rbd;
  napi_threadsafe_function done;
  size_t pending;  /* JS thread: asynchronous requests in flight */
  size_t jobs;     /* JS thread: rbdAllocated calls in flight */
};

struct image_box {
  struct image *image; /* NULL once closing */
};

struct request {
  struct image *image;
  int op;
  size_t length;
  ssize_t result;
  napi_ref buffer_ref, callback_ref;
};

/* the loaded API (set by the first export called, on the JS thread) */
extern const struct xvd_ceph_api *xvd_rbd_api;
/* the open image of a handle, or NULL after throwing EBADF */
struct image *xvd_rbd_image_of(napi_env env, napi_value handle, const char *syscall);
/* a non-negative safe integer argument: 0, or -1 */
int xvd_rbd_number(napi_env env, napi_value value, int64_t *out);
/* rbd-aio.c: the thread-safe function's call on the JS thread (one finished request) */
void xvd_rbd_complete_js(napi_env env, napi_value js_callback, void *context, void *data);

#endif
