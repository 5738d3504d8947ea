# Sourced by every tests/test-*.sh script.  Gives:
#   requires CMD...        skip the test (exit 77) unless each command exists
#   requires_root          skip unless running as root
#   cleanup_fn CMD...      run CMD at exit, in reverse order of registration
#   fail MSG               print MSG (and the end of FSSNAPD_LOG) and exit 1
#   TESTDIR                a fresh scratch directory, removed at exit
#   FSSNAPD, FSSNAP        the binaries under test
#   start_fssnapd ORIGIN [ARGS...]   run fssnapd in the background with
#                          RUN_DIR=$TESTDIR/run and STATE_DIR=$TESTDIR/state,
#                          wait for its sockets, stop it at exit
#   stop_fssnapd           SIGTERM it and wait (fails if it does not exit 0
#                          within 20 s)
#   wait_exit PID [SECS]   wait for a child to exit (fail after SECS, default
#                          20); returns its exit status
#   NBD_SOCK, CTL_SOCK     its sockets; nbd_uri EXPORT gives an NBD URI
#   wait_devfs             wait until fssnapd's device files are mounted
#   fs_cleanup             unmount and detach every mount and loop device
#                          under TESTDIR (register it with cleanup_fn)
#   FSSNAPD_LOG            what the daemon started by start_fssnapd printed
#   make_image FILE SIZE   a sparse image file (SIZE as truncate takes it)
#   ctl_raw [SOCK]         send each line of stdin to the control socket on
#                          one connection, print each reply line
#   json_get EXPR          evaluate the python expression EXPR over the JSON
#                          on stdin (bound to j) and print the result
#   expect_exit CODE MSG CMD...  run CMD; fail unless it exits CODE and, for
#                          a non-zero CODE, prints exactly one line on stderr
#                          containing MSG (kept in $LAST_STDERR, stdout in
#                          $LAST_STDOUT)
set -u
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$TOP/$BUILD ;; esac
FSSNAPD=$BUILD/fssnapd
FSSNAP=$BUILD/fssnap
# Debian's python3 has the libnbd bindings nbdsh needs.
export PATH=/usr/bin:/usr/sbin:/sbin:$PATH

_cleanups=()
cleanup_fn() { _cleanups+=("$*"); }
_run_cleanups() {
  local i
  for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do eval "${_cleanups[i]}" || true; done
}
trap _run_cleanups EXIT

# A failure shows the end of the daemon's log too: TESTDIR goes at exit,
# and a guest's console is all a CI run keeps of a guest test.
fail() {
  echo "FAIL: $*" >&2
  if [ -s "${FSSNAPD_LOG:-}" ]; then
    echo "--- the last lines of $FSSNAPD_LOG:" >&2
    tail -n 30 "$FSSNAPD_LOG" >&2
  fi
  exit 1
}

requires() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || { echo "skipped: $c is not installed"; exit 77; }
  done
}
requires_root() { [ "$(id -u)" -eq 0 ] || { echo "skipped: needs root"; exit 77; }; }

TESTDIR=$(mktemp -d /tmp/fssnap-test.XXXXXX)
cleanup_fn "rm -rf '$TESTDIR'"

RUN_DIR=$TESTDIR/run
STATE_DIR=$TESTDIR/state
NBD_SOCK=$RUN_DIR/nbd.sock
CTL_SOCK=$RUN_DIR/control.sock
FSSNAPD_PID=
FSSNAPD_LOG=$TESTDIR/fssnapd.log

nbd_uri() { echo "nbd+unix:///$1?socket=$NBD_SOCK"; }

start_fssnapd() {
  [ -x "$FSSNAPD" ] || fail "$FSSNAPD not built"
  "$FSSNAPD" --foreground --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" \
    "$@" >>"$FSSNAPD_LOG" 2>&1 &
  FSSNAPD_PID=$!
  cleanup_fn "stop_fssnapd_quietly"
  local i
  # Ready once the control socket answers: fssnapd opens it last, and the
  # sockets of a killed daemon may still be lying there until it does.
  for ((i = 0; i < 400; i++)); do
    kill -0 "$FSSNAPD_PID" 2>/dev/null || { cat "$FSSNAPD_LOG" >&2; fail "fssnapd exited at start"; }
    [ -S "$NBD_SOCK" ] && "$FSSNAP" --run-dir "$RUN_DIR" list >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$FSSNAPD_LOG" >&2
  fail "fssnapd did not create its sockets"
}

wait_exit() {
  local pid=$1 secs=${2:-20} i
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "process $pid still running after $secs s"
  wait "$pid"
}

stop_fssnapd() {
  [ -n "$FSSNAPD_PID" ] || return 0
  kill -TERM "$FSSNAPD_PID"
  local rc=0
  wait_exit "$FSSNAPD_PID" || rc=$?
  FSSNAPD_PID=
  [ "$rc" -eq 0 ] || { cat "$FSSNAPD_LOG" >&2; fail "fssnapd exited with $rc"; }
}

stop_fssnapd_quietly() {
  [ -n "$FSSNAPD_PID" ] || return 0
  kill -TERM "$FSSNAPD_PID" 2>/dev/null
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
}

# fssnap CLI against this test's daemon.
fssnap() { "$FSSNAP" --run-dir "$RUN_DIR" "$@"; }

make_image() { rm -f "$1" && truncate -s "$2" "$1"; }

ctl_raw() {
  /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for line in sys.stdin.buffer:
    f.write(line if line.endswith(b"\n") else line + b"\n")
    f.flush()
    print(f.readline().decode().rstrip("\n"), flush=True)
' "${1:-$CTL_SOCK}"
}

json_get() {
  /usr/bin/python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

LAST_STDOUT= LAST_STDERR=
expect_exit() {
  local code=$1 msg=$2 rc=0 lines
  shift 2
  "$@" >"$TESTDIR/.out" 2>"$TESTDIR/.err" || rc=$?
  LAST_STDOUT=$(cat "$TESTDIR/.out") LAST_STDERR=$(cat "$TESTDIR/.err")
  [ "$rc" -eq "$code" ] || fail "$* exited $rc, not $code; stderr: $LAST_STDERR"
  [ "$code" -eq 0 ] && return 0
  lines=$(wc -l <"$TESTDIR/.err")
  [ "$lines" -eq 1 ] || fail "$* printed $lines lines on stderr, not 1: $LAST_STDERR"
  [[ $LAST_STDERR == *"$msg"* ]] || fail "$* said \"$LAST_STDERR\", expected \"$msg\""
}

# Device files: fssnapd mounts RUN_DIR/dev after its sockets exist.
wait_devfs() {
  local i
  for ((i = 0; i < 100; i++)); do [ -f "$RUN_DIR/dev/volume" ] && return 0; sleep 0.05; done
  fail "no $RUN_DIR/dev/volume"
}

# Mounts and loop devices of a test, whatever state it ends in.
fs_cleanup() {
  local m f
  for m in $(awk -v d="$TESTDIR/" 'index($2, d) == 1 && $3 != "fuse.fssnap" { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  for f in /sys/block/loop*/loop/backing_file; do
    [ -e "$f" ] && grep -q "^$TESTDIR/" "$f" && losetup -d "/dev/$(basename "$(dirname "$(dirname "$f")")")"
  done
  return 0
}

# A new image IMG of SIZE served by this test's fssnapd (further arguments
# go to fssnapd), ext4 made on the volume's loop device and mounted:
# VOL is the loop device, MNT ($TESTDIR/mnt) the mount point.  The mounts
# and loop devices go with the test (fs_cleanup), the FUSE mount after
# fssnapd.
serve_ext4() {
  local img=$1 size=$2
  shift 2
  cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"
  make_image "$img" "$size"
  start_fssnapd "$img" "$@"
  cleanup_fn fs_cleanup
  wait_devfs
  VOL=$(fssnap attach volume) || fail "attach volume"
  mkfs.ext4 -q -F "$VOL" || fail "mkfs.ext4 on $VOL"
  MNT=$TESTDIR/mnt
  mkdir -p "$MNT"
  mount "$VOL" "$MNT" || fail "mount of the volume $VOL"
}
