#!/usr/bin/env bash
# XFS with the reverse-mapping btree and shared extents: GETFSMAP then
# lists owners (inodes, btrees, the log; a reflinked file's blocks once per
# owner) and free space as gaps.  A snapshot taken with --mount, after the
# files are changed and the space refilled, must still be clean for
# xfs_repair -n (on a writable clone of it, after a mount of the clone
# replayed its log) and hold the old files, the reflinked copy included.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.xfs xfs_repair losetup sha256sum
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null ||
  { echo "skipped: no XFS in this kernel"; exit 77; }

cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"
manifest() {
  (cd "$1" && find . -printf '%y %p %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

img=$TESTDIR/disk.img
make_image "$img" 512M
start_fssnapd "$img"
cleanup_fn fs_cleanup
wait_devfs
vol=$(fssnap attach volume) || fail "attach volume"
mkfs.xfs -q -f -m rmapbt=1,reflink=1 "$vol" || fail "mkfs.xfs -m rmapbt=1"
MNT=$TESTDIR/mnt
mkdir "$MNT"
mount "$vol" "$MNT" || fail "mount"
for ((i = 0; i < 10; i++)); do head -c $((i * 131 * 1024 + 5)) /dev/urandom >"$MNT/f$i"; done
head -c 16M /dev/urandom >"$MNT/big"
cp --reflink=always "$MNT/big" "$MNT/big.clone" || fail "cp --reflink"
sync
manifest "$MNT" >"$TESTDIR/m0"

n=$(basename "$(fssnap create --mount "$MNT")") || fail "create --mount"
grep -q "$MNT: xfs, candidates from its GETFSMAP map" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "the GETFSMAP map was not used"; }
echo "snapshot $n: $(fssnap info "$n" -o candidate_chunks) of 8192 chunks are candidates"

# Unshare, delete, refill: the old blocks are overwritten.
dd if=/dev/urandom of="$MNT/big.clone" bs=1M count=8 conv=notrunc status=none
rm "$MNT/big" "$MNT/f3" "$MNT/f7"
dd if=/dev/urandom of="$MNT/fill" bs=1M count=128 status=none || fail "fill"
sync

clone=$(fssnap clone --attach "$n") || fail "clone --attach $n"
mkdir "$TESTDIR/clone"
mount -o nouuid "$clone" "$TESTDIR/clone" || fail "mount (log replay) of the clone"
manifest "$TESTDIR/clone" >"$TESTDIR/m1"
umount "$TESTDIR/clone"
xfs_repair -n "$clone" >"$TESTDIR/repair" 2>&1 || { head -40 "$TESTDIR/repair"; fail "xfs_repair -n"; }
fssnap delete-clone --force 0 || fail "delete-clone"
cmp -s "$TESTDIR/m0" "$TESTDIR/m1" || { diff "$TESTDIR/m0" "$TESTDIR/m1" | head; fail "the snapshot's files differ"; }
echo "snapshot $n: xfs_repair -n clean, $(wc -l <"$TESTDIR/m0") manifest lines equal"
umount "$MNT"
fssnap detach volume || fail "detach volume"
stop_fssnapd
