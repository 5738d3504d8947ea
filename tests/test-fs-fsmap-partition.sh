#!/usr/bin/env bash
# GETFSMAP offsets on a partitioned volume: a DOS partition table on the
# volume (sfdisk through the FUSE file), raw data in partition 1 and a
# mounted ext4 in partition 2, reached through a loop device with
# partitions.  The snapshot taken with --mount uses the file system's map,
# shifted by the partition's start, and keeps everything outside the file
# system: after both partitions change, the snapshot's partition 1 holds
# its old bytes and its partition 2 passes fsck.ext4 -fn and holds the old
# files.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 fsck.ext4 losetup sfdisk partx sha256sum
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"
manifest() {
  (cd "$1" && find . -printf '%y %p %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
partitions() {  # LOOP: wait for its partition devices (BLKPG if no parser)
  [ -b "${1}p2" ] || partx -a "$1" 2>/dev/null
  for ((i = 0; i < 100; i++)); do [ -b "${1}p2" ] && return 0; sleep 0.05; done
  fail "no partitions on $1"
}

img=$TESTDIR/disk.img
make_image "$img" 128M
start_fssnapd "$img"
cleanup_fn fs_cleanup
wait_devfs
printf 'label: dos\n,16M\n,\n' | sfdisk -q "$RUN_DIR/dev/volume" >/dev/null || fail "sfdisk"
vol=$(losetup -P -f --show --direct-io=on "$RUN_DIR/dev/volume") || fail "losetup -P"
partitions "$vol"
head -c 4M /dev/urandom >"$TESTDIR/p1data"
dd if="$TESTDIR/p1data" of="${vol}p1" bs=1M oflag=direct status=none
mkfs.ext4 -q "${vol}p2"
MNT=$TESTDIR/mnt
mkdir "$MNT"
mount "${vol}p2" "$MNT"
for ((i = 0; i < 10; i++)); do head -c $((i * 97 * 1024 + 3)) /dev/urandom >"$MNT/f$i"; done
sync
manifest "$MNT" >"$TESTDIR/m0"

n=$(basename "$(fssnap create --mount "$MNT")") || fail "create --mount"
grep -q "$MNT: a mounted file system, candidates from its GETFSMAP map" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "the GETFSMAP map was not used"; }
cand=$(fssnap info "$n" -o candidate_chunks)
echo "snapshot $n: $cand of 2048 chunks are candidates"
[ "$cand" -lt 2048 ] || fail "every chunk is a candidate"

# Change both partitions.
head -c 4M /dev/urandom | dd of="${vol}p1" bs=1M oflag=direct status=none
for ((i = 0; i < 10; i += 2)); do rm "$MNT/f$i"; done
head -c 20M /dev/urandom >"$MNT/new"
sync

snap=$(losetup -P -r -f --show --direct-io=on "$RUN_DIR/dev/snap/$n") || fail "losetup snapshot"
partitions "$snap"
cmp -n 4194304 "$TESTDIR/p1data" "${snap}p1" || fail "partition 1 of the snapshot changed"
fsck.ext4 -fn "${snap}p2" >/dev/null || fail "fsck.ext4 -fn of the snapshot's partition 2"
mkdir "$TESTDIR/snap"
mount -o ro,noload "${snap}p2" "$TESTDIR/snap" || fail "mount the snapshot's partition 2"
manifest "$TESTDIR/snap" >"$TESTDIR/m1"
cmp -s "$TESTDIR/m0" "$TESTDIR/m1" || { diff "$TESTDIR/m0" "$TESTDIR/m1" | head; fail "the snapshot's files differ"; }
echo "partitioned volume: partition 1 kept, partition 2 clean and equal"
umount "$TESTDIR/snap"
losetup -d "$snap"
umount "$MNT"
losetup -d "$vol"
stop_fssnapd
