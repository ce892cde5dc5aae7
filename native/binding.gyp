{
  "targets": [
    {
      "target_name": "xvd_native",
      "sources": ["src/addon.c", "src/blkdev.c", "src/fallocate.c", "src/seek.c", "src/errors.c",
                  "src/pread-nowait.c", "src/sockopt.c",
                  "src/pwrite-batch.c", "src/writer.c", "src/sender.c", "src/file-read.c",
                  "src/dp-wire.c", "src/dp-map.c", "src/dp-io.c", "src/dp-send.c",
                  "src/dp-loop.c", "src/dp-reader.c", "src/datapath-binding.c",
                  "src/handle.c", "src/request.c", "src/request-binding.c",
                  "src/budget.c", "src/ceph.c", "src/rbd.c",
                  "src/rbd-aio.c", "src/ceph-osdmap.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-std=gnu11"],
      "libraries": ["-ldl"],
      "defines": ["NAPI_VERSION=9", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"]
    },
    {
      "target_name": "xvd_sqlite_vfs",
      "sources": ["src/sqlite-vfs.c"],
      "include_dirs": ["../node_modules/better-sqlite3/deps/sqlite3"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-std=gnu11"]
    }
  ]
}
