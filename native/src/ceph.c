/* ceph.c: librados loaded at run time, and the process's one RADOS client.
 *
 * Loading (ceph.h): librados.so.2 and librbd.so.1 are opened with dlopen at the first call that
 * needs them, never at the addon's load, so xvd builds and runs where Ceph is not installed;
 * there, every Ceph call rejects with ENOSYS and the loader's message ("librbd.so.1: cannot
 * open shared object file").
 *
 * The client (exports; src/sys/ceph.ts wraps them, src/ceph/client.ts decides when):
 *   cephConnect(conf, id, mountTimeoutSeconds) -> Promise<void>: rados_create(id),
 *       rados_conf_read_file(conf), CEPH_ARGS (rados_conf_parse_env), client_mount_timeout,
 *       rados_connect. Resolves at once when connected; EBUSY while another connect or a
 *       shutdown runs; ENOENT, without touching librados, when conf is not a readable file
 *       (Ceph's own tools abort on some missing configurations).
 *   cephShutdown() -> Promise<void>: rados_shutdown, once no image is open (EBUSY otherwise).
 *       A client that the monitors blocklisted is useless: shut it down, connect a new one.
 *   cephAddrs() -> string: the client's own addresses (rados_getaddrs), what a blocklist names;
 *       synchronous (no network). ENOTCONN when not connected.
 *   cephMonCommand(json, input | null) -> Promise<{ out: Buffer, outs: string }>: one monitor
 *       command (rados_mon_command), e.g. {"prefix": "osd blocklist", "blocklistop": "add",
 *       "addr": ADDR}. A failure rejects with the monitor's own message as detail.
 * Everything that talks to the cluster runs on the libuv pool (struct xvd_ceph_job): nothing
 * here blocks the event loop. The client's handle is read and written on the JS thread only. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ceph.h"
#include "ops.h"

static struct xvd_ceph_api api;
static int api_state; /* 0: not tried, 1: loaded, -1: failed (why in api_why) */
static char api_why[256];

static xvd_rados_t cluster;  /* JS thread only */
static int is_busy;          /* a connect or a shutdown runs */
int xvd_ceph_users;          /* ceph.h */

#define RESOLVE(lib, name)                                                 \
  do {                                                                      \
    *(void **)&api.name = dlsym(lib, #name);                                \
    if (api.name == NULL) {                                                 \
      snprintf(api_why, sizeof api_why, "lib%s has no %s", #lib, #name);    \
      return -1;                                                            \
    }                                                                       \
  } while (0)

static int resolve_rados(void *rados) {
  RESOLVE(rados, rados_create);
  RESOLVE(rados, rados_conf_read_file);
  RESOLVE(rados, rados_conf_parse_env);
  RESOLVE(rados, rados_conf_set);
  RESOLVE(rados, rados_connect);
  RESOLVE(rados, rados_shutdown);
  RESOLVE(rados, rados_ioctx_create);
  RESOLVE(rados, rados_ioctx_destroy);
  RESOLVE(rados, rados_getaddrs);
  RESOLVE(rados, rados_get_instance_id);
  RESOLVE(rados, rados_mon_command);
  RESOLVE(rados, rados_buffer_free);
  return 0;
}

static int resolve_rbd(void *rbd) {
  RESOLVE(rbd, rbd_create2);
  RESOLVE(rbd, rbd_open);
  RESOLVE(rbd, rbd_open_read_only);
  RESOLVE(rbd, rbd_close);
  RESOLVE(rbd, rbd_get_size);
  RESOLVE(rbd, rbd_aio_create_completion);
  RESOLVE(rbd, rbd_aio_get_return_value);
  RESOLVE(rbd, rbd_aio_release);
  RESOLVE(rbd, rbd_aio_read);
  RESOLVE(rbd, rbd_aio_write);
  RESOLVE(rbd, rbd_aio_flush);
  RESOLVE(rbd, rbd_aio_discard);
  RESOLVE(rbd, rbd_diff_iterate2);
  *(void **)&api.rbd_aio_write_zeroes = dlsym(rbd, "rbd_aio_write_zeroes");
  return 0;
}

static int load_api(void) {
  void *rados = dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL);
  if (rados == NULL) {
    snprintf(api_why, sizeof api_why, "%s (install librados2)", dlerror());
    return -1;
  }
  void *rbd = dlopen("librbd.so.1", RTLD_NOW | RTLD_LOCAL);
  if (rbd == NULL) {
    snprintf(api_why, sizeof api_why, "%s (install librbd1)", dlerror());
    return -1;
  }
  if (resolve_rados(rados) != 0 || resolve_rbd(rbd) != 0) return -1;
  return 0; /* the libraries stay loaded for the process's life */
}

/* JS thread (the first call from any export is there, before any job runs). */
const struct xvd_ceph_api *xvd_ceph_api(const char **why) {
  if (api_state == 0) api_state = load_api() == 0 ? 1 : -1;
  *why = api_why;
  return api_state == 1 ? &api : NULL;
}

xvd_rados_t xvd_ceph_cluster(void) {
  return cluster;
}

static const char *errno_name(int err) {
  switch (err) {
    case ETIMEDOUT: return "ETIMEDOUT";
    case ESHUTDOWN: return "ESHUTDOWN"; /* Ceph's EBLOCKLISTED */
    case ENOTCONN: return "ENOTCONN";
    case ENOSYS: return "ENOSYS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ERANGE: return "ERANGE";
    case EKEYREJECTED: return "EKEYREJECTED";
    default: return xvd_errno_name(err);
  }
}

napi_value xvd_ceph_error(napi_env env, int err, const char *syscall, const char *detail) {
  char text[512];
  const char *name = errno_name(err);
  snprintf(text, sizeof text, "%s: %s: %s", syscall, name,
           detail != NULL && detail[0] != '\0' ? detail : strerror(err));
  napi_value message, code, error, number, sys;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &number);
  napi_set_named_property(env, error, "errno", number);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  return error;
}

static void job_execute(napi_env env, void *data) {
  (void)env;
  struct xvd_ceph_job *job = data;
  job->run(job);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  struct xvd_ceph_job *job = data;
  napi_value value = NULL;
  if (status != napi_ok && job->err == 0) job->err = ECANCELED;
  if (job->err == 0 && job->settle != NULL) value = job->settle(env, job);
  if (job->err != 0) {
    napi_reject_deferred(env, job->deferred,
                         xvd_ceph_error(env, job->err, job->syscall, job->detail));
  } else {
    if (value == NULL) napi_get_undefined(env, &value);
    napi_resolve_deferred(env, job->deferred, value);
  }
  napi_delete_async_work(env, job->work);
  job->release(job);
}

napi_value xvd_ceph_job_queue(napi_env env, struct xvd_ceph_job *job) {
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, job->syscall, NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, job_execute, job_complete, job, &job->work) !=
          napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    job->release(job);
    napi_throw_error(env, NULL, "ceph: cannot queue work");
    return NULL;
  }
  return promise;
}

char *xvd_ceph_string(napi_env env, napi_value value, const char *what) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok || length > 4096) {
    char message[96];
    snprintf(message, sizeof message, "%s must be a string of at most 4096 bytes", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
    return NULL;
  }
  char *text = malloc(length + 1);
  if (text == NULL) {
    xvd_throw_errno(env, ENOMEM, what);
    return NULL;
  }
  napi_get_value_string_utf8(env, value, text, length + 1, &length);
  return text;
}

/* The API, or NULL after throwing ENOSYS with the loader's message. */
static const struct xvd_ceph_api *api_or_throw(napi_env env, const char *syscall) {
  const char *why;
  const struct xvd_ceph_api *loaded = xvd_ceph_api(&why);
  if (loaded == NULL) napi_throw(env, xvd_ceph_error(env, ENOSYS, syscall, why));
  return loaded;
}

struct connect_job {
  struct xvd_ceph_job job;
  char *conf, *id;
  char timeout[24];
  xvd_rados_t cluster;
};

static void connect_run(struct xvd_ceph_job *job) {
  struct connect_job *c = (struct connect_job *)job;
  int ret = api.rados_create(&c->cluster, c->id);
  if (ret < 0) {
    c->cluster = NULL;
    job->syscall = "rados_create";
    job->err = -ret;
    return;
  }
  /* failures are told to the caller, once: librados prints nothing of its own */
  ret = api.rados_conf_set(c->cluster, "err_to_stderr", "false");
  if (ret >= 0) ret = api.rados_conf_set(c->cluster, "log_to_stderr", "false");
  if (ret >= 0) ret = api.rados_conf_read_file(c->cluster, c->conf);
  if (ret >= 0) ret = api.rados_conf_set(c->cluster, "client_mount_timeout", c->timeout);
  /* no client-side cache: several hosts write one image (different extents), and a host may
   * serve again extents that another host wrote meanwhile; CEPH_ARGS may turn it back on */
  if (ret >= 0) ret = api.rados_conf_set(c->cluster, "rbd_cache", "false");
  if (ret >= 0) ret = api.rados_conf_parse_env(c->cluster, NULL); /* CEPH_ARGS */
  job->syscall = ret < 0 ? "rados_conf_read_file" : "rados_connect";
  if (ret >= 0) ret = api.rados_connect(c->cluster);
  if (ret < 0) {
    api.rados_shutdown(c->cluster);
    c->cluster = NULL;
    job->err = -ret;
    if (-ret == ETIMEDOUT || -ret == EINTR) {
      snprintf(job->detail, sizeof job->detail, "no monitor answered within %ss (mon host in %s)",
               c->timeout, c->conf);
    }
  }
}

static napi_value connect_settle(napi_env env, struct xvd_ceph_job *job) {
  (void)env;
  cluster = ((struct connect_job *)job)->cluster;
  return NULL;
}

static void connect_release(struct xvd_ceph_job *job) {
  struct connect_job *c = (struct connect_job *)job;
  is_busy = 0;
  free(c->conf);
  free(c->id);
  free(c);
}

napi_value xvd_ceph_connect(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], promise;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t timeout_s;
  if (argc < 3 || napi_get_value_uint32(env, argv[2], &timeout_s) != napi_ok || timeout_s == 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cephConnect(conf, id, timeoutSeconds)");
    return NULL;
  }
  if (api_or_throw(env, "rados_connect") == NULL) return NULL;
  if (cluster != NULL) {
    napi_deferred deferred;
    napi_value undefined;
    napi_create_promise(env, &deferred, &promise);
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, deferred, undefined);
    return promise;
  }
  if (is_busy) {
    napi_throw(env, xvd_ceph_error(env, EBUSY, "rados_connect", "a connect or shutdown runs"));
    return NULL;
  }
  struct connect_job *c = calloc(1, sizeof *c);
  if (c == NULL) return xvd_throw_errno(env, ENOMEM, "rados_connect"), NULL;
  c->job.release = connect_release;
  c->conf = xvd_ceph_string(env, argv[0], "conf");
  c->id = c->conf == NULL ? NULL : xvd_ceph_string(env, argv[1], "id");
  if (c->id == NULL) {
    connect_release(&c->job);
    return NULL;
  }
  if (access(c->conf, R_OK) != 0) { /* never let librados meet a missing configuration */
    int err = errno;
    connect_release(&c->job);
    napi_throw(env, xvd_ceph_error(env, err, "rados_conf_read_file", NULL));
    return NULL;
  }
  snprintf(c->timeout, sizeof c->timeout, "%u", timeout_s);
  c->job.run = connect_run;
  c->job.settle = connect_settle;
  c->job.syscall = "rados_connect";
  is_busy = 1;
  return xvd_ceph_job_queue(env, &c->job);
}

struct shutdown_job {
  struct xvd_ceph_job job;
  xvd_rados_t cluster;
};

static void shutdown_run(struct xvd_ceph_job *job) {
  xvd_rados_t old = ((struct shutdown_job *)job)->cluster;
  if (old != NULL) api.rados_shutdown(old);
}

static void shutdown_release(struct xvd_ceph_job *job) {
  is_busy = 0;
  free(job);
}

napi_value xvd_ceph_shutdown(napi_env env, napi_callback_info info) {
  (void)info;
  if (api_or_throw(env, "rados_shutdown") == NULL) return NULL;
  if (is_busy || xvd_ceph_users > 0) {
    const char *why = is_busy ? "a connect or shutdown runs" : "images are open or calls run";
    napi_throw(env, xvd_ceph_error(env, EBUSY, "rados_shutdown", why));
    return NULL;
  }
  struct shutdown_job *s = calloc(1, sizeof *s);
  if (s == NULL) return xvd_throw_errno(env, ENOMEM, "rados_shutdown"), NULL;
  s->cluster = cluster; /* NULL: nothing to do, the job resolves */
  cluster = NULL;
  s->job.run = shutdown_run;
  s->job.release = shutdown_release;
  s->job.syscall = "rados_shutdown";
  is_busy = 1;
  return xvd_ceph_job_queue(env, &s->job);
}

napi_value xvd_ceph_addrs(napi_env env, napi_callback_info info) {
  (void)info;
  if (api_or_throw(env, "rados_getaddrs") == NULL) return NULL;
  if (cluster == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOTCONN, "rados_getaddrs", "not connected"));
    return NULL;
  }
  char *addrs = NULL;
  int ret = api.rados_getaddrs(cluster, &addrs);
  if (ret < 0 || addrs == NULL) {
    napi_throw(env, xvd_ceph_error(env, ret < 0 ? -ret : ENOMEM, "rados_getaddrs", NULL));
    return NULL;
  }
  napi_value result;
  napi_create_string_utf8(env, addrs, NAPI_AUTO_LENGTH, &result);
  free(addrs); /* strdup'd by librados */
  return result;
}

struct mon_job {
  struct xvd_ceph_job job;
  xvd_rados_t cluster;
  char *command;
  char *input;
  size_t input_length;
  char *out;
  size_t out_length;
};

static void mon_run(struct xvd_ceph_job *job) {
  struct mon_job *m = (struct mon_job *)job;
  const char *commands[1] = {m->command};
  char *outs = NULL;
  size_t outs_length = 0;
  int ret = api.rados_mon_command(m->cluster, commands, 1, m->input, m->input_length, &m->out,
                                  &m->out_length, &outs, &outs_length);
  if (ret < 0) {
    job->err = -ret;
    if (outs != NULL) {
      size_t take = outs_length < sizeof job->detail - 1 ? outs_length : sizeof job->detail - 1;
      memcpy(job->detail, outs, take);
      job->detail[take] = '\0';
    }
  } else if (outs != NULL && outs_length > 0) {
    snprintf(job->detail, sizeof job->detail, "%.*s", (int)outs_length, outs);
  }
  if (outs != NULL) api.rados_buffer_free(outs);
}

static napi_value mon_settle(napi_env env, struct xvd_ceph_job *job) {
  struct mon_job *m = (struct mon_job *)job;
  napi_value result, out, outs;
  void *copy;
  napi_create_object(env, &result);
  napi_create_buffer_copy(env, m->out_length, m->out == NULL ? "" : m->out, &copy, &out);
  napi_create_string_utf8(env, job->detail, NAPI_AUTO_LENGTH, &outs);
  napi_set_named_property(env, result, "out", out);
  napi_set_named_property(env, result, "outs", outs);
  return result;
}

static void mon_release(struct xvd_ceph_job *job) {
  struct mon_job *m = (struct mon_job *)job;
  if (m->cluster != NULL) xvd_ceph_users--;
  if (m->out != NULL) api.rados_buffer_free(m->out);
  free(m->command);
  free(m->input);
  free(m);
}

/* The optional input buffer's bytes, copied (the job outlives the call). */
static int mon_input(napi_env env, napi_value value, struct mon_job *m) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type == napi_null || type == napi_undefined) return 0;
  void *data;
  size_t length;
  if (napi_get_buffer_info(env, value, &data, &length) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cephMonCommand: input must be a Buffer");
    return -1;
  }
  m->input = malloc(length + 1);
  if (m->input == NULL) return xvd_throw_errno(env, ENOMEM, "rados_mon_command"), -1;
  memcpy(m->input, data, length);
  m->input_length = length;
  return 0;
}

napi_value xvd_ceph_mon_command(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cephMonCommand(json, input)");
    return NULL;
  }
  if (api_or_throw(env, "rados_mon_command") == NULL) return NULL;
  if (cluster == NULL) {
    napi_throw(env, xvd_ceph_error(env, ENOTCONN, "rados_mon_command", "not connected"));
    return NULL;
  }
  struct mon_job *m = calloc(1, sizeof *m);
  if (m == NULL) return xvd_throw_errno(env, ENOMEM, "rados_mon_command"), NULL;
  m->job.release = mon_release;
  m->command = xvd_ceph_string(env, argv[0], "command");
  if (m->command == NULL || mon_input(env, argv[1], m) != 0) {
    mon_release(&m->job);
    return NULL;
  }
  m->cluster = cluster;
  xvd_ceph_users++;
  m->job.run = mon_run;
  m->job.settle = mon_settle;
  m->job.syscall = "rados_mon_command";
  return xvd_ceph_job_queue(env, &m->job);
}
