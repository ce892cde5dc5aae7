#!/bin/bash
# scripts/ceph/down.sh DIR: stops the cluster that scripts/ceph/up.sh started under DIR, by its
# pid files, and removes DIR. Only processes whose command line names DIR/ceph.conf are signalled.
# The OSD goes first (it tells the mon it is stopping; with the mon gone it would wait 5 s), then
# the mgr and the mon: TERM, then KILL after XVD_CEPH_STOP_S (default 10) seconds.
# A no-op when DIR does not exist; refuses a DIR that holds files but no ceph.conf.
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ -d "$1" ] || exit 0
D=$(cd "$1" && pwd)
[ -e "$D/ceph.conf" ] || [ -z "$(ls -A "$D")" ] ||
  { echo "down.sh: $D has no ceph.conf; not removing it" >&2; exit 1; }
running() { [ -r "/proc/$1/stat" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$1/stat" 2>/dev/null; }
stop() {  # the daemons named, when their pid file points at a daemon of this DIR
  local pids=() f p end=$(( $(date +%s) + ${XVD_CEPH_STOP_S:-10} ))
  for f; do
    [ -s "$D/$f.pid" ] || continue
    p=$(cat "$D/$f.pid")
    { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$D/ceph.conf" || continue
    kill -TERM "$p" 2>/dev/null && pids+=("$p")
  done
  for p in ${pids[@]+"${pids[@]}"}; do
    while running "$p"; do
      [ "$(date +%s)" -lt $end ] || { kill -KILL "$p" 2>/dev/null; sleep 0.2; break; }
      sleep 0.05
    done
  done
}
stop osd.0
stop mgr.x mon.a
rm -rf "$D"
