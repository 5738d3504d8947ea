#!/usr/bin/env bash
# Writable clones as ublk devices: a clone of a snapshot of a mounted ext4
# appears as /dev/fssnap/NAME/clone/K when it is created, mounts
# read-write (the mount replays the journal the frozen snapshot holds),
# takes writes, passes e2fsck, and is byte for byte the NBD export of the
# same clone, while the snapshot stays byte for byte what it was.  A kill
# -9 of fssnapd with the clone mounted and being written is a pause: the
# restarted daemon takes the clone's device over and the writes carry on.
# fstrim frees the overlay's space under a deleted file.
# delete-clone is refused while the clone is mounted (even with --force)
# and while a process holds it open (unless --force), and removes the
# device; fssnap scrub checks its clone on the clone's ublk device; no
# device is left after stop.
. "$(dirname "$0")/guest.sh"

guest_modprobe ublk_drv
make_image "$TESTDIR/vol.img" 64M
DIR=/dev/fssnap/vol.img
MNT=$TESTDIR/mnt CMNT=$TESTDIR/clonemnt
mkdir -p "$MNT" "$CMNT"

start_fssnapd --ublk "$TESTDIR/vol.img"
cleanup_fn "umount -l $MNT $CMNT 2>/dev/null"
mkfs.ext4 -q -F "$DIR/volume" || fail "mkfs.ext4"
mount "$DIR/volume" "$MNT" || fail "mount"
echo before >"$MNT/file"
cp -a /usr/include/linux/netfilter "$MNT/tree"
fssnap create --mount "$MNT" >/dev/null || fail "create"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0.ref" || fail "nbdcopy snap/0"
echo after >"$MNT/file"

# Created at run time: the device comes with the reply.
[ "$(fssnap clone 0)" = "$DIR/clone/0" ] || fail "clone 0 does not print the ublk device"
[ -b "$DIR/clone/0" ] || fail "no $DIR/clone/0"
fssnap info --json clone/0 | grep -q '"ublk": *"'"$DIR"'/clone/0"' || fail "info clone/0 lacks devices.ublk"
fssnap list | grep -q "$DIR/clone/0" || fail "list does not show the clone's device"
[ "$(blockdev --getro "$DIR/clone/0")" = 0 ] || fail "the clone's device is read-only"

# Mounted read-write: the old contents, then our writes.
mount "$DIR/clone/0" "$CMNT" || fail "mount the clone"
[ "$(cat "$CMNT/file")" = before ] || fail "clone file: $(cat "$CMNT/file")"
diff -r /usr/include/linux/netfilter "$CMNT/tree" || fail "clone tree differs"
echo clone >"$CMNT/file"
cp -a /usr/include/linux/netfilter "$CMNT/tree2"
dd if=/dev/urandom of="$CMNT/blob" bs=1M count=4 status=none
sync -f "$CMNT"
expect_exit 4 "mounted on $CMNT" "$FSSNAP" --run-dir "$RUN_DIR" delete-clone 0
expect_exit 4 "unmount it first" "$FSSNAP" --run-dir "$RUN_DIR" delete-clone --force 0
expect_exit 4 "has clone 0" "$FSSNAP" --run-dir "$RUN_DIR" delete 0

# kill -9 while the clone is mounted and written: a pause, no error.
( for i in $(seq 1 40); do
    cp "$CMNT/blob" "$CMNT/blob.$i" && sync -f "$CMNT" && rm "$CMNT/blob.$i" \
      || { echo "pass $i failed" >>"$TESTDIR/errors"; break; }
  done ) & writer=$!
dmesg -C
sleep 1
kill -9 "$FSSNAPD_PID"
wait "$FSSNAPD_PID" 2>/dev/null
FSSNAPD_PID=
: >"$FSSNAPD_LOG"
sleep 0.5
start_fssnapd --ublk "$TESTDIR/vol.img"
grep -q "recovered clone 0 as /dev/ublkb" "$FSSNAPD_LOG" \
  || { cat "$FSSNAPD_LOG" >&2; fail "the restart did not recover the clone's device"; }
wait "$writer"
[ ! -s "$TESTDIR/errors" ] || { cat "$TESTDIR/errors" >&2; fail "the writes to the clone failed"; }
cmp "$CMNT/blob" "$CMNT/blob.1" 2>/dev/null && fail "a pass left its copy"
if dmesg | grep -Ei 'I/O error|EXT4-fs (error|warning)|remount.*read-only|Buffer I/O' >&2; then
  fail "the kernel logged errors"
fi
[ "$(cat "$CMNT/file")" = clone ] || fail "clone file after the restart: $(cat "$CMNT/file")"
# fstrim: the clone's DISCARDs free the overlay's space under the
# deleted blob (4 MiB).
overlay=$(ls "$STATE_DIR"/*.clone0.data) || fail "no overlay file"
rm "$CMNT/blob"
sync -f "$CMNT"
blocks=$(stat -c %b "$overlay")
fstrim "$CMNT" || fail "fstrim the clone"
freed=$(( (blocks - $(stat -c %b "$overlay")) * 512 ))
(( freed >= 3 << 20 )) || fail "fstrim freed $freed bytes of the overlay, not the blob's 4 MiB"
umount "$CMNT" || fail "umount the clone"
e2fsck -fn "$DIR/clone/0" >"$TESTDIR/fsck" 2>&1 || { cat "$TESTDIR/fsck" >&2; fail "e2fsck of the clone"; }

# The clone's device is its NBD export; the snapshot has not moved.
nbdcopy "$(nbd_uri clone/0)" "$TESTDIR/clone0.nbd" || fail "nbdcopy clone/0"
cmp "$TESTDIR/clone0.nbd" "$DIR/clone/0" || fail "ublk and NBD differ for clone 0"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0.now" || fail "nbdcopy snap/0 again"
cmp "$TESTDIR/snap0.ref" "$TESTDIR/snap0.now" || fail "snapshot 0 changed under its clone"
cmp "$TESTDIR/snap0.ref" "$DIR/snap/0" || fail "snapshot 0's ublk device changed"
cmp -s "$TESTDIR/snap0.ref" "$TESTDIR/clone0.nbd" && fail "the clone's writes went nowhere"

# A second clone, unused, goes with delete-clone.
[ "$(fssnap clone 0)" = "$DIR/clone/1" ] || fail "clone 1"
cmp "$TESTDIR/snap0.ref" "$DIR/clone/1" || fail "clone 1 is not snapshot 0"
fssnap delete clone/1 || fail "delete clone/1"
[ ! -e "$DIR/clone/1" ] || fail "$DIR/clone/1 outlives its clone"

# Open by a process: refused, unless --force.
exec 7<"$DIR/clone/0"
expect_exit 4 "is open by process $$" "$FSSNAP" --run-dir "$RUN_DIR" delete-clone 0
fssnap delete-clone --force 0 || fail "delete-clone --force"
exec 7<&-
[ ! -e "$DIR/clone/0" ] || fail "$DIR/clone/0 outlives its clone"
ls "$STATE_DIR" | grep -q clone && fail "clone files left: $(ls "$STATE_DIR")"
fssnap delete 0 || fail "delete 0 after its clones"
for ((i = 0; i < 100; i++)); do
  [ "$(ls /sys/class/ublk-char | wc -l)" = 1 ] && break
  sleep 0.05
done
[ "$(ls /sys/class/ublk-char | wc -l)" = 1 ] || fail "devices left: $(ls /sys/class/ublk-char)"

# scrub checks its clone on the clone's ublk device (no loop device).
: >"$FSSNAPD_LOG"
expect_exit 0 "" "$FSSNAP" --run-dir "$RUN_DIR" scrub "$MNT"
[[ $LAST_STDOUT == *"scrub $MNT: clean"* ]] || fail "scrub said: $LAST_STDOUT"
grep -q "serving clone 0 as /dev/ublkb" "$FSSNAPD_LOG" || fail "scrub's clone had no ublk device"
losetup -a | grep -q "dev/clone" && fail "scrub attached a loop device"
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "scrub left a snapshot"
for ((i = 0; i < 100; i++)); do
  [ "$(ls /sys/class/ublk-char | wc -l)" = 1 ] && break
  sleep 0.05
done
[ "$(ls /sys/class/ublk-char | wc -l)" = 1 ] || fail "scrub left devices: $(ls /sys/class/ublk-char)"

umount "$MNT" || fail "umount"
stop_fssnapd
[ -z "$(ls /sys/class/ublk-char)" ] || fail "devices left after stop: $(ls /sys/class/ublk-char)"
[ ! -e "$DIR" ] || fail "$DIR left after stop"
echo ok
