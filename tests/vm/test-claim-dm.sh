#!/usr/bin/env bash
# Device-mapper holds what it stacks on: fssnapd refuses a device under a
# dm linear target, naming the mapping and how to remove it; once it is
# removed fssnapd serves the device, and while it does dmsetup cannot stack
# on it.  The device's bytes end unchanged.
. "$(dirname "$0")/guest.sh"
requires dmsetup losetup sha256sum

guest_modprobe loop dm-mod
make_image "$TESTDIR/disk.img" 16M
dev=$(losetup -f --show "$TESTDIR/disk.img") || fail "losetup"
cleanup_fn "losetup -d '$dev' 2>/dev/null"
head -c 1M /dev/urandom | dd of="$dev" bs=1M conv=fsync status=none
before=$(sha256sum <"$dev")
table="0 $(blockdev --getsz "$dev") linear $dev 0"

name=fssnap-claim-$$
dmsetup create "$name" --table "$table" || fail "dmsetup create"
cleanup_fn "dmsetup remove '$name' 2>/dev/null"
expect_exit 1 "origin $dev is in use: held by device-mapper $name (remove it first: dmsetup remove $name)" \
  "$FSSNAPD" --foreground --no-fuse --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" "$dev"
dmsetup remove "$name" || fail "dmsetup remove"
echo "held by device-mapper: refused"

start_fssnapd "$dev" --no-fuse
dmsetup create "$name" --table "$table" 2>/dev/null && fail "dmsetup stacked on the served $dev"
stop_fssnapd
[ "$(sha256sum <"$dev")" = "$before" ] || fail "$dev changed"
echo "served: dmsetup refused, $dev unchanged"
