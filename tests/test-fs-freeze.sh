#!/usr/bin/env bash
# fssnap create --mount thaws the file system whatever happens: when the
# create succeeds or is refused, when its fssnapd dies while the file
# system is frozen, and when fssnap itself is killed (its watchdog thaws).
# The volume is served by a real fssnapd (freezing writes through it); to
# catch the create at the right moment, fssnap talks to a stand-in control
# socket that never answers, or hangs up after reading the request.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup fsfreeze
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

MNT=$TESTDIR/mnt
fs_cleanup() {
  [ -d "$MNT" ] && fsfreeze -u "$MNT" 2>/dev/null
  mountpoint -q "$MNT" && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
  [ -n "${vol:-}" ] && losetup "$vol" >/dev/null 2>&1 && losetup -d "$vol"
  return 0
}
cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"

# A write must get through within 10 s; a writer stuck on a frozen file
# system cannot be killed, so thaw it ourselves before failing.
assert_thawed() {
  local p i
  touch "$MNT/probe" & p=$!
  for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    fsfreeze -u "$MNT"
    wait "$p"
    fail "$1: the file system stayed frozen"
  fi
  wait "$p" || fail "$1: write failed"
  echo "$1: thawed"
}

# A control socket in FAKE_RUN that reads one request, then hangs up
# ("close") or never answers ("hang").
FAKE_RUN=$TESTDIR/fake-run
fake_control() {
  mkdir -p "$FAKE_RUN"
  rm -f "$FAKE_RUN/control.sock"
  /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + "/control.sock")
s.listen(1)
c, _ = s.accept()
c.makefile("rb").readline()
if sys.argv[2] == "hang":
    time.sleep(60)
' "$FAKE_RUN" "$1" &
  FAKE_PID=$!
  cleanup_fn "kill $FAKE_PID 2>/dev/null"
  while [ ! -S "$FAKE_RUN/control.sock" ]; do sleep 0.05; done
}

# fssnap create --mount against the stand-in, in the background.
start_frozen_create() {
  fake_control "$1"
  "$FSSNAP" --run-dir "$FAKE_RUN" create --mount "$MNT" \
    >"$TESTDIR/create.out" 2>"$TESTDIR/create.err" &
  CREATE_PID=$!
  sleep 1
}

img=$TESTDIR/disk.img
make_image "$img" 128M
start_fssnapd "$img"
cleanup_fn fs_cleanup
wait_devfs
mkdir "$MNT"
vol=$(fssnap attach volume) || fail "attach volume"
mkfs.ext4 -q "$vol"
mount "$vol" "$MNT"

# Success.
fssnap create -o transient --mount "$MNT" >/dev/null || fail "create --mount"
assert_thawed "after a create"
expect_exit 4 "is on the file system being snapshotted" fssnap create -o "backing-store=$MNT" "$MNT"
assert_thawed "after a refused create"
expect_exit 1 "is not a mount point" fssnap create --mount "$TESTDIR"
expect_exit 1 "is not a mount point" fssnap create "$TESTDIR"

# fssnap killed while the file system is frozen: the watchdog thaws.
start_frozen_create hang
kill -0 "$CREATE_PID" || fail "create did not wait"
kill -9 "$CREATE_PID"
wait "$CREATE_PID" 2>/dev/null
assert_thawed "fssnap killed"
kill "$FAKE_PID"

# Its fssnapd dies while the file system is frozen: fssnap thaws, says why.
start_frozen_create close
rc=0
wait "$CREATE_PID" || rc=$?
cat "$TESTDIR/create.err"
[ "$rc" = 2 ] || fail "create exited $rc when fssnapd died, not 2"
grep -q "^fssnap: " "$TESTDIR/create.err" || fail "no message when fssnapd died"
assert_thawed "fssnapd gone"

umount "$MNT"
fssnap detach volume
stop_fssnapd
