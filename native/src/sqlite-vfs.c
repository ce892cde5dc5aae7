/*
 * sqlite-vfs: a loadable SQLite extension, xvd_sqlite_vfs.node, that adds one SQL function:
 *
 *   xvd_default_vfs(NAME)  makes the registered VFS called NAME the default for the opens that
 *                          follow, and returns the name of the VFS that was the default before.
 *
 * Why: better-sqlite3 12 builds SQLite with SQLITE_USE_URI=0 and takes no VFS name, so a catalog
 * in RADOS (src/catalog/ceph-sqlite.ts) is opened by making libcephsqlite's `ceph` VFS the default
 * for one open and the previous one (`unix`) the default again right after.
 *
 * Built by node-gyp beside the addon (native/binding.gyp) against the sqlite3ext.h that
 * better-sqlite3 ships: it links nothing and needs neither Ceph nor SQLite's headers installed,
 * since every SQLite call goes through the routines table SQLite hands to the entry point.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

static void default_vfs(sqlite3_context *context, int argc, sqlite3_value **argv) {
  if (argc != 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
    sqlite3_result_error(context, "xvd_default_vfs: expected one VFS name", -1);
    return;
  }
  const char *name = (const char *)sqlite3_value_text(argv[0]);
  sqlite3_vfs *vfs = name == 0 ? 0 : sqlite3_vfs_find(name);
  if (vfs == 0) {
    sqlite3_result_error(context, "xvd_default_vfs: no VFS by that name is registered", -1);
    return;
  }
  sqlite3_vfs *previous = sqlite3_vfs_find(0);
  int rc = sqlite3_vfs_register(vfs, 1);
  if (rc != SQLITE_OK) {
    sqlite3_result_error_code(context, rc);
    return;
  }
  sqlite3_result_text(context, previous == 0 ? "" : previous->zName, -1, SQLITE_TRANSIENT);
}

__attribute__((visibility("default")))
int sqlite3_xvdsqlitevfs_init(sqlite3 *db, char **error, const sqlite3_api_routines *api) {
  SQLITE_EXTENSION_INIT2(api);
  (void)error;
  return sqlite3_create_function(db, "xvd_default_vfs", 1, SQLITE_UTF8, 0, default_vfs, 0, 0);
}
