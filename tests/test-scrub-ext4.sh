#!/usr/bin/env bash
# fssnap scrub MOUNTPOINT (online fsck, as e2scrub does with LVM): on an
# ext4 that a writer keeps busy (open, unlinked and growing files: the
# orphan list and the journal that every snapshot of a busy ext4 holds),
# scrub reports clean (exit 0) and leaves neither its snapshot nor its
# clone behind; after an inode is damaged through the volume (debugfs on
# the unmounted file system), scrub reports errors (exit 7) and the live
# file system keeps them (only the clone was repaired).
. "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 e2fsck debugfs losetup

img=$TESTDIR/vol.img
serve_ext4 "$img" 64M
loop=$VOL mnt=$MNT

# A busy writer: files written, fsynced, some kept open after unlink.
/usr/bin/python3 - "$mnt" "$TESTDIR/stop" <<'PY' &
import os, sys, time
d, stop = sys.argv[1], sys.argv[2]
held, i = [], 0
while not os.path.exists(stop):
    p = os.path.join(d, "f%d" % (i % 40))
    with open(p, "wb") as f:
        f.write(os.urandom(4096 * (1 + i % 16)))
        if i % 3 == 0:
            os.fsync(f.fileno())
    if i % 10 == 0:
        fd = os.open(p, os.O_RDWR); os.unlink(p); os.write(fd, b"x" * 8192); held.append(fd)
        if len(held) > 5: os.close(held.pop(0))
    i += 1
    time.sleep(0.002)
PY
writer=$!
cleanup_fn "touch '$TESTDIR/stop'; wait $writer 2>/dev/null"
sleep 0.5

for round in 1 2; do
  # The second time without --run-dir: fssnapd is found from the mount.
  if [ $round = 1 ]; then
    expect_exit 0 "" fssnap scrub "$mnt"
  else
    expect_exit 0 "" "$FSSNAP" --run-root "$(dirname "$RUN_DIR")" scrub "$mnt"
  fi
  [[ $LAST_STDOUT == *"scrub $mnt: clean"* ]] || fail "scrub said: $LAST_STDOUT"
done
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "scrub left a snapshot: $(fssnap list)"
ls "$STATE_DIR" | grep -q clone && fail "scrub left a clone"
touch "$TESTDIR/stop"; wait $writer

# Damage an inode through the volume, then scrub the mounted fs again.
echo hello >"$mnt/victim" && sync
ino=$(stat -c %i "$mnt/victim")
umount "$mnt"
debugfs -w -R "clri <$ino>" "$loop" >/dev/null 2>&1 || fail "debugfs"
mount "$loop" "$mnt" || fail "remount"
expect_exit 7 "the file system has errors" fssnap scrub "$mnt"
umount "$mnt"
# e2fsck -y repaired the clone only: the live file system still has it.
e2fsck -fn "$loop" >/dev/null 2>&1 && fail "the damage is gone from the live file system"
echo "scrub: clean twice under load, errors found after clri"
