#!/usr/bin/env bash
# A full state directory during a write storm with 4 snapshots.  The state
# dir is a 2 MiB tmpfs; snapshots 0 and 1 keep their stores on the real
# disk (backing-store=) and get every copy they need in a first pass over
# the volume; snapshots 2 and 3 keep theirs in the state dir, which fills
# up during the storm (4 fio writers, verified data).  Then: every write
# succeeded and the volume holds them (before and after a restart);
# snapshots 0 and 1 read exactly what they did at creation; 2 and 3 are
# disabled, and `fssnap list` says "No space left on device".
source "$(dirname "$0")/functions.sh"
requires_root
requires fio nbdcopy sha256sum
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "skipped: fio lacks the nbd engine"; exit 77; }
cleanup_fn fs_cleanup

size=$((16 << 20))
img=$TESTDIR/disk.img
make_image "$img" "$size"
head -c "$size" /dev/urandom >"$img"
mkdir -p "$STATE_DIR" "$TESTDIR/stores"
mount -t tmpfs -o size=2m fssnap-test-state "$STATE_DIR"
start_fssnapd "$img" --no-fuse --chunksize 64k
F=("$FSSNAP" --run-dir "$RUN_DIR")

digest() { nbdcopy "$(nbd_uri "$1")" - | sha256sum | cut -d' ' -f1; }
create() { "${F[@]}" create "$@" | sed 's|.*/||'; }

# 0 and 1: stores on the disk, all their copies made before the storm.
for i in 0 1; do
  [ "$(create -o backing-store="$TESTDIR/stores")" = "$i" ] || fail "snapshot $i"
  sum[i]=$(digest "snap/$i")
done
head -c "$size" /dev/urandom >"$TESTDIR/pass1"
nbdcopy "$TESTDIR/pass1" "$(nbd_uri volume)" || fail "first pass"

# 2 and 3: stores in the small state dir.
for i in 2 3; do
  [ "$(create)" = "$i" ] || fail "snapshot $i"
done

fio --name=storm --thread --ioengine=nbd --uri="$(nbd_uri volume)" \
    --numjobs=4 --offset_increment=$((size / 4)) --size=$((size / 4)) \
    --rw=randwrite --bsrange=4k-128k --iodepth=4 --serialize_overlap=1 \
    --time_based --runtime=5 \
    --verify=crc32c --verify_backlog=128 --verify_fatal=1 \
    --verify_state_save=0 --group_reporting >"$TESTDIR/fio.log" 2>&1 \
  || { cat "$TESTDIR/fio.log" >&2; fail "a write of the storm failed"; }
grep -q "err= 0" "$TESTDIR/fio.log" || fail "fio reports errors"
# That the state dir filled up is what check() sees below: 2 and 3 are
# disabled for "No space left on device" (free space now says nothing:
# the staging log gives its room back once its writes are applied).

# The volume stays writable; what it holds now survives a restart.
head -c 65536 /dev/urandom >"$TESTDIR/tail"
nbdcopy "$TESTDIR/tail" "$(nbd_uri volume)" || fail "write after the storm"
vol=$(digest volume)

check() {
  local list
  list=$("${F[@]}" list)
  for i in 0 1; do
    [ "$("${F[@]}" info "$i" -o state)" = idle ] || fail "snapshot $i is not idle: $list"
    [ "$(digest "snap/$i")" = "${sum[i]}" ] || fail "snapshot $i changed"
  done
  for i in 2 3; do
    [ "$("${F[@]}" info "$i" -o state)" = disabled ] || fail "snapshot $i is not disabled: $list"
  done
  grep -q "No space left on device" <<<"$list" || fail "list does not say why: $list"
  [ "$(digest volume)" = "$vol" ] || fail "the volume lost writes"
}
check
echo "after the storm:"
"${F[@]}" list
stop_fssnapd
start_fssnapd "$img" --no-fuse
check
echo "after a restart: snapshots 0 and 1 exact, 2 and 3 disabled with the reason"
