/*
 * ceph-osdmap: cephWaitForLatestOsdmap(), rados_wait_for_latest_osdmap() on the process's RADOS
 * client (ceph.c) off the JS thread, as a promise. A server that takes over another host's VDs
 * calls it after the monitors blocklisted that host (src/serve/rados-fence.ts, the design in
 * src/serve/host-lease.ts): from then on every op this client sends carries an osdmap epoch at
 * which the old host is blocklisted, so no OSD applies one of its ops after one of ours.
 *
 * A piece beside ceph.c rather than in it: the function is resolved here, from the librados that
 * ceph.c has loaded (dlopen with RTLD_NOLOAD finds it, and dlclose gives the reference back).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include "ceph.h"
#include "ceph-osdmap.h"

typedef int (*wait_for_latest_osdmap_fn)(xvd_rados_t cluster);

struct osdmap_job {
  struct xvd_ceph_job job; /* first: ceph.c's queue sees this */
  xvd_rados_t cluster;
  wait_for_latest_osdmap_fn wait;
};

static void osdmap_run(struct xvd_ceph_job *job) {
  struct osdmap_job *o = (struct osdmap_job *)job;
  int ret = o->wait(o->cluster);
  if (ret < 0) job->err = -ret;
}

static napi_value osdmap_settle(napi_env env, struct xvd_ceph_job *job) {
  (void)env;
  (void)job;
  return NULL; /* resolves with undefined */
}

static void osdmap_release(struct xvd_ceph_job *job) {
  struct osdmap_job *o = (struct osdmap_job *)job;
  if (o->cluster != NULL) xvd_ceph_users--;
  free(o);
}

/* rados_wait_for_latest_osdmap from the loaded librados, or NULL */
static wait_for_latest_osdmap_fn resolve_wait(void) {
  void *rados = dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (rados == NULL) return NULL;
  wait_for_latest_osdmap_fn wait =
    (wait_for_latest_osdmap_fn)dlsym(rados, "rados_wait_for_latest_osdmap");
  dlclose(rados);
  return wait;
}

napi_value xvd_ceph_wait_osdmap(napi_env env, napi_callback_info info) {
  (void)info;
  const char *syscall = "rados_wait_for_latest_osdmap";
  const char *why = NULL;
  if (xvd_ceph_api(&why) == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOSYS, syscall, why));
    return NULL;
  }
  xvd_rados_t cluster = xvd_ceph_cluster();
  if (cluster == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOTCONN, syscall, "not connected"));
    return NULL;
  }
  wait_for_latest_osdmap_fn wait = resolve_wait();
  if (wait == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOSYS, syscall, "not in this librados"));
    return NULL;
  }
  struct osdmap_job *o = calloc(1, sizeof *o);
  if (o == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOMEM, syscall, "out of memory"));
    return NULL;
  }
  o->cluster = cluster;
  o->wait = wait;
  xvd_ceph_users++;
  o->job.run = osdmap_run;
  o->job.settle = osdmap_settle;
  o->job.release = osdmap_release;
  o->job.syscall = syscall;
  return xvd_ceph_job_queue(env, &o->job);
}
