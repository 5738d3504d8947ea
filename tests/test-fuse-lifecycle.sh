#!/usr/bin/env bash
# Unmount, detach and shut down in every order, fssnapd killed included:
# nothing hangs, no loop device stays stuck, every refusal is one clear
# line, and a restarted fssnapd cleans up the stale FUSE mount.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup timeout
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

# Every loop device this test sets up is recorded, since the path of its
# backing file changes once the FUSE mount is gone.
attach() {
  local dev
  dev=$(fssnap "$@") || return
  echo "$dev" >>"$TESTDIR/loops"
  echo "$dev"
}
fs_cleanup() {
  local m dev
  for m in $(awk -v d="$TESTDIR/" 'index($2, d) == 1 && $3 != "fuse.fssnap" { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  [ -f "$TESTDIR/loops" ] || return 0
  for dev in $(sort -u "$TESTDIR/loops"); do
    losetup "$dev" >/dev/null 2>&1 && losetup -d "$dev"
  done
  return 0
}
cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"
cleanup_fn fs_cleanup

# Run with a deadline: a hang is a failure, not a stuck test.
t() {
  local rc=0
  timeout 30 "$@" || rc=$?
  [ "$rc" -ne 124 ] || fail "hung: $*"
  return "$rc"
}

loops_of_test() {
  local dev n=0
  for dev in $(sort -u "$TESTDIR/loops"); do losetup "$dev" >/dev/null 2>&1 && n=$((n + 1)); done
  echo "$n"
}

img=$TESTDIR/disk.img
make_image "$img" 128M
start_fssnapd "$img"
wait_devfs
MNT=$TESTDIR/mnt SMNT=$TESTDIR/smnt
mkdir "$MNT" "$SMNT"

vol=$(attach attach volume) || fail "attach volume"
expect_exit 4 "already attached" fssnap attach volume
mkfs.ext4 -q "$vol"
mount "$vol" "$MNT"
echo hello >"$MNT/file"
snap=$(attach create --mount "$MNT" --attach) || fail "create --attach"
n=$(fssnap list --json | json_get '[s["number"] for s in j if s.get("loop") == "'"$snap"'"][0]')
echo "snapshot $n on $snap"
mount -o ro,noload "$snap" "$SMNT"
grep -qx hello "$SMNT/file" || fail "snapshot content"

# Refusals while mounted or attached.
expect_exit 4 "$snap is mounted: unmount it first" fssnap detach "$n"
expect_exit 4 "snapshot $n is attached as $snap: detach it first or use --force" fssnap delete "$n"
expect_exit 4 "is mounted: unmount it first" fssnap delete --force "$n"
expect_exit 3 "no snapshot 99" fssnap detach 99

# Order 1: unmount, delete --force (detaches first).
t umount "$SMNT"
t "$FSSNAP" --run-dir "$RUN_DIR" delete --force "$n" || fail "delete --force"
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "snapshot still listed"
[ "$(loops_of_test)" = 1 ] || fail "the snapshot's loop device stayed"

# Order 2: SIGTERM to fssnapd with a snapshot attached (not mounted) and
# the volume mounted: fssnapd stops, the loop devices get I/O errors, both
# detach and the volume unmounts, all without hanging.
snap=$(attach create --mount "$MNT" --attach) || fail "create --attach"
stop_fssnapd    # fails if fssnapd takes over 20 s
grep -q "stopped cleanly" "$FSSNAPD_LOG" || fail "no clean stop"
t dd if="$snap" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null && fail "a snapshot read after stop succeeded"
t umount "$MNT" || t umount -l "$MNT"
t losetup -d "$snap" || fail "detach $snap after stop"
t losetup -d "$vol" || fail "detach $vol after stop"
[ "$(loops_of_test)" = 0 ] || fail "loop devices left after stop"
grep -q " $RUN_DIR/dev " /proc/mounts && fail "FUSE mount left after a clean stop"

# Order 3: fssnapd killed (SIGKILL) while a snapshot is mounted.
start_fssnapd "$img"
wait_devfs
vol=$(attach attach volume) || fail "attach volume"
mount "$vol" "$MNT" || fail "mount after restart"
snap=$(attach create -o transient --mount "$MNT" --attach) || fail "create"
mount -o ro,noload "$snap" "$SMNT"
kill -9 "$FSSNAPD_PID"
wait "$FSSNAPD_PID" 2>/dev/null
FSSNAPD_PID=
t cat "$SMNT/file" >/dev/null 2>&1 || echo "reading the snapshot now fails, as it should"
expect_exit 2 "no fssnapd is running" fssnap detach 0
t umount "$SMNT" || t umount -l "$SMNT" || fail "umount of the snapshot"
t umount "$MNT" || t umount -l "$MNT" || fail "umount of the volume"
t "$FSSNAP" detach "$snap" || fail "detach $snap without fssnapd"
t "$FSSNAP" detach "$vol" || fail "detach $vol without fssnapd"
[ "$(loops_of_test)" = 0 ] || fail "loop devices stuck after kill -9"

# The next start detaches the stale mount and serves again.
start_fssnapd "$img"
wait_devfs
grep -q "unmounted the stale mount" "$FSSNAPD_LOG" || fail "stale mount not reported"
vol=$(attach attach volume) || fail "attach after restart"
t fsck.ext4 -fy "$vol" >/dev/null; true
mount "$vol" "$MNT" || fail "mount after restart"
grep -qx hello "$MNT/file" || fail "volume content after restart"
umount "$MNT"
fssnap detach volume
stop_fssnapd
grep -q " $RUN_DIR/dev " /proc/mounts && fail "FUSE mount left"
echo "every order ended cleanly"
