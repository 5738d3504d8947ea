#!/usr/bin/env bash
# ext4 on the ublk volume survives kill -9 of fssnapd: a verifying fio job
# (crc32c, with fdatasync flushes) and a file tree workload run while
# fssnapd is killed three times and restarted each time with the same
# command; the restarted daemon takes the device over (user recovery) and
# the held I/O resumes.  Nothing may fail: every fio pass verifies, every
# tree compares, the file system stays read-write with no error in the
# kernel log, e2fsck -fn is clean after unmount, and the last fio pass
# verifies again from a fresh mount.
. "$(dirname "$0")/guest.sh"

guest_modprobe ublk_drv
make_image "$TESTDIR/vol.img" 128M
VOL=/dev/fssnap/vol.img/volume
MNT=$TESTDIR/mnt
mkdir -p "$MNT"

start_fssnapd --ublk "$TESTDIR/vol.img"
cleanup_fn "umount -l $MNT 2>/dev/null"
[ -b "$VOL" ] || fail "no $VOL"
mkfs.ext4 -q -F "$VOL" || fail "mkfs.ext4"
mount "$VOL" "$MNT" || fail "mount"
dmesg -C

# Workloads in a loop until told to stop; a failure leaves a file behind.
fio_pass() {
  fio --name=verify --filename="$MNT/fio.dat" --size=8M --bs=4k \
    --rw=randwrite --ioengine=libaio --iodepth=16 --direct=1 \
    --fdatasync=64 --verify=crc32c --randseed="$1" "${@:2}" \
    --output="$TESTDIR/fio.$1.log" >/dev/null 2>&1
}
fio_loop() {
  local i=0
  while [ ! -e "$TESTDIR/stop" ]; do
    i=$((i + 1))
    fio_pass "$i" || { echo "fio pass $i failed" >>"$TESTDIR/errors"; cat "$TESTDIR/fio.$i.log" >>"$TESTDIR/errors"; }
    echo "$i" >"$TESTDIR/fio.last"
  done
}
tree_loop() {
  local i=0
  while [ ! -e "$TESTDIR/stop" ]; do
    i=$((i + 1))
    cp -a /usr/include/linux/netfilter "$MNT/tree.$i" 2>>"$TESTDIR/errors" \
      && diff -r /usr/include/linux/netfilter "$MNT/tree.$i" >>"$TESTDIR/errors" 2>&1 \
      && sync -f "$MNT" && rm -rf "$MNT/tree.$i" \
      || echo "tree pass $i failed" >>"$TESTDIR/errors"
  done
}
fio_loop & fio_pid=$!
tree_loop & tree_pid=$!

# Three crashes, each in the middle of the load.
for k in 1 2 3; do
  sleep 2
  kill -9 "$FSSNAPD_PID"
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
  sleep 0.5                     # the load piles up against the held device
  start_fssnapd --ublk "$TESTDIR/vol.img"
  grep -q "recovered the volume as /dev/ublkb" "$FSSNAPD_LOG" \
    || { cat "$FSSNAPD_LOG" >&2; fail "restart $k did not recover the device"; }
  : >"$FSSNAPD_LOG"
done
sleep 2
touch "$TESTDIR/stop"
wait "$fio_pid" "$tree_pid"
[ ! -s "$TESTDIR/errors" ] || { cat "$TESTDIR/errors" >&2; fail "the workload saw errors"; }
last=$(cat "$TESTDIR/fio.last")
[ "$last" -ge 1 ] || fail "no fio pass finished"

awk -v m="$MNT" '$2 == m { split($4, o, ","); print o[1] }' /proc/mounts >"$TESTDIR/mode"
[ "$(cat "$TESTDIR/mode")" = rw ] || fail "the file system is $(cat "$TESTDIR/mode"), not rw"
if dmesg | grep -Ei 'I/O error|EXT4-fs (error|warning)|remount.*read-only|Buffer I/O' >&2; then
  fail "the kernel logged errors"
fi
umount "$MNT" || fail "umount"
e2fsck -fn "$VOL" >"$TESTDIR/fsck" 2>&1 || { cat "$TESTDIR/fsck" >&2; fail "e2fsck -fn"; }

# Every block the last pass wrote reads back from a fresh mount.
mount "$VOL" "$MNT" || fail "remount"
fio_pass "$last" --verify_only || { cat "$TESTDIR/fio.$last.log" >&2; fail "verify after remount"; }
umount "$MNT" || fail "umount"
stop_fssnapd
[ -z "$(ls /sys/class/ublk-char)" ] || fail "devices left: $(ls /sys/class/ublk-char)"
echo "ok: 3 crashes under load, $last fio passes verified"
