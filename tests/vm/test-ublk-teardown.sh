#!/usr/bin/env bash
# Every way of ending leaves no stuck ublk device and no hung process:
#   umount, then SIGTERM        devices deleted, names and state file gone
#   SIGTERM while mounted       fssnapd exits 0 and leaves the mounted
#                               device for the next fssnapd (logged); the
#                               next one takes it over, the fs carries on
#   kill -9 with a snapshot     the restart recovers both devices; deleting
#                               the snapshot then deletes its device
#   kill -9, remove the state   (a snapshot deleted behind fssnapd's back is
#   of a snapshot               not served again: its device is removed)
. "$(dirname "$0")/guest.sh"

guest_modprobe ublk_drv
make_image "$TESTDIR/vol.img" 64M
DIR=/dev/fssnap/vol.img
MNT=$TESTDIR/mnt
mkdir -p "$MNT"

no_devices() {
  local i
  for ((i = 0; i < 100; i++)); do
    [ -z "$(ls /sys/class/ublk-char)" ] && break
    sleep 0.05
  done
  [ -z "$(ls /sys/class/ublk-char)" ] || fail "$1: devices left: $(ls /sys/class/ublk-char)"
  [ "$(echo /dev/ublk*)" = /dev/ublk-control ] || fail "$1: nodes left: $(echo /dev/ublk*)"
  [ ! -e "$DIR" ] || fail "$1: $DIR left"
  [ ! -e "$STATE_DIR/ublk-devices" ] || fail "$1: the state file is left"
  pgrep -x fssnapd >/dev/null && fail "$1: an fssnapd is still running"
  return 0
}
kill9() { kill -9 "$FSSNAPD_PID"; wait "$FSSNAPD_PID" 2>/dev/null; FSSNAPD_PID=; }

# umount, then stop.
start_fssnapd --ublk "$TESTDIR/vol.img"
cleanup_fn "umount -l $MNT 2>/dev/null"
mkfs.ext4 -q -F "$DIR/volume" || fail "mkfs.ext4"
mount "$DIR/volume" "$MNT" || fail "mount"
echo one >"$MNT/f"
umount "$MNT" || fail "umount"
stop_fssnapd
no_devices "umount then stop"

# Stop while mounted: the device stays, held, for the next fssnapd.
start_fssnapd --ublk "$TESTDIR/vol.img"
mount "$DIR/volume" "$MNT" || fail "mount 2"
: >"$FSSNAPD_LOG"
stop_fssnapd
grep -q "is mounted on $MNT: left for the next fssnapd" "$FSSNAPD_LOG" \
  || { cat "$FSSNAPD_LOG" >&2; fail "no word of the device left behind"; }
[ -b "$DIR/volume" ] || fail "the mounted device went with fssnapd"
start_fssnapd --ublk "$TESTDIR/vol.img"
grep -q "recovered the volume" "$FSSNAPD_LOG" || fail "not recovered after stop"
echo two >>"$MNT/f" && sync -f "$MNT" || fail "write after the restart"
[ "$(cat "$MNT/f")" = "$(printf 'one\ntwo')" ] || fail "contents: $(cat "$MNT/f")"
umount "$MNT" || fail "umount 2"
stop_fssnapd
no_devices "stop while mounted"

# kill -9 with a snapshot device; restart recovers both; delete.
start_fssnapd --ublk "$TESTDIR/vol.img"
fssnap create >/dev/null || fail "create"
kill9
: >"$FSSNAPD_LOG"
start_fssnapd --ublk "$TESTDIR/vol.img"
[ "$(grep -c "^fssnapd: recovered" "$FSSNAPD_LOG")" = 2 ] \
  || { cat "$FSSNAPD_LOG" >&2; fail "not both devices recovered"; }
cmp "$DIR/snap/0" "$TESTDIR/vol.img" || fail "the recovered snapshot differs"
fssnap delete 0 || fail "delete"
[ ! -e "$DIR/snap/0" ] || fail "snap/0 outlives its snapshot"
stop_fssnapd
no_devices "kill -9 with a snapshot"

# kill -9, and the snapshot goes while fssnapd is down.
start_fssnapd --ublk "$TESTDIR/vol.img"
fssnap create >/dev/null || fail "create 2"
kill9
rm -f "$STATE_DIR"/vol.img.snap0.*
: >"$FSSNAPD_LOG"
start_fssnapd --ublk "$TESTDIR/vol.img"
grep -q "its snapshot is gone" "$FSSNAPD_LOG" || { cat "$FSSNAPD_LOG" >&2; fail "the orphan device was not removed"; }
[ ! -e "$DIR/snap/0" ] || fail "snap/0 served without its snapshot"
stop_fssnapd
no_devices "snapshot gone while down"
echo ok
