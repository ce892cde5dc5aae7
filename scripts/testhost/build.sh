#!/bin/bash
# Builds the kernel NBD test host: a Debian cloud kernel (whose modules include nbd.ko) and a
# small initramfs (busybox-static, nbd-client, mke2fs, e2fsck, the nbd, virtio-net and
# virtio-blk modules) to boot under qemu with TCG. The machines' own kernel has no nbd module,
# so this guest is where a real Linux NBD client runs. See scripts/testhost/run.sh for booting
# it with a test script.
#
# The same initramfs also boots a virtual machine from a disk: given `root=/dev/vdX` on the
# kernel command line, its /init loads virtio-blk, mounts that ext4 filesystem (read-write
# with `rw`) and switch_roots into it, running `init=` (default /sbin/init). That is how
# scripts/testhost/boot.sh boots a domain from its VBD through qemu's own NBD client.
#
# Idempotent and cached under ${XVD_CACHE:-$HOME/.cache/xvd}/testhost/:
#   <kernel-version>/vmlinuz, <kernel-version>/initramfs.gz, <kernel-version>/stamp
#   current -> <kernel-version>
# The cached build is reused while its stamp matches this script's content; `--refresh`
# re-resolves the current kernel package from apt (Debian ships a new ABI now and then).
# A lock (flock) makes concurrent callers wait for one build instead of racing.
#
# Output (stdout, last lines): KERNEL=<path> and INITRAMFS=<path>. Progress goes to stderr.
set -euo pipefail

CACHE="${XVD_CACHE:-$HOME/.cache/xvd}/testhost"
META_PACKAGE=linux-image-cloud-amd64
# Debian packages this script and run.sh use, as command=package
TOOLS="qemu-system-x86_64=qemu-system-x86 depmod=kmod busybox=busybox-static
nbd-client=nbd-client mke2fs=e2fsprogs e2fsck=e2fsprogs cpio=cpio socat=socat
dpkg-deb=dpkg apt-get=apt flock=util-linux timeout=coreutils gzip=gzip"
# Guest commands that must be real binaries (dynamically linked; ldd brings their libraries)
GUEST_BINARIES="/usr/sbin/nbd-client /usr/sbin/mke2fs /usr/sbin/e2fsck"
# Kernel modules the guest needs (their dependencies are added by modprobe --show-depends)
GUEST_MODULES="nbd virtio_pci virtio_net virtio_blk"

REFRESH=0
for arg in "$@"; do
  case "$arg" in
    --refresh) REFRESH=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "testhost: $*" >&2; }

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
}

ensure_tools() {
  local missing="" pair command package
  for pair in $TOOLS; do
    command="${pair%%=*}"; package="${pair#*=}"
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
      case " $missing " in *" $package "*) ;; *) missing="$missing $package" ;; esac
    fi
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing packages:$missing (not root: cannot install)"; exit 3
  fi
  log "installing$missing"
  apt_update_once
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
}

script_hash() { sha256sum "$0" | cut -c1-16; }

# The linux-image-6.1.0-NN-cloud-amd64 package the meta package currently depends on.
resolve_kernel_package() {
  local name
  name="$(apt-cache depends "$META_PACKAGE" 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)"
  if [ -z "$name" ]; then
    apt_update_once
    name="$(apt-cache depends "$META_PACKAGE" 2>/dev/null \
      | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)"
  fi
  [ -n "$name" ] || { log "cannot resolve the package $META_PACKAGE depends on"; exit 3; }
  echo "$name"
}

download_kernel() { # package dir
  local package="$1" dir="$2"
  ( cd "$dir" && apt-get download "$package" >&2 2>/dev/null ) \
    || { apt_update_once; ( cd "$dir" && apt-get download "$package" >&2 ); }
  ls "$dir"/"$package"_*.deb >/dev/null
}

copy_with_libraries() { # binary root
  local binary="$1" root="$2" library
  install -D -m 0755 "$binary" "$root$binary"
  for library in $(ldd "$binary" | grep -o '/[^ ]*'); do
    [ -e "$root$library" ] || install -D -m 0755 "$(readlink -f "$library")" "$root$library"
  done
}

write_init() { # root
  cat > "$1/init" <<'INIT'
#!/bin/sh
# Guest init: mounts the pseudo filesystems; with root=/dev/... on the kernel command line,
# boots that disk (/lib/xvd-boot-root.sh). Otherwise brings up the virtio network (guestfwd
# answers on 10.0.2.100), runs /xvd/test.sh with `sh -e` and prints one result marker, then
# powers off.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /mnt /tmp
echo 4 > /proc/sys/kernel/printk
for word in $(cat /proc/cmdline); do
  case "$word" in root=/dev/*) exec /lib/xvd-boot-root.sh ;; esac
done
modprobe virtio_pci && modprobe virtio_net
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
echo "XVD-TEST-START"
if [ -f /xvd/test.sh ]; then
  sh -e /xvd/test.sh
  rc=$?
  reason="$(cat /tmp/xvd-fail-reason 2>/dev/null)"
  [ -n "$reason" ] || reason="in step: $(cat /tmp/xvd-step 2>/dev/null)"
  if [ "$rc" = 0 ]; then
    echo "XVD-TEST-RESULT: PASS"
  else
    echo "XVD-TEST-RESULT: FAIL exit=$rc ${reason}"
  fi
else
  echo "XVD-TEST-RESULT: FAIL no /xvd/test.sh in the initramfs"
fi
sync
poweroff -f
INIT
  chmod 0755 "$1/init"
  write_boot_root "$1"
  # helpers a test script may source: fail REASON, step NAME, value KEY VALUE (for the host)
  cat > "$1/lib/xvd-test.sh" <<'LIB'
fail() { echo "$*" > /tmp/xvd-fail-reason; echo "XVD-FAIL: $*"; exit 1; }
step() { echo "$*" > /tmp/xvd-step; echo "XVD-STEP: $*"; }
value() { echo "XVD-VALUE: $1=$2"; }
LIB
}

write_boot_root() { # root
  cat > "$1/lib/xvd-boot-root.sh" <<'BOOT'
#!/bin/sh
# Boots the root filesystem named by root= (a virtio disk): mounts it, moves /dev into it and
# switch_roots to init= (default /sbin/init). On any failure it prints one XVD-BOOT-FAIL line
# and powers off, so that the host sees why instead of a kernel panic.
root="" mode=ro init=/sbin/init
for word in $(cat /proc/cmdline); do
  case "$word" in
    root=*) root="${word#root=}" ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
    init=*) init="${word#init=}" ;;
  esac
done
die() { echo "XVD-BOOT-FAIL: $*"; sync; poweroff -f; }
modprobe virtio_pci && modprobe virtio_blk || die "cannot load virtio_blk"
i=0
while [ ! -b "$root" ]; do # the disk appears once virtio_blk has probed it
  i=$((i + 1)); [ $i -le 100 ] || die "no block device $root after 10 s"; sleep 0.1
done
mkdir -p /newroot
mount -t ext4 -o "$mode" "$root" /newroot || die "cannot mount $root ($mode)"
[ -x "/newroot$init" ] || die "no executable $init on $root"
mount --move /dev /newroot/dev 2>/dev/null || mount -t devtmpfs devtmpfs /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
BOOT
  chmod 0755 "$1/lib/xvd-boot-root.sh"
}

build_initramfs() { # build-dir version output
  local dir="$1" version="$2" output="$3" root="$1/initramfs" applet module
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,etc,proc,sys,dev,mnt,tmp,xvd}
  install -m 0755 /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    case "$applet" in */busybox) continue ;; esac # a self-link makes every exec fail (ELOOP)
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
  for binary in $GUEST_BINARIES; do
    rm -f "$root$binary"
    copy_with_libraries "$binary" "$root"
  done
  ln -sf mke2fs "$root/usr/sbin/mkfs.ext4"
  [ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"
  : > "$root/etc/fstab"
  echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
  # modules: the listed ones and their dependencies, then depmod for busybox modprobe
  for module in $(modprobe -C /dev/null -d "$dir/kernel" -S "$version" --show-depends \
      -a $GUEST_MODULES | awk '$1 == "insmod" { print $2 }' | sort -u); do
    install -D -m 0644 "$module" "$root${module#"$dir/kernel"}"
  done
  cp "$dir/kernel/lib/modules/$version"/modules.{builtin,builtin.modinfo,order} \
    "$root/lib/modules/$version/"
  depmod -b "$root" "$version"
  write_init "$root"
  ( cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet ) \
    | gzip -6 > "$output.tmp"
  mv "$output.tmp" "$output"
}

build() { # package
  local package="$1" version="${1#linux-image-}" dir
  dir="$CACHE/$version"
  log "building $dir from $package"
  rm -rf "$dir"
  mkdir -p "$dir/deb"
  download_kernel "$package" "$dir/deb"
  dpkg-deb -x "$dir/deb/${package}"_*.deb "$dir/kernel"
  depmod -b "$dir/kernel" "$version"
  cp "$dir/kernel/boot/vmlinuz-$version" "$dir/vmlinuz"
  build_initramfs "$dir" "$version" "$dir/initramfs.gz"
  rm -rf "$dir/deb" "$dir/initramfs" "$dir/kernel"
  echo "$package $(script_hash)" > "$dir/stamp"
  ln -sfn "$version" "$CACHE/current"
}

is_current_fresh() {
  local dir="$CACHE/current"
  [ -f "$dir/vmlinuz" ] && [ -f "$dir/initramfs.gz" ] && [ -f "$dir/stamp" ] \
    && [ "$(cut -d' ' -f2 "$dir/stamp")" = "$(script_hash)" ]
}

main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -w 900 9 || { log "another build held the lock for 15 minutes"; exit 3; }
  if [ "$REFRESH" = 1 ] || ! is_current_fresh; then
    ensure_tools
    local package=""
    if [ "$REFRESH" = 0 ] && [ -f "$CACHE/current/stamp" ]; then
      package="$(cut -d' ' -f1 "$CACHE/current/stamp")" # rebuild the same kernel
    fi
    # the archive drops old kernel ABIs: then take the current one
    if [ -z "$package" ] || ! apt-cache show "$package" >/dev/null 2>&1; then
      package="$(resolve_kernel_package)"
    fi
    build "$package"
  fi
  local dir
  dir="$(cd "$CACHE/current" && pwd -P)"
  echo "KERNEL=$dir/vmlinuz"
  echo "INITRAMFS=$dir/initramfs.gz"
}

main
