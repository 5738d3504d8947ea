#!/usr/bin/env bash
# The candidate bitmap of a real ext4: a 1 GiB volume 10% full gives a
# snapshot whose candidate chunks stay under 20% of all chunks, and writing
# new files into its free space copies almost nothing (only blocks the file
# system already used: journal, bitmaps, inode tables, directories).
# Anything that is not ext2/3/4 makes every chunk a candidate.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup timeout
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"

info_field() { fssnap info "$1" --json | json_get "j[\"$2\"]"; }
copied() { fssnap stats --json | json_get 'j["chunks_copied"]'; }

img=$TESTDIR/disk.img
make_image "$img" 1G
start_fssnapd "$img"
cleanup_fn fs_cleanup
wait_devfs

# Nothing on the volume yet: every chunk.
n=$(basename "$(fssnap create -o transient)")
[ "$(info_field "$n" candidate_chunks)" = "$(info_field "$n" chunks)" ] || fail "an empty volume must have every chunk as a candidate"
fssnap delete "$n"

vol=$(fssnap attach volume) || fail "attach volume"
mkfs.ext4 -q "$vol"
MNT=$TESTDIR/mnt
mkdir "$MNT"
mount "$vol" "$MNT"
for i in $(seq 10); do head -c 10M /dev/urandom >"$MNT/file$i"; done
sync
df -h "$MNT"

# A backing store on the file system being snapshotted is refused, and the
# file system is thawed after the refusal.
mkdir "$MNT/store"
expect_exit 4 "is on the file system being snapshotted" fssnap create -o "backing-store=$MNT/store" --mount "$MNT"
timeout 10 touch "$MNT/after-refusal" || fail "file system left frozen"
rm "$MNT/after-refusal"
rmdir "$MNT/store"

n=$(basename "$(fssnap create -o transient --mount "$MNT")")
cands=$(info_field "$n" candidate_chunks)
chunks=$(info_field "$n" chunks)
echo "candidates: $cands of $chunks chunks ($((100 * cands / chunks))%)"
[ $((cands * 5)) -lt "$chunks" ] || fail "too many candidates: $cands of $chunks"
[ $((cands * 10)) -ge "$((chunks * 1))" ] || fail "too few candidates for 100 MiB of data: $cands"

# 200 MiB of new files into the free space.
before=$(copied)
for i in $(seq 20); do head -c 10M /dev/urandom >"$MNT/new$i"; done
sync
after=$(copied)
written=$((200 * 16))           # 64 KiB chunks
echo "new files: $written chunks written, $((after - before)) chunks copied"
[ $(((after - before) * 10)) -lt "$written" ] || fail "writing into free space copied $((after - before)) chunks"
fssnap info "$n"

umount "$MNT"
fssnap detach volume
fssnap delete "$n"
stop_fssnapd
