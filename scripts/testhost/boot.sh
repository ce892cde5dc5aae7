#!/bin/bash
# Boots one virtual machine whose root filesystem is a disk that qemu reaches through its own
# NBD client: a Xen-style domain booted from its VBD. The kernel and initramfs are the test
# host's (build.sh); the initramfs sees `root=/dev/vda rw`, mounts the virtio disk and
# switch_roots into it. A disk cloned from scripts/testhost/golden.sh's image writes its name
# and a file of its own, syncs and powers off.
#
# Usage: boot.sh --drive URI --name NAME [--timeout SECONDS] [--append TEXT]
#   URI   nbd://127.0.0.1:PORT/DOMAIN/DEVICE, nbd+unix:///DOMAIN/DEVICE?socket=PATH, or an
#         image file
#   NAME  the guest's name (xvd.name= on the kernel command line)
#   TEXT  more kernel command line words (e.g. xvd.data_kib=1024)
# Prints the guest console on stdout. Exit: 0 the guest powered off, 1 it reported a failure
# (XVD-BOOT-FAIL, XVD-GUEST-FAIL or a kernel panic on its console), 2 usage, 3 qemu failed or timed out.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DRIVE="" NAME="" TIMEOUT_S=120 APPEND=""
# Guest RAM: the cloud kernel and its initramfs boot in far less
MEMORY_MIB=256

usage() { sed -n '2,15p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --drive) DRIVE="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --timeout) TIMEOUT_S="$2"; shift 2 ;;
    --append) APPEND="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "boot.sh: unknown argument: $1" >&2; usage ;;
  esac
done
# qemu splits -drive options at commas: a URI or path must not hold one
[[ "$DRIVE" =~ ^[A-Za-z0-9_./:+?=@%-]+$ ]] || { echo "boot.sh: bad or no --drive" >&2; usage; }
[[ "$NAME" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "boot.sh: bad or no --name" >&2; usage; }
[[ "$TIMEOUT_S" =~ ^[0-9]+$ ]] || { echo "boot.sh: bad --timeout" >&2; usage; }
[[ "$APPEND" =~ ^[A-Za-z0-9_.=\ -]*$ ]] || { echo "boot.sh: bad --append" >&2; usage; }

ASSETS="$("$HERE/build.sh")"
KERNEL="$(sed -n 's/^KERNEL=//p' <<<"$ASSETS")"
INITRAMFS="$(sed -n 's/^INITRAMFS=//p' <<<"$ASSETS")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/xvd-boot.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

set +e
timeout --kill-after=5 "$TIMEOUT_S" qemu-system-x86_64 \
  -accel tcg -cpu max -m "$MEMORY_MIB" -smp 1 \
  -nographic -nodefaults -serial stdio -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRAMFS" \
  -append "console=ttyS0 panic=-1 loglevel=4 root=/dev/vda rw xvd.name=$NAME $APPEND" \
  -drive "file=$DRIVE,format=raw,if=virtio" \
  </dev/null | tee "$WORK/console"
status="${PIPESTATUS[0]}"
set -e

if grep -aq -e 'XVD-BOOT-FAIL:' -e 'XVD-GUEST-FAIL:' -e 'Kernel panic' "$WORK/console"; then exit 1; fi
if [ "$status" != 0 ]; then
  echo "boot.sh: $NAME: qemu exited $status$([ "$status" = 124 ] \
    && echo ", timed out after ${TIMEOUT_S}s")" >&2
  exit 3
fi
exit 0
