#!/usr/bin/env bash
# Snapshots as ublk devices: one taken of a mounted ext4 (frozen) appears
# as /dev/fssnap/NAME/snap/N, mounts read-only (ro,noload) with the old
# contents, passes e2fsck and is byte for byte the NBD export of the same
# snapshot.  Deleting it is refused while it is mounted (naming the mount,
# even with --force) and while a process holds it open (unless --force);
# snapshots created and deleted at run time get and lose their device, and
# so does one the engine deletes by itself.  create --mount uses the
# GETFSMAP map of the ext4 on the ublk device.
. "$(dirname "$0")/guest.sh"

guest_modprobe ublk_drv
make_image "$TESTDIR/vol.img" 64M
DIR=/dev/fssnap/vol.img
MNT=$TESTDIR/mnt SNAPMNT=$TESTDIR/snapmnt
mkdir -p "$MNT" "$SNAPMNT"

start_fssnapd --ublk "$TESTDIR/vol.img"
cleanup_fn "umount -l $MNT $SNAPMNT 2>/dev/null"
mkfs.ext4 -q -F "$DIR/volume" || fail "mkfs.ext4"
mount "$DIR/volume" "$MNT" || fail "mount"
echo before >"$MNT/file"
cp -a /usr/include/linux/netfilter "$MNT/tree"
# The store-on-self check knows the ublk device.
expect_exit 4 "would copy into itself" "$FSSNAP" --run-dir "$RUN_DIR" \
  create -o backing-store="$MNT/store"

fssnap create --mount "$MNT" >/dev/null || fail "create"
[ -b "$DIR/snap/0" ] || fail "no $DIR/snap/0 after create"
# The file system on the ublk device is the volume: its GETFSMAP map is used.
grep -q "$MNT: ext4, candidates from its GETFSMAP map" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "the GETFSMAP map of the ublk-mounted ext4 was not used"; }
[ "$(fssnap attach 0)" = "$DIR/snap/0" ] || fail "attach 0 does not name the ublk device"
[ "$(fssnap attach volume)" = "$DIR/volume" ] || fail "attach volume does not name the ublk device"
[ "$(fssnap info 0 -o device)" = "$DIR/snap/0" ] || fail "info 0 -o device"
fssnap list | grep -q "$DIR/snap/0" || fail "list does not show the device"
fssnap info 0 --json | grep -q '"ublk": *"'"$DIR"'/snap/0"' || fail "info --json lacks devices.ublk"

# The volume moves on; the snapshot does not.
echo after >"$MNT/file"
rm -rf "$MNT/tree"
sync -f "$MNT"
[ "$(blockdev --getro "$DIR/snap/0")" = 1 ] || fail "the snapshot device is writable"
mount -o ro,noload "$DIR/snap/0" "$SNAPMNT" || fail "mount the snapshot"
[ "$(cat "$SNAPMNT/file")" = before ] || fail "snapshot file: $(cat "$SNAPMNT/file")"
diff -r /usr/include/linux/netfilter "$SNAPMNT/tree" || fail "snapshot tree differs"

# Mounted: refused, with or without --force, naming the mount.
expect_exit 4 "mounted on $SNAPMNT" "$FSSNAP" --run-dir "$RUN_DIR" delete 0
expect_exit 4 "unmount it first" "$FSSNAP" --run-dir "$RUN_DIR" delete --force 0
umount "$SNAPMNT" || fail "umount the snapshot"
e2fsck -fn "$DIR/snap/0" >"$TESTDIR/fsck" 2>&1 || { cat "$TESTDIR/fsck" >&2; fail "e2fsck of the snapshot"; }

# Byte for byte the NBD export of the same snapshot.
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0.nbd" || fail "nbdcopy"
cmp "$TESTDIR/snap0.nbd" "$DIR/snap/0" || fail "ublk and NBD differ"

# Open by a process: refused, unless --force.
exec 7<"$DIR/snap/0"
expect_exit 4 "is open by process $$" "$FSSNAP" --run-dir "$RUN_DIR" delete 0
fssnap delete --force 0 || fail "delete --force"
exec 7<&-
[ ! -e "$DIR/snap/0" ] || fail "$DIR/snap/0 outlives its snapshot"

# Created and deleted at run time: the name comes and goes with it.
fssnap create --mount "$MNT" >/dev/null || fail "create 2"
n=$(fssnap list --json | grep -o '"number": *[0-9]*' | tail -1 | grep -o '[0-9]*$')
[ -b "$DIR/snap/$n" ] || fail "no $DIR/snap/$n"
fssnap delete "$n" || fail "delete $n"
[ ! -e "$DIR/snap/$n" ] || fail "$DIR/snap/$n outlives its snapshot"
for ((i = 0; i < 100; i++)); do
  [ "$(ls /sys/class/ublk-char | wc -l)" = 1 ] && break
  sleep 0.05
done
[ "$(ls /sys/class/ublk-char)" = ublkc0 ] || fail "devices left: $(ls /sys/class/ublk-char)"

# Deleted by the engine itself (its maxsize exceeded): the device goes
# within seconds, with no create or delete to notice it.
dd if=/dev/urandom of="$MNT/big" bs=1M count=4 conv=fsync status=none || fail "dd"
fssnap create --mount "$MNT" -o maxsize=1m >/dev/null || fail "create 3"
n=$(fssnap list --json | grep -o '"number": *[0-9]*' | tail -1 | grep -o '[0-9]*$')
[ -b "$DIR/snap/$n" ] || fail "no $DIR/snap/$n"
# Overwritten in place: its old blocks must be copied, more than 1 MiB.
dd if=/dev/urandom of="$MNT/big" bs=1M count=4 conv=notrunc,fsync status=none || fail "overwrite"
for ((i = 0; i < 100 && $(fssnap list --json | grep -c '"number"') > 0; i++)); do sleep 0.1; done
[ "$(fssnap list --json | grep -c '"number"')" = 0 ] || fail "snapshot $n outlived its maxsize"
for ((i = 0; i < 100; i++)); do
  [ ! -e "$DIR/snap/$n" ] && [ "$(ls /sys/class/ublk-char)" = ublkc0 ] && break
  sleep 0.05
done
[ ! -e "$DIR/snap/$n" ] || fail "$DIR/snap/$n outlives the snapshot the engine deleted"
[ "$(ls /sys/class/ublk-char)" = ublkc0 ] || fail "devices left after the engine's delete: $(ls /sys/class/ublk-char)"

umount "$MNT" || fail "umount"
stop_fssnapd
[ -z "$(ls /sys/class/ublk-char)" ] || fail "devices left after stop: $(ls /sys/class/ublk-char)"
[ ! -e "$DIR" ] || fail "$DIR left after stop"
echo ok
