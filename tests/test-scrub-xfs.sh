#!/usr/bin/env bash
# fssnap scrub MOUNTPOINT on XFS: the snapshot of a busy, mounted XFS has a
# dirty log that xfs_repair cannot replay; scrub mounts the clone once
# (the log replay writes into the clone only), then runs xfs_repair -n on
# it: clean (exit 0) under a writer, nothing left behind; after an inode's
# link count is damaged through the volume (xfs_db on the unmounted file
# system), scrub reports errors (exit 7).
. "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.xfs xfs_repair xfs_db losetup
grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null ||
  { echo "skipped: no XFS in this kernel"; exit 77; }
cleanup_fn fs_cleanup

img=$TESTDIR/vol.img
make_image "$img" 320M
start_fssnapd "$img"
wait_devfs
loop=$(fssnap attach volume) || fail "attach"
mkfs.xfs -q -f "$loop" || fail "mkfs.xfs"
mnt=$TESTDIR/mnt
mkdir "$mnt" && mount "$loop" "$mnt" || fail "mount"

# A busy writer, so that the frozen log has something in it.
( i=0
  while [ ! -e "$TESTDIR/stop" ]; do
    head -c $((4096 * (1 + i % 16))) /dev/urandom >"$mnt/f$((i % 40))"
    [ $((i % 3)) = 0 ] && sync -f "$mnt/f$((i % 40))"
    i=$((i + 1))
  done ) & writer=$!
cleanup_fn "touch '$TESTDIR/stop'; wait $writer 2>/dev/null"
sleep 0.5

expect_exit 0 "" fssnap scrub "$mnt"
[[ $LAST_STDOUT == *"scrub $mnt: clean"* ]] || fail "scrub said: $LAST_STDOUT"
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "scrub left a snapshot: $(fssnap list)"
ls "$STATE_DIR" | grep -q clone && fail "scrub left a clone"
grep /tmp/fssnap-scrub /proc/mounts && fail "scrub left its mount of the clone"
touch "$TESTDIR/stop"; wait $writer

# Damage an inode through the volume, then scrub the mounted fs again.
echo hello >"$mnt/victim" && sync
ino=$(stat -c %i "$mnt/victim")
umount "$mnt"
xfs_db -x -c "inode $ino" -c "write core.nlinkv2 5" "$loop" >/dev/null || fail "xfs_db"
mount "$loop" "$mnt" || fail "remount"
expect_exit 7 "the file system has errors" fssnap scrub "$mnt"
umount "$mnt"
xfs_repair -n "$loop" >/dev/null 2>&1 && fail "the damage is gone from the live file system"
echo "scrub: XFS clean under load, errors found after a bad link count"
