# Sourced by every tests/test-*.sh script.  Gives:
#   requires CMD...        skip the test (exit 77) unless each command exists
#   requires_root          skip unless running as root
#   cleanup_fn CMD...      run CMD at exit, in reverse order of registration
#   fail MSG               print MSG and exit 1
#   TESTDIR                a fresh scratch directory, removed at exit
#   FSSNAPD, FSSNAP        the binaries under test
#   start_fssnapd ORIGIN [ARGS...]   run fssnapd in the background with
#                          RUN_DIR=$TESTDIR/run and STATE_DIR=$TESTDIR/state,
#                          wait for its sockets, stop it at exit
#   stop_fssnapd           SIGTERM it and wait (fails if it does not exit 0)
#   NBD_SOCK, CTL_SOCK     its sockets; nbd_uri EXPORT gives an NBD URI
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

fail() { echo "FAIL: $*" >&2; exit 1; }

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

nbd_uri() { echo "nbd+unix:///$1?socket=$NBD_SOCK"; }

start_fssnapd() {
  [ -x "$FSSNAPD" ] || fail "$FSSNAPD not built"
  "$FSSNAPD" --foreground --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" \
    "$@" >>"$TESTDIR/fssnapd.log" 2>&1 &
  FSSNAPD_PID=$!
  cleanup_fn "stop_fssnapd_quietly"
  local i
  for ((i = 0; i < 200; i++)); do
    [ -S "$NBD_SOCK" ] && [ -S "$CTL_SOCK" ] && return 0
    kill -0 "$FSSNAPD_PID" 2>/dev/null || { cat "$TESTDIR/fssnapd.log" >&2; fail "fssnapd exited at start"; }
    sleep 0.05
  done
  cat "$TESTDIR/fssnapd.log" >&2
  fail "fssnapd did not create its sockets"
}

stop_fssnapd() {
  [ -n "$FSSNAPD_PID" ] || return 0
  kill -TERM "$FSSNAPD_PID"
  local rc=0
  wait "$FSSNAPD_PID" || rc=$?
  FSSNAPD_PID=
  [ "$rc" -eq 0 ] || { cat "$TESTDIR/fssnapd.log" >&2; fail "fssnapd exited with $rc"; }
}

stop_fssnapd_quietly() {
  [ -n "$FSSNAPD_PID" ] || return 0
  kill -TERM "$FSSNAPD_PID" 2>/dev/null
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
}

# fssnap CLI against this test's daemon.
fssnap() { "$FSSNAP" --run-dir "$RUN_DIR" "$@"; }
