#!/usr/bin/env bash
# fssnap mount of a snapshot of a mounted XFS: ro,norecovery,nouuid (the
# live file system with the same UUID stays mounted), the files as they
# were at the snapshot, and a clean umount that drops the loop device.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.xfs losetup
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"

make_image "$TESTDIR/disk.img" 320M
start_fssnapd "$TESTDIR/disk.img"
cleanup_fn fs_cleanup
wait_devfs
vol=$(fssnap attach volume) || fail "attach volume"
mkfs.xfs -q "$vol" || fail "mkfs.xfs"
MNT=$TESTDIR/mnt SNAP=$TESTDIR/snap
mkdir "$MNT" "$SNAP"
mount "$vol" "$MNT"
head -c 1M /dev/urandom >"$MNT/file"
want=$(sha256sum <"$MNT/file")
dev=$(fssnap create --mount "$MNT") || fail "create"
n=$(basename "$dev")
head -c 1M /dev/urandom >"$MNT/file"
sync

expect_exit 0 "" fssnap mount "$n" "$SNAP"
opts=$(awk -v d="$SNAP" '$2 == d { print $3, $4 }' /proc/mounts)
[[ $opts == xfs\ ro,* ]] && [[ $opts == *norecovery* ]] && [[ $opts == *nouuid* ]] || fail "mounted as $opts"
[ "$(sha256sum <"$SNAP/file")" = "$want" ] || fail "the snapshot does not hold the file as it was"
dev=$(awk -v d="$SNAP" '$2 == d { print $1 }' /proc/mounts)
expect_exit 0 "" fssnap umount "$SNAP"
[ -e "/sys/block/${dev#/dev/}/loop/backing_file" ] && fail "$dev still attached"
umount "$MNT"
fssnap detach volume
echo "XFS snapshot mounted $opts"
