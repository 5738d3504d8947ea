#!/usr/bin/env bash
# File-level backup end to end with restic (examples/backup-restic.sh):
# an ext4 on the volume (a loop device on the FUSE file), mounted and
# churned by a background writer (new, overwritten, appended, renamed and
# deleted files) while fssnap exec backs the snapshot up into a local
# repository.  restic check passes, and a restore equals the checksum
# manifest the example wrote from the same snapshot; a second backup takes
# the first as its parent and also restores exactly; the snapshots, their
# mounts and loop devices are gone afterwards.
source "$(dirname "$0")/functions.sh"
requires_root
requires restic mkfs.ext4 losetup sha256sum
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

img=$TESTDIR/disk.img
serve_ext4 "$img" 256M
for ((i = 0; i < 20; i++)); do
  mkdir -p "$MNT/d$i/sub"
  head -c $((i * 3000 + 1)) /dev/urandom >"$MNT/d$i/small"
  head -c $((i * 64 * 1024)) /dev/urandom >"$MNT/d$i/sub/medium"
  ln -s small "$MNT/d$i/link"
done
head -c 16M /dev/urandom >"$MNT/big"
sync

# The writer: changes files the backup reads, all the time.
touch "$TESTDIR/writing"
(
  n=0
  while [ -e "$TESTDIR/writing" ]; do
    n=$((n + 1)) d=$MNT/d$((n % 20))
    dd if=/dev/urandom of="$MNT/big" bs=64k count=4 seek=$((n % 200)) conv=notrunc status=none
    head -c 4096 /dev/urandom >>"$d/small"
    head -c 100000 /dev/urandom >"$MNT/churn.$n"
    [ $n -gt 3 ] && rm -f "$MNT/churn.$((n - 3))"
    mv "$d/sub/medium" "$d/sub/medium.tmp" && mv "$d/sub/medium.tmp" "$d/sub/medium"
  done
) &
writer=$!
cleanup_fn "rm -f '$TESTDIR/writing'; wait $writer 2>/dev/null"

export RESTIC_REPOSITORY=$TESTDIR/repo RESTIC_PASSWORD=fssnap-test RESTIC_CACHE_DIR=$TESTDIR/cache
backup() {
  FSSNAP=$FSSNAP bash "$TOP/examples/backup-restic.sh" --run-dir "$RUN_DIR" \
    --manifest "$TESTDIR/manifest$1" "$MNT" --quiet || fail "backup $1 exited $?"
}
restore_equals() {
  local dir=$TESTDIR/restore$1 id=$2
  restic restore "$id" --target "$dir" --quiet || fail "restore of backup $1"
  (cd "$dir" && { find . -printf "%y %p\n" | LC_ALL=C sort &&
     find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum; }) >"$TESTDIR/restored$1"
  if ! cmp -s "$TESTDIR/manifest$1" "$TESTDIR/restored$1"; then
    diff "$TESTDIR/manifest$1" "$TESTDIR/restored$1" | head -20
    fail "the restore of backup $1 differs from its snapshot's manifest"
  fi
  echo "backup $1: restore equals the snapshot ($(wc -l <"$TESTDIR/manifest$1") manifest lines)"
}

backup 1
sleep 1
backup 2
rm "$TESTDIR/writing"
wait "$writer"

restic check || fail "restic check"
restic snapshots --json | json_get 'len(j)' | grep -qx 2 || fail "not 2 restic snapshots"
id1=$(restic snapshots --json | json_get 'sorted(j, key=lambda s: s["time"])[0]["id"]')
id2=$(restic snapshots --json | json_get 'sorted(j, key=lambda s: s["time"])[1]["id"]')
restic snapshots --json | json_get '[s.get("parent") for s in j]' | grep -q "$id1" || fail "backup 2 did not take backup 1 as its parent"
cmp -s "$TESTDIR/manifest1" "$TESTDIR/manifest2" && fail "the writer changed nothing between the backups"
grep -q ' ./big$' "$TESTDIR/manifest1" || fail "manifest lacks big"
restore_equals 1 "$id1"
restore_equals 2 "$id2"

[ "$(fssnap list | wc -l)" -eq 1 ] || fail "snapshots left: $(fssnap list)"
ls -d "$RUN_DIR"/exec.* 2>/dev/null && fail "a mount directory was left"
[ "$(awk -v d="$RUN_DIR/exec" 'index($2, d) == 1' /proc/mounts | wc -l)" -eq 0 ] || fail "a snapshot stays mounted"
umount "$MNT"
fsck.ext4 -fn "$VOL" >/dev/null || fail "fsck of the volume"
fssnap detach volume
