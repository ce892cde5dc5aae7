#!/bin/bash
# Builds the golden root filesystem that the test host's virtual machines boot from: a small
# ext4 image (mke2fs -d) holding busybox-static and an /sbin/init that, on every boot,
#   - takes its name from `xvd.name=NAME` on the kernel command line (default: unnamed),
#   - writes it to /etc/hostname and writes a file of its own, /home/NAME/data (random bytes,
#     `xvd.data_kib=N` KiB, default 256),
#   - prints `XVD-VALUE: name=NAME` and `XVD-VALUE: data_sha256=HASH` on the console,
#   - syncs, remounts / read-only (the journal is checkpointed, so the image reads back
#     complete with debugfs), prints `XVD-GUEST-DONE: NAME` and powers off.
# Anything that goes wrong prints `XVD-GUEST-FAIL: reason` and powers off too.
# Import it into a VD, clone it, and boot the clones with scripts/testhost/boot.sh.
#
# Idempotent and cached under ${XVD_CACHE:-$HOME/.cache/xvd}/golden/: rootfs.img and a stamp;
# the cached image is reused while its stamp matches this script's content. A lock (flock)
# makes concurrent callers wait for one build.
#
# Output (stdout, last line): GOLDEN=<path>. Progress goes to stderr.
set -euo pipefail

CACHE="${XVD_CACHE:-$HOME/.cache/xvd}/golden"
SIZE=64M
# Debian packages this script uses, as command=package (installed when missing and root)
TOOLS="busybox=busybox-static mke2fs=e2fsprogs flock=util-linux"

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "golden.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "golden: $*" >&2; }

ensure_tools() {
  local missing="" pair command package
  for pair in $TOOLS; do
    command="${pair%%=*}"; package="${pair#*=}"
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
      missing="$missing $package"
    fi
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing packages:$missing (not root: cannot install)"; exit 3
  fi
  log "installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
}

script_hash() { sha256sum "$0" | cut -c1-16; }

write_init() { # root
  cat > "$1/sbin/init" <<'INIT'
#!/bin/sh
# The golden guest's init: see scripts/testhost/golden.sh in xvd.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
fail() { echo "XVD-GUEST-FAIL: $*"; sync; poweroff -f; }
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
name=unnamed data_kib=256
for word in $(cat /proc/cmdline); do
  case "$word" in
    xvd.name=*) name="${word#xvd.name=}" ;;
    xvd.data_kib=*) data_kib="${word#xvd.data_kib=}" ;;
  esac
done
case "$name" in *[!A-Za-z0-9_-]*|"") fail "unusable name: $name" ;; esac
echo "XVD-GUEST: $name booted from $(sed -n 's/^\(\/dev\/[^ ]*\) \/ .*/\1/p' /proc/mounts)"
hostname "$name"
echo "$name" > /etc/hostname || fail "cannot write /etc/hostname"
mkdir -p "/home/$name" || fail "cannot make /home/$name"
head -c $((data_kib * 1024)) /dev/urandom > "/home/$name/data" || fail "cannot write data"
echo "XVD-VALUE: name=$(cat /etc/hostname)"
echo "XVD-VALUE: data_sha256=$(sha256sum "/home/$name/data" | cut -d' ' -f1)"
sync || fail "sync failed"
mount -o remount,ro / || fail "cannot remount / read-only"
echo "XVD-GUEST-DONE: $name"
poweroff -f
INIT
  chmod 0755 "$1/sbin/init"
}

build() { # output
  local output="$1" root="$CACHE/root" applet
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,home,root}
  install -m 0755 /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    case "$applet" in */busybox|sbin/init) continue ;; esac # a self-link fails with ELOOP
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
  write_init "$root"
  echo golden > "$root/etc/hostname"
  echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
  echo "xvd golden root filesystem" > "$root/etc/golden-release"
  rm -f "$output.tmp"
  # inode tables and journal zeroed now: no ext4lazyinit writes in every clone at first boot
  mke2fs -q -F -t ext4 -b 4096 -L golden \
    -E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
    -d "$root" "$output.tmp" "$SIZE" >&2
  mv "$output.tmp" "$output"
  rm -rf "$root"
  script_hash > "$CACHE/stamp"
}

main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -w 300 9 || { log "another build held the lock for 5 minutes"; exit 3; }
  if [ ! -f "$CACHE/rootfs.img" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$(script_hash)" ]
  then
    ensure_tools
    log "building $CACHE/rootfs.img"
    build "$CACHE/rootfs.img"
  fi
  echo "GOLDEN=$(cd "$CACHE" && pwd -P)/rootfs.img"
}

main
