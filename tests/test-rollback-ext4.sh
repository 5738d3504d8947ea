#!/usr/bin/env bash
# Rollback of an ext4 volume to a snapshot taken with --mount (candidates
# from the allocation maps, so free space reads as zeros in it): after
# files are written, deleted and rewritten, unmount, rollback; the volume
# equals the snapshot byte for byte, e2fsck is clean, the files are those
# of the snapshot, and diff N volume is empty.
. "$(dirname "$0")/functions.sh"
requires_root
requires nbdcopy mkfs.ext4 e2fsck losetup

img=$TESTDIR/vol.img
serve_ext4 "$img" 32M
loop=$VOL mnt=$MNT
for i in 1 2 3; do head -c 300000 /dev/urandom >"$mnt/keep$i"; done
sync
sums=$(cd "$mnt" && sha256sum keep*)
fssnap create --mount "$mnt" >/dev/null || fail "create"
[ "$(fssnap info 0 -o candidate_chunks)" -lt "$(fssnap info 0 -o chunks)" ] \
  || fail "every chunk is a candidate: the test needs free space"
rm "$mnt/keep2"
for i in 1 2 3 4 5; do head -c 1000000 /dev/urandom >"$mnt/new$i"; done
head -c 100000 /dev/urandom >>"$mnt/keep1"
sync
fssnap create --mount "$mnt" >/dev/null || fail "create 1"
umount "$mnt"
fssnap detach volume || fail "detach"

fssnap rollback 0 >/dev/null || fail "rollback"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0" && nbdcopy "$(nbd_uri volume)" "$TESTDIR/vol" || fail nbdcopy
cmp "$TESTDIR/snap0" "$TESTDIR/vol" || fail "the volume differs from snapshot 0"
[ -z "$(fssnap diff 0 volume)" ] || fail "diff 0 volume is not empty"
loop=$(fssnap attach volume) || fail "attach again"
e2fsck -fn "$loop" >/dev/null 2>&1 || fail "e2fsck after the rollback"
mount "$loop" "$mnt" || fail "mount after the rollback"
[ "$(cd "$mnt" && sha256sum keep*)" = "$sums" ] || fail "the files are not those of snapshot 0"
[ -e "$mnt/new1" ] && fail "a newer file survived the rollback"
echo "ext4 rolled back: $(fssnap info 0 -o candidate_chunks) of $(fssnap info 0 -o chunks) chunks were candidates"
