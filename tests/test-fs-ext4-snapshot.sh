#!/usr/bin/env bash
# A live ext4 on the volume (through fssnap attach volume, a loop device on
# the FUSE file), a tree of files, snapshots taken with --mount at three
# moments while the file system keeps changing (delete half, overwrite,
# append, fill the free space, fstrim); the middle snapshot is deleted.
# Each remaining snapshot, attached, must pass fsck.ext4 -fn, mount
# -o ro,noload and hold exactly the files it had when it was taken.  The
# kept snapshots are persistent (synced stores), the middle one transient.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 fsck.ext4 losetup fstrim sha256sum
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }


manifest() {
  (cd "$1" && find . -printf '%y %p %s\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# About 80 MiB in 30 directories: files of 1 byte to 30 MiB.
populate() {
  local i
  for ((i = 0; i < 30; i++)); do
    mkdir -p "$1/d$i/sub"
    head -c $((i + 1)) /dev/urandom >"$1/d$i/tiny"
    head -c $((i * 1000 + 17)) /dev/urandom >"$1/d$i/small"
    head -c $((i * 37 * 1024)) /dev/urandom >"$1/d$i/sub/medium"
  done
  head -c 12M /dev/urandom >"$1/d3/big1"
  head -c 20M /dev/urandom >"$1/d7/big2"
  head -c 30M /dev/urandom >"$1/big3"
}

churn_delete_overwrite_append() {
  local n=0 f
  for f in $(cd "$1" && find . -type f | sort); do
    n=$((n + 1))
    case $((n % 4)) in
      0|2) rm "$1/$f" ;;
      1) [ -s "$1/$f" ] && dd if=/dev/urandom of="$1/$f" bs=512 count=1 conv=notrunc status=none ;;
      3) head -c 5000 /dev/urandom >>"$1/$f" ;;
    esac
  done
  mkdir "$1/new$2"
  head -c 8M /dev/urandom >"$1/new$2/file"
  sync
}

fill_and_trim() {
  dd if=/dev/urandom of="$1/fill" bs=1M status=none 2>/dev/null || true
  sync
  rm "$1/fill"
  sync
  fstrim -v "$1"
}

snap_create() {
  local dev
  dev=$(fssnap create ${1:+-o "$1"} --mount "$MNT") || fail "create --mount failed"
  basename "$dev"
}

verify() {
  local n=$1 want=$2 loop smnt=$TESTDIR/snap$1
  loop=$(fssnap attach "$n") || fail "attach $n failed"
  [ "$(cat "/sys/block/${loop#/dev/}/loop/dio")" = 1 ] || fail "$loop has no direct I/O"
  [ "$(cat "/sys/block/${loop#/dev/}/ro")" = 1 ] || fail "$loop is not read-only"
  fsck.ext4 -fn "$loop" || fail "fsck.ext4 -fn of snapshot $n"
  mkdir -p "$smnt"
  mount -o ro,noload "$loop" "$smnt" || fail "mount of snapshot $n"
  manifest "$smnt" >"$TESTDIR/got$n"
  if ! cmp -s "$want" "$TESTDIR/got$n"; then
    diff "$want" "$TESTDIR/got$n" | head -20
    fail "snapshot $n does not hold what the volume held"
  fi
  umount "$smnt"
  fssnap detach "$n" || fail "detach $n"
  echo "snapshot $n: fsck clean, $(wc -l <"$want") manifest lines equal"
}

img=$TESTDIR/disk.img
serve_ext4 "$img" 384M
populate "$MNT"
sync

manifest "$MNT" >"$TESTDIR/m0"
s0=$(snap_create)
churn_delete_overwrite_append "$MNT" 1
manifest "$MNT" >"$TESTDIR/m1"
s1=$(snap_create transient)
churn_delete_overwrite_append "$MNT" 2
manifest "$MNT" >"$TESTDIR/m2"
s2=$(snap_create)
fill_and_trim "$MNT"
echo "snapshots $s0 $s1 $s2"
fssnap info "$s0" -o mountpoint | grep -qx "$MNT" || fail "mount point not recorded"

fssnap delete "$s1" || fail "delete the middle snapshot"
fssnap list
fssnap stats

verify "$s0" "$TESTDIR/m0"
verify "$s2" "$TESTDIR/m2"
# The volume itself is still a sound file system.
umount "$MNT"
fsck.ext4 -fn "$VOL" || fail "fsck of the volume"
fssnap detach volume || fail "detach volume"
stop_fssnapd
