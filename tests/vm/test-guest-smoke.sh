#!/usr/bin/env bash
# The guest itself: the 6.12 kernel, the host's root read-only with the
# freshly built binaries, private scratch, the virtio disk, the modules the
# other guest tests load, and fssnapd serving NBD inside.
. "$(dirname "$0")/guest.sh"

[ "$(uname -r)" = 6.12.117+deb12-cloud-amd64 ] || fail "kernel $(uname -r)"
touch /usr/.fssnap-vm-probe 2>/dev/null && fail "the host root is writable in the guest"
[ -x "$FSSNAPD" ] || fail "$FSSNAPD is not visible in the guest"
touch "$TESTDIR/x" "$VM_OUT/x" || fail "no scratch space"

# The disk: a pattern written with O_DIRECT reads back.
head -c 1M /dev/urandom >"$TESTDIR/pattern"
dd if="$TESTDIR/pattern" of="$VM_DISK" bs=1M oflag=direct status=none || fail "write $VM_DISK"
cmp -n 1048576 "$TESTDIR/pattern" "$VM_DISK" || fail "$VM_DISK does not read back"

guest_modprobe ublk_drv nbd loop dm-snapshot
guest_wait_dev /dev/nbd0
guest_wait_dev /dev/ublk-control
[ -c /dev/mapper/control ] || fail "no /dev/mapper/control"

make_image "$TESTDIR/vol.img" 64M
start_fssnapd "$TESTDIR/vol.img"
size=$(nbdinfo --size "$(nbd_uri volume)") || fail "nbdinfo"
[ "$size" = 67108864 ] || fail "volume size $size"
stop_fssnapd
echo "guest ok"
