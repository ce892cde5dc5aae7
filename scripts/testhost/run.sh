#!/bin/bash
# Boots the kernel NBD test host (built by build.sh) once, with one test script, and exits with
# the guest's verdict. The script is appended to the base initramfs as a second gzipped cpio
# archive (directory entry `xvd` first, then `xvd/test.sh`); the guest's /init runs it with
# `sh -e` and prints `XVD-TEST-RESULT: PASS` or `XVD-TEST-RESULT: FAIL <reason>` on ttyS0.
#
# Network: qemu user networking with restrict=on (the guest reaches no real network); the only
# way out is a guestfwd of 10.0.2.100:10809, which starts one socat per guest connection to the
# NBD server under test on the host (TCP on 127.0.0.1 or a Unix socket). In the guest:
#   nbd-client 10.0.2.100 10809 /dev/nbd0 -N EXPORT
#
# Usage: run.sh --script FILE (--port PORT | --socket PATH) [--timeout SECONDS]
# Prints the guest console on stdout. Exit: 0 PASS, 1 FAIL, 2 usage, 3 no verdict (crash or
# timeout; the console shows why).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
GUEST_ADDRESS=10.0.2.100
GUEST_PORT=10809
SCRIPT="" PORT="" SOCKET="" TIMEOUT_S=120

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --script) SCRIPT="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --socket) SOCKET="$2"; shift 2 ;;
    --timeout) TIMEOUT_S="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage ;;
  esac
done
[ -f "$SCRIPT" ] || { echo "run.sh: --script FILE is required" >&2; usage; }
if [ -n "$PORT" ]; then
  [[ "$PORT" =~ ^[0-9]+$ ]] || { echo "run.sh: bad --port" >&2; exit 2; }
  TARGET="TCP:127.0.0.1:$PORT"
elif [ -n "$SOCKET" ]; then
  # qemu splits -netdev options at commas; socat splits its address at colons and commas
  [[ "$SOCKET" =~ ^[A-Za-z0-9_./+-]+$ ]] || { echo "run.sh: unusable --socket path" >&2; exit 2; }
  TARGET="UNIX-CONNECT:$SOCKET"
else
  echo "run.sh: --port or --socket is required" >&2; usage
fi

ASSETS="$("$HERE/build.sh")"
KERNEL="$(sed -n 's/^KERNEL=//p' <<<"$ASSETS")"
INITRAMFS="$(sed -n 's/^INITRAMFS=//p' <<<"$ASSETS")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/xvd-testhost.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/extra/xvd"
install -m 0755 "$SCRIPT" "$WORK/extra/xvd/test.sh"
( cd "$WORK/extra" && printf 'xvd\nxvd/test.sh\n' | cpio -o -H newc -R 0:0 --quiet ) \
  | gzip -1 > "$WORK/extra.gz"
cat "$INITRAMFS" "$WORK/extra.gz" > "$WORK/initramfs.gz"

NETDEV="user,id=n0,restrict=on,guestfwd=tcp:$GUEST_ADDRESS:$GUEST_PORT-cmd:socat - $TARGET"
set +e
timeout --kill-after=5 "$TIMEOUT_S" qemu-system-x86_64 \
  -accel tcg -cpu max -m 512 -smp 1 \
  -nographic -nodefaults -serial stdio -no-reboot \
  -kernel "$KERNEL" -initrd "$WORK/initramfs.gz" \
  -append "console=ttyS0 panic=-1 loglevel=4" \
  -netdev "$NETDEV" -device virtio-net-pci,netdev=n0,romfile= \
  </dev/null | tee "$WORK/console"
status="${PIPESTATUS[0]}"
set -e

verdict="$(grep -ao 'XVD-TEST-RESULT: .*' "$WORK/console" | tail -n1 | tr -d '\r')"
case "$verdict" in
  "XVD-TEST-RESULT: PASS") exit 0 ;;
  "XVD-TEST-RESULT: FAIL"*) exit 1 ;;
  *)
    echo "run.sh: no verdict from the guest (qemu exit $status$([ "$status" = 124 ] \
      && echo ", timed out after ${TIMEOUT_S}s"))" >&2
    exit 3 ;;
esac
