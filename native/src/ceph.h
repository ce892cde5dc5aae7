/* ceph.h: librados and librbd as loaded at run time (ceph.c), shared by ceph.c (the process-wide
 * RADOS client) and rbd.c (images and their asynchronous I/O).
 *
 * xvd has no build-time dependency on Ceph: nothing here includes a Ceph header or links a Ceph
 * library. The few functions used are declared below as function-pointer types, written from
 * the documented C API (librados.h, librbd.h of Ceph 16 and later; every one of them has kept its
 * signature since Ceph 12), and resolved with dlopen("librados.so.2") and dlopen("librbd.so.1")
 * at the first call that needs them. Their handles are opaque pointers, as in the headers. */
#ifndef XVD_CEPH_H
#define XVD_CEPH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <node_api.h>

typedef void *xvd_rados_t;
typedef void *xvd_rados_ioctx_t;
typedef void *xvd_rbd_image_t;
typedef void *xvd_rbd_completion_t;
typedef void (*xvd_rbd_callback_t)(xvd_rbd_completion_t c, void *arg);
typedef int (*xvd_rbd_diff_cb)(uint64_t offset, size_t length, int exists, void *arg);

struct xvd_ceph_api {
  /* librados */
  int (*rados_create)(xvd_rados_t *cluster, const char *id);
  int (*rados_conf_read_file)(xvd_rados_t cluster, const char *path);
  int (*rados_conf_parse_env)(xvd_rados_t cluster, const char *var);
  int (*rados_conf_set)(xvd_rados_t cluster, const char *option, const char *value);
  int (*rados_connect)(xvd_rados_t cluster);
  void (*rados_shutdown)(xvd_rados_t cluster);
  int (*rados_ioctx_create)(xvd_rados_t cluster, const char *pool, xvd_rados_ioctx_t *io);
  void (*rados_ioctx_destroy)(xvd_rados_ioctx_t io);
  int (*rados_getaddrs)(xvd_rados_t cluster, char **addrs);
  uint64_t (*rados_get_instance_id)(xvd_rados_t cluster);
  int (*rados_mon_command)(xvd_rados_t cluster, const char **cmd, size_t cmdlen,
                           const char *inbuf, size_t inbuflen, char **outbuf, size_t *outbuflen,
                           char **outs, size_t *outslen);
  void (*rados_buffer_free)(char *buf);
  /* librbd */
  int (*rbd_create2)(xvd_rados_ioctx_t io, const char *name, uint64_t size, uint64_t features,
                     int *order);
  int (*rbd_open)(xvd_rados_ioctx_t io, const char *name, xvd_rbd_image_t *image,
                  const char *snap_name);
  int (*rbd_open_read_only)(xvd_rados_ioctx_t io, const char *name, xvd_rbd_image_t *image,
                            const char *snap_name);
  int (*rbd_close)(xvd_rbd_image_t image);
  int (*rbd_get_size)(xvd_rbd_image_t image, uint64_t *size);
  int (*rbd_aio_create_completion)(void *arg, xvd_rbd_callback_t complete,
                                   xvd_rbd_completion_t *c);
  ssize_t (*rbd_aio_get_return_value)(xvd_rbd_completion_t c);
  void (*rbd_aio_release)(xvd_rbd_completion_t c);
  int (*rbd_aio_read)(xvd_rbd_image_t image, uint64_t off, size_t len, char *buf,
                      xvd_rbd_completion_t c);
  int (*rbd_aio_write)(xvd_rbd_image_t image, uint64_t off, size_t len, const char *buf,
                       xvd_rbd_completion_t c);
  int (*rbd_aio_flush)(xvd_rbd_image_t image, xvd_rbd_completion_t c);
  int (*rbd_aio_discard)(xvd_rbd_image_t image, uint64_t off, uint64_t len,
                         xvd_rbd_completion_t c);
  /* optional (Ceph 15 and later): NULL when missing, and zeroing falls back */
  int (*rbd_aio_write_zeroes)(xvd_rbd_image_t image, uint64_t off, size_t len,
                              xvd_rbd_completion_t c, int zero_flags, int op_flags);
  int (*rbd_diff_iterate2)(xvd_rbd_image_t image, const char *from_snap, uint64_t off,
                           uint64_t len, uint8_t include_parent, uint8_t whole_object,
                           xvd_rbd_diff_cb cb, void *arg);
};

/* ceph.c: one call run off the JS thread on the libuv pool, settling a promise. Embed it first
 * in a struct of the call's own; run() does the blocking part, settle() (JS thread, only when
 * err is 0) returns the value to resolve with (NULL: undefined), release() frees the struct.
 * A failure rejects with "<syscall>: <errno name>: <detail or strerror>". */
struct xvd_ceph_job {
  napi_async_work work;
  napi_deferred deferred;
  void (*run)(struct xvd_ceph_job *job);
  napi_value (*settle)(napi_env env, struct xvd_ceph_job *job);
  void (*release)(struct xvd_ceph_job *job);
  const char *syscall;
  int err;           /* positive errno, 0 on success */
  char detail[256];  /* what Ceph said, when it said something */
};
/* queues job (its functions and syscall set) and returns its promise; NULL after throwing */
napi_value xvd_ceph_job_queue(napi_env env, struct xvd_ceph_job *job);
/* copies a JS string argument into a new malloc'd C string (NULL after throwing) */
char *xvd_ceph_string(napi_env env, napi_value value, const char *what);

/* ceph.c: the loaded API, or NULL with *why set ("librbd.so.1: cannot open ...") */
const struct xvd_ceph_api *xvd_ceph_api(const char **why);
/* ceph.c: what uses the client now (open images, jobs in flight; JS thread only): no shutdown
 * while it is above 0 */
extern int xvd_ceph_users;
/* ceph.c: the connected client (JS thread only), or NULL */
xvd_rados_t xvd_ceph_cluster(void);
/* ceph.c: rejects/throws an Error "<syscall>: <errno name>: <detail>" for a Ceph -errno */
napi_value xvd_ceph_error(napi_env env, int err, const char *syscall, const char *detail);

/* ceph.c: the exports (addon.c registers them) */
napi_value xvd_ceph_connect(napi_env env, napi_callback_info info);
napi_value xvd_ceph_shutdown(napi_env env, napi_callback_info info);
napi_value xvd_ceph_addrs(napi_env env, napi_callback_info info);
napi_value xvd_ceph_mon_command(napi_env env, napi_callback_info info);
/* rbd.c */
napi_value xvd_rbd_create(napi_env env, napi_callback_info info);
napi_value xvd_rbd_open(napi_env env, napi_callback_info info);
napi_value xvd_rbd_close(napi_env env, napi_callback_info info);
napi_value xvd_rbd_aio(napi_env env, napi_callback_info info);
napi_value xvd_rbd_allocated(napi_env env, napi_callback_info info);
void xvd_rbd_constants(napi_env env, napi_value constants);

#endif
