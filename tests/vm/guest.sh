# Sourced first by every tests/vm/test-*.sh (instead of tests/functions.sh).
# On the host it re-runs the calling script inside a guest through
# tests/vm/run (so `bash tests/vm/test-X.sh` works as well as tests/run);
# in the guest it sources tests/functions.sh and adds:
#   guest_modprobe MOD...       load kernel modules (no udev: nothing loads
#                               them for us); fail if one cannot be loaded
#   guest_wait_dev PATH [SECS]  wait for a device node, block or character
#                               (default 10 s); fail if it does not appear
#   guest_nbd_size DEV          the device's size in 512-byte sectors, from
#                               /sys/block (0 once disconnected)
#   guest_nbd_wait_size DEV N [SECS]   wait until guest_nbd_size DEV is N
#   guest_dm_mknodes            create /dev/mapper nodes (no udev)
#   VM_DISK                     the scratch virtio disk (/dev/vda), VM_OUT
#                               the writable directory the host keeps
if [ -z "${FSSNAP_VM_GUEST:-}" ]; then
  exec "$(dirname "${BASH_SOURCE[0]}")/run" "$0" "$@"
fi
. "$(dirname "${BASH_SOURCE[0]}")/../functions.sh"

guest_modprobe() {
  local m
  for m in "$@"; do modprobe "$m" || fail "modprobe $m"; done
}

guest_wait_dev() {
  local dev=$1 secs=${2:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    [ -b "$dev" ] || [ -c "$dev" ] && return 0
    sleep 0.05
  done
  fail "no device node $dev after $secs s"
}

guest_nbd_size() { cat "/sys/block/$(basename "$1")/size"; }

guest_nbd_wait_size() {
  local dev=$1 want=$2 secs=${3:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    [ "$(guest_nbd_size "$dev")" = "$want" ] && return 0
    sleep 0.05
  done
  fail "$dev has size $(guest_nbd_size "$dev"), not $want, after $secs s"
}

guest_dm_mknodes() { dmsetup mknodes >/dev/null || fail "dmsetup mknodes"; }
