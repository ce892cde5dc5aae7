/* ceph-osdmap.h: the export of ceph-osdmap.c (addon.c registers it as cephWaitForLatestOsdmap). */
#ifndef XVD_CEPH_OSDMAP_H
#define XVD_CEPH_OSDMAP_H

#include <node_api.h>

napi_value xvd_ceph_wait_osdmap(napi_env env, napi_callback_info info);

#endif
