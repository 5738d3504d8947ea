#!/usr/bin/env bash
# A live XFS on the volume (fssnap attach volume, a loop device on the FUSE
# file), about 10% full: fssnap create --mount freezes it, takes the
# candidates from its GETFSMAP map (under 20% of the chunks) and thaws it;
# the file system then changes (delete, overwrite, append, fill free
# space, fstrim) and a second snapshot is taken.  Each snapshot must be
# clean for xfs_repair -n (on a writable clone of it, once a mount of the
# clone has replayed its log) and, attached, mount -o ro,norecovery,nouuid
# and hold exactly the files it had when it was taken (so the clone's log
# replay did not reach the snapshot).
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.xfs xfs_repair losetup fstrim sha256sum timeout
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
grep -qw xfs /proc/filesystems || modprobe xfs 2>/dev/null ||
  { echo "skipped: no XFS in this kernel"; exit 77; }

cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"

manifest() {
  (cd "$1" && find . -printf '%y %p %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# About 100 MiB, 10% of the file system: small files in 20 directories
# and three large ones.
populate() {
  local i
  for ((i = 0; i < 20; i++)); do
    mkdir -p "$1/d$i/sub"
    head -c $((i * 1000 + 17)) /dev/urandom >"$1/d$i/small"
    head -c $((i * 37 * 1024)) /dev/urandom >"$1/d$i/sub/medium"
  done
  head -c 24M /dev/urandom >"$1/d3/big1"
  head -c 30M /dev/urandom >"$1/d7/big2"
  head -c 40M /dev/urandom >"$1/big3"
}

churn() {
  local n=0 f
  for f in $(cd "$1" && find . -type f | sort); do
    n=$((n + 1))
    case $((n % 3)) in
      0) rm "$1/$f" ;;
      1) [ -s "$1/$f" ] && dd if=/dev/urandom of="$1/$f" bs=512 count=1 conv=notrunc status=none ;;
      2) head -c 5000 /dev/urandom >>"$1/$f" ;;
    esac
  done
  head -c 8M /dev/urandom >"$1/new"
  sync
}

snap_create() {
  local dev
  dev=$(fssnap create --mount "$MNT") || fail "create --mount failed"
  # Thawed: a write gets through.
  timeout 10 touch "$MNT/thawed" || fail "the file system stayed frozen"
  rm "$MNT/thawed"
  basename "$dev"
}

# A frozen XFS keeps its log dirty (covered, but without an unmount
# record), as after a crash: xfs_repair -n of the snapshot itself only
# warns about the log and the lazy superblock counters, and xfs_repair
# cannot replay a log (only a mount can).  So the snapshot is checked as
# a crash image is, on a writable clone of it (the snapshot stays as it
# was): the clone is mounted once to replay the log and unmounted, then
# xfs_repair -n must find it clean.  fssnap scrub does the same.
repair_clone() {
  local n=$1 cmnt=$TESTDIR/clone$1 loop k
  loop=$(fssnap clone --attach "$n") || fail "clone --attach $n"
  k=$(fssnap list --json | json_get '[c["number"] for s in j for c in s["clones"] if s["number"] == '"$n"'][0]')
  mkdir -p "$cmnt"
  mount -o nouuid "$loop" "$cmnt" || fail "mount (log replay) of a clone of snapshot $n"
  umount "$cmnt"
  xfs_repair -n "$loop" >"$TESTDIR/repair$n" 2>&1 ||
    { head -40 "$TESTDIR/repair$n"; fail "xfs_repair -n of a clone of snapshot $n"; }
  fssnap delete-clone --force "$k" || fail "delete-clone $k"
}

verify() {
  local n=$1 want=$2 loop smnt=$TESTDIR/snap$1
  repair_clone "$n"
  loop=$(fssnap attach "$n") || fail "attach $n failed"
  mkdir -p "$smnt"
  mount -o ro,norecovery,nouuid "$loop" "$smnt" || fail "mount of snapshot $n"
  manifest "$smnt" >"$TESTDIR/got$n"
  if ! cmp -s "$want" "$TESTDIR/got$n"; then
    diff "$want" "$TESTDIR/got$n" | head -20
    fail "snapshot $n does not hold what the volume held"
  fi
  umount "$smnt"
  fssnap detach "$n" || fail "detach $n"
  echo "snapshot $n: xfs_repair -n clean, $(wc -l <"$want") manifest lines equal"
}

img=$TESTDIR/disk.img
make_image "$img" 1G
start_fssnapd "$img"
cleanup_fn fs_cleanup
wait_devfs

vol=$(fssnap attach volume) || fail "attach volume"
mkfs.xfs -q -f "$vol" || fail "mkfs.xfs"
MNT=$TESTDIR/mnt
mkdir "$MNT"
mount "$vol" "$MNT" || fail "mount $vol"
populate "$MNT"
sync

manifest "$MNT" >"$TESTDIR/m0"
s0=$(snap_create)
grep -q "$MNT: xfs, candidates from its GETFSMAP map" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "the GETFSMAP map was not used"; }
cand=$(fssnap info "$s0" -o candidate_chunks)
chunks=$(fssnap info "$s0" --json | json_get 'j["chunks"]')
echo "snapshot $s0: $cand of $chunks chunks are candidates"
df -h "$MNT" | tail -1
[ $((cand * 5)) -lt "$chunks" ] || fail "$cand of $chunks chunks are candidates (20% or more)"

churn "$MNT"
manifest "$MNT" >"$TESTDIR/m1"
s1=$(snap_create)
# Overwrite free space and some chunks the snapshots hold, then trim.
dd if=/dev/urandom of="$MNT/fill" bs=1M count=256 status=none || fail "fill"
sync
rm "$MNT/fill"
sync
fstrim "$MNT" || fail "fstrim"

verify "$s0" "$TESTDIR/m0"
verify "$s1" "$TESTDIR/m1"
umount "$MNT"
xfs_repair -n "$vol" >/dev/null 2>&1 || fail "xfs_repair -n of the volume"
fssnap detach volume || fail "detach volume"
stop_fssnapd
