#!/usr/bin/env bash
# A block-device origin is ours alone: fssnapd claims it with O_EXCL and
# refuses, with one line naming the user and what to do, a device that is
# mounted, swapped on, backs a loop device or is held by another fssnapd,
# and the whole disk of a partition it serves or the partitions of a disk
# it serves (loop devices with a partition table made by sfdisk).  While
# it serves a device, mount and mkfs of it (or of its partitions) fail, and
# a loop device set up on it is logged and counted.
# Every case ends with the device's bytes unchanged.
source "$(dirname "$0")/functions.sh"
requires_root
requires losetup mkfs.ext4 mkswap swapon swapoff sfdisk partx sha256sum

MNT=$TESTDIR/mnt
mkdir -p "$MNT"
cleanup_fn fs_cleanup
d() {  # a second fssnapd, in the foreground, on its own dirs
  "$FSSNAPD" --foreground --no-fuse --run-dir "$TESTDIR/run2" \
    --state-dir "$TESTDIR/state2" "$@"
}
sum() { sha256sum <"$1" | cut -d' ' -f1; }
unchanged() {  # DEV SUM WHAT
  [ "$(sum "$1")" = "$2" ] || fail "$3 changed $1"
  echo "$3: refused, $1 unchanged"
}

# ---- A whole device: mounted, swap, backing a loop device, served. ----
make_image "$TESTDIR/disk.img" 32M
dev=$(losetup -f --show "$TESTDIR/disk.img") || fail "losetup"
mkfs.ext4 -q "$dev"
before=$(sum "$dev")

mount -o ro,noload "$dev" "$MNT" || fail "mount $dev"
expect_exit 1 "origin $dev is in use: mounted on $MNT (unmount it first: umount $MNT)" d "$dev"
umount "$MNT"
unchanged "$dev" "$before" "mounted"

over=$(losetup -f --show -r "$dev") || fail "losetup on $dev"
cleanup_fn "losetup -d '$over' 2>/dev/null"
expect_exit 1 "origin $dev is in use: backing the loop device $over (detach it first: losetup -d $over)" d "$dev"
losetup -d "$over"
unchanged "$dev" "$before" "backing a loop device"

make_image "$TESTDIR/swap.img" 16M
sdev=$(losetup -f --show "$TESTDIR/swap.img") || fail "losetup swap"
mkswap -q "$sdev" >/dev/null
if swapon "$sdev" 2>/dev/null; then
  cleanup_fn "swapoff '$sdev' 2>/dev/null"
  expect_exit 1 "origin $sdev is in use: in use as swap (swapoff $sdev first)" d "$sdev"
  swapoff "$sdev"
  echo "swap: refused"
else
  echo "swap: this kernel cannot swap on a loop device, case skipped"
fi

# Served: mount and mkfs fail with EBUSY, a second fssnapd is refused.
start_fssnapd "$dev" --no-fuse
rc=0; mount -o ro,noload "$dev" "$MNT" 2>"$TESTDIR/mount.err" || rc=$?
[ "$rc" -ne 0 ] || fail "mount of the served $dev succeeded"
grep -q "already mounted or mount point busy" "$TESTDIR/mount.err" ||
  fail "mount said: $(cat "$TESTDIR/mount.err")"
mkfs.ext4 -q "$dev" 2>/dev/null && fail "mkfs.ext4 of the served $dev succeeded"
expect_exit 1 "origin $dev is already served by another fssnapd" d "$dev"
# A loop device is let through by the kernel: logged and counted.
over=$(losetup -f --show -r "$dev") || fail "losetup on the served $dev"
cleanup_fn "losetup -d '$over' 2>/dev/null"
for ((i = 0; i < 100; i++)); do
  grep -q "origin $dev was opened by another program: backing the loop device $over" "$FSSNAPD_LOG" && break
  sleep 0.1
done
grep -q "origin $dev was opened by another program: backing the loop device $over" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "no warning for a loop device on the served $dev"; }
[ "$(fssnap stats --json | json_get 'j["origin_opened_elsewhere"]')" = 1 ] ||
  fail "the loop device was not counted once"
losetup -d "$over"
stop_fssnapd
unchanged "$dev" "$before" "served then mounted"

# ---- Partition vs whole disk. ----
make_image "$TESTDIR/parts.img" 64M
printf 'label: dos\n,24M\n,\n' | sfdisk -q "$TESTDIR/parts.img" >/dev/null || fail "sfdisk"
disk=$(losetup -P -f --show "$TESTDIR/parts.img") || fail "losetup -P"
# Kernels without partition table parsers: tell it the partitions (BLKPG).
[ -b "${disk}p1" ] || partx -a "$disk" 2>/dev/null
for ((i = 0; i < 100; i++)); do [ -b "${disk}p2" ] && break; sleep 0.05; done
[ -b "${disk}p2" ] || fail "no partitions on $disk"
mkfs.ext4 -q "${disk}p1"
mkfs.ext4 -q "${disk}p2"
before=$(sum "$disk")

# Serve p1: the whole disk is refused, p1 cannot be mounted, p2 is
# another region and may be served.
start_fssnapd "${disk}p1" --no-fuse
expect_exit 1 "origin $disk is in use: its partition ${disk}p1 is served by another fssnapd" d "$disk"
mount -o ro,noload "${disk}p1" "$MNT" 2>/dev/null && fail "mounted the served ${disk}p1"
mount -o ro,noload "$disk" "$MNT" 2>/dev/null && fail "mounted the disk of the served ${disk}p1"
"$FSSNAPD" --foreground --no-fuse --run-dir "$TESTDIR/run2" \
  --state-dir "$TESTDIR/state2" "${disk}p2" >"$TESTDIR/p2.log" 2>&1 &
p2=$!
cleanup_fn "kill $p2 2>/dev/null"
for ((i = 0; i < 100; i++)); do grep -q "^fssnapd: serving" "$TESTDIR/p2.log" && break; sleep 0.05; done
grep -q "^fssnapd: serving ${disk}p2" "$TESTDIR/p2.log" || fail "p2 next to a served p1: $(cat "$TESTDIR/p2.log")"
kill -TERM "$p2"
wait_exit "$p2" || fail "the fssnapd of p2 exited $?"
stop_fssnapd
unchanged "$disk" "$before" "whole disk of a served partition"

# Serve the disk: each partition is refused, and cannot be mounted.
start_fssnapd "$disk" --no-fuse
expect_exit 1 "origin ${disk}p1 is in use: its whole disk $disk is served by another fssnapd" d "${disk}p1"
expect_exit 1 "origin ${disk}p2 is in use: its whole disk $disk is served by another fssnapd" d "${disk}p2"
mount -o ro,noload "${disk}p2" "$MNT" 2>/dev/null && fail "mounted ${disk}p2 of the served disk"
stop_fssnapd
unchanged "$disk" "$before" "partition of a served disk"

# A mounted partition, a partition backing a loop device: the disk is
# refused and the message names the partition.
mount -o ro,noload "${disk}p1" "$MNT" || fail "mount ${disk}p1"
expect_exit 1 "origin $disk is in use: its partition ${disk}p1 is mounted on $MNT" d "$disk"
umount "$MNT"
over=$(losetup -f --show -r "${disk}p2") || fail "losetup on ${disk}p2"
cleanup_fn "losetup -d '$over' 2>/dev/null"
expect_exit 1 "origin $disk is in use: its partition ${disk}p2 is backing the loop device $over" d "$disk"
losetup -d "$over"
unchanged "$disk" "$before" "disk of a mounted or looped partition"

# Nothing left over: the disk is served again at the end.
start_fssnapd "$disk" --no-fuse
stop_fssnapd
echo "all block-device claims ok"
