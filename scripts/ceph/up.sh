#!/bin/bash
# scripts/ceph/up.sh DIR: a throwaway single-node Ceph cluster for xvd's tests and benchmarks.
#
# One mon (msgr2 only), one mgr and one BlueStore OSD on a sparse file, all on 127.0.0.1, under
# DIR (new or empty). Returns once the cluster is HEALTH_OK, the mgr is available, the OSD is up
# and in, and every PG is active+clean, with the pool $XVD_CEPH_POOL (default rbd) created and
# tagged for RBD. Prints on stdout what a client needs, one KEY=VALUE a line:
#   CEPH_CONF=DIR/ceph.conf      (names the mon and the keyring; librados, rbd, qemu :conf=)
#   CEPH_KEYRING=DIR/keyring     (client.admin, mode 0600: clients run as the same user)
#   CEPH_POOL=rbd
# The daemons run in the background with pid files DIR/*.pid and logs in DIR/log; stop them and
# remove DIR with scripts/ceph/down.sh DIR (also after a failed up.sh). Root is not needed.
# Memory: the OSD's cache is fixed at 256 MiB with autotuning off (with autotuning it grew to
# 1.2 GB under load; Ceph refuses a memory target under 896 MiB).
# env: XVD_CEPH_POOL=rbd  XVD_CEPH_OSD_GB=10 (sparse)  XVD_CEPH_TIMEOUT=120 (seconds)
#      XVD_CEPH_NICE=10
# Needs (Debian 12, Ceph 16): ceph-mon ceph-mgr ceph-osd ceph-common (scripts/ensure-tools.js).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool; do
  command -v $b >/dev/null ||
    { echo "up.sh: $b missing (apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)" >&2; exit 1; }
done
PY=$(sed -n '1s/^#! *//p' "$(command -v ceph)")  # the python3 that the ceph CLI runs on
mkdir -p "$1"; D=$(cd "$1" && pwd); C=$D/ceph.conf; K=$D/keyring
[ -z "$(ls -A "$D")" ] || { echo "up.sh: $D is not empty (down.sh $1 clears it)" >&2; exit 1; }
POOL=${XVD_CEPH_POOL:-rbd}; GB=${XVD_CEPH_OSD_GB:-10}; NICE="nice -n ${XVD_CEPH_NICE:-10}"
T0=$(date +%s.%N)
cli() { timeout 30 ceph -c "$C" --connect-timeout 10 "$@"; }
start() {  # NAME DAEMON ID: the daemon forks once it is up; its stderr is kept in log/NAME.stderr
  $NICE "$2" -c "$C" -i "$3" 2> "$D/log/$1.stderr" || { cat "$D/log/$1.stderr" >&2; return 1; }
}
PORT=$($PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
FSID=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$D"/{log,run,crash,mon.a,mgr.x,osd.0}
cat > "$C" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $K
run dir = $D/run
crash dir = $D/crash
mon cluster log file = $D/log/cluster.log
pid file = $D/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
[mon]
log file = $D/log/\$name.log
mon data = $D/mon.\$id
[mgr]
log file = $D/log/\$name.log
mgr data = $D/mgr.\$id
[osd]
log file = $D/log/\$name.log
osd data = $D/osd.\$id
osd objectstore = bluestore
osd memory target = 1073741824
bluestore cache autotune = false
bluestore cache size = 268435456
bluestore block create = true
bluestore block size = $((GB << 30))
bluestore fsck on mkfs = false
bdev aio poll ms = 20
EOF
{ ceph-authtool "$K" --create-keyring --gen-key -n mon. --cap mon 'allow *'
  ceph-authtool "$K" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *'
  ceph-authtool "$K" --gen-key -n mgr.x --cap mon 'allow profile mgr' --cap osd 'allow *' \
    --cap mds 'allow *'
  monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$PORT]" "$D/monmap"; } >/dev/null
chmod 600 "$K"
ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap" --keyring "$K"
start mon.a ceph-mon a
# no device_health_metrics pool (the mgr would create it a second after it starts)
cli config set mgr mgr/devicehealth/enable_monitoring false --force >/dev/null
start mgr.x ceph-mgr x  # early: it takes seconds to load its python modules
OSD_UUID=$(cat /proc/sys/kernel/random/uuid); OSD_KEY=$(ceph-authtool --gen-print-key)
echo "{\"cephx_secret\": \"$OSD_KEY\"}" > "$D/osd.json"
ID=$(cli osd new "$OSD_UUID" -i "$D/osd.json"); rm -f "$D/osd.json"
[ "$ID" = 0 ] || { echo "up.sh: unexpected osd id $ID" >&2; exit 1; }
ceph-osd -c "$C" -i 0 --mkfs --key "$OSD_KEY" --osd-uuid "$OSD_UUID" > "$D/log/osd-mkfs.log" 2>&1 ||
  { cat "$D/log/osd-mkfs.log" >&2; exit 1; }
printf '[osd.0]\n\tkey = %s\n' "$OSD_KEY" >> "$K"
start osd.0 ceph-osd 0
# the pool for RBD images: what `rbd pool init` does, without its wait on the OSD map
cli osd pool create "$POOL" 8 8 replicated >/dev/null 2>&1
cli osd pool application enable "$POOL" rbd >/dev/null 2>&1
END=$(( $(date +%s) + ${XVD_CEPH_TIMEOUT:-120} ))
ready() {  # HEALTH_OK, mgr available, 1 OSD up and in, every PG active+clean
  cli -s -f json 2>/dev/null | $PY -c '
import json, sys
s = json.load(sys.stdin); o = s["osdmap"]; o = o.get("osdmap", o); p = s["pgmap"]
clean = sum(x["count"] for x in p.get("pgs_by_state", []) if x["state_name"] == "active+clean")
sys.exit(0 if s["health"]["status"] == "HEALTH_OK" and s["mgrmap"]["available"]
         and o["num_up_osds"] == 1 and o["num_in_osds"] == 1 and p["num_pgs"] > 0
         and clean == p["num_pgs"] else 1)'
}
until ready; do
  if [ "$(date +%s)" -ge $END ]; then
    echo "up.sh: not HEALTH_OK after ${XVD_CEPH_TIMEOUT:-120}s:" >&2; cli -s >&2 || true
    tail -n 5 "$D"/log/*.log >&2 || true; exit 1
  fi
  sleep 0.2
done
awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "up.sh: HEALTH_OK in %.1fs\n", b-a}' >&2
printf 'CEPH_CONF=%s\nCEPH_KEYRING=%s\nCEPH_POOL=%s\n' "$C" "$K" "$POOL"
