#!/usr/bin/env bash
# SIGTERM and SIGINT stop fssnapd cleanly (exit 0, sockets and pidfile
# removed, data written before the signal on the origin), also while a
# client is connected; in the background (no --foreground) the starting
# process exits 0 once the daemon serves and 1 when it cannot start;
# --syslog keeps stderr quiet once started.
source "$(dirname "$0")/functions.sh"
requires_root
requires nbdsh

img=$TESTDIR/disk.img
make_image "$img" 16M

# SIGTERM with an NBD client attached, after a write: exit 0, data on disk.
start_fssnapd "$img" --pidfile "$TESTDIR/fssnapd.pid"
[ "$(cat "$TESTDIR/fssnapd.pid")" = "$FSSNAPD_PID" ] || fail "pidfile does not hold the pid"
MARK=$TESTDIR/written nbdsh -u "$(nbd_uri volume)" -c '
import os, time
h.pwrite(b"\xa5" * 65536, 1 << 20)
open(os.environ["MARK"], "w").close()
time.sleep(5)
' &
client=$!
cleanup_fn "kill $client 2>/dev/null"
for _ in $(seq 100); do [ -e "$TESTDIR/written" ] && break; sleep 0.1; done
[ -e "$TESTDIR/written" ] || fail "the NBD client did not write"
kill -TERM "$FSSNAPD_PID"
rc=0; wait_exit "$FSSNAPD_PID" 10 || rc=$?
FSSNAPD_PID=
[ "$rc" -eq 0 ] || { cat "$FSSNAPD_LOG"; fail "SIGTERM: exit $rc"; }
[ ! -e "$NBD_SOCK" ] && [ ! -e "$CTL_SOCK" ] || fail "sockets left after SIGTERM"
[ ! -e "$TESTDIR/fssnapd.pid" ] || fail "pidfile left after SIGTERM"
grep -q "fssnapd: stopped cleanly" "$FSSNAPD_LOG" || fail "no 'stopped cleanly' in the log"
/usr/bin/python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
assert d[1 << 20:(1 << 20) + 65536] == b"\xa5" * 65536, "write before SIGTERM lost"
' "$img" || fail "data written before SIGTERM is not on the origin"

# SIGINT with a control client connected and idle.
start_fssnapd "$img"
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(5)' "$CTL_SOCK" &
idle=$!
cleanup_fn "kill $idle 2>/dev/null"
sleep 0.3
kill -INT "$FSSNAPD_PID"
rc=0; wait_exit "$FSSNAPD_PID" 10 || rc=$?
FSSNAPD_PID=
[ "$rc" -eq 0 ] || fail "SIGINT: exit $rc"

# Background: the starter returns 0 when the daemon serves; the pidfile
# names the daemon, which logs to syslog and stops on SIGTERM.
"$FSSNAPD" --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" \
  --pidfile "$TESTDIR/bg.pid" "$img" || fail "background start exited $?"
[ -S "$NBD_SOCK" ] && [ -S "$CTL_SOCK" ] || fail "background daemon has no sockets"
bgpid=$(cat "$TESTDIR/bg.pid")
cleanup_fn "kill $bgpid 2>/dev/null"
[ "$(cat "$RUN_DIR/fssnapd.lock")" = "$bgpid" ] || fail "run dir lock names $(cat "$RUN_DIR/fssnapd.lock"), not $bgpid"
[ "$(ps -o sid= -p "$bgpid" | tr -d ' ')" != "$bgpid" ] || fail "the daemon is a session leader"
nbdinfo "$(nbd_uri volume)" >/dev/null || fail "background daemon does not serve NBD"
"$FSSNAP" --run-dir "$RUN_DIR" list >/dev/null || fail "background daemon does not answer control"
kill -TERM "$bgpid"
for _ in $(seq 100); do kill -0 "$bgpid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$bgpid" 2>/dev/null || fail "background daemon did not stop"
[ ! -e "$TESTDIR/bg.pid" ] || fail "background pidfile left behind"

# Background start that fails after the fork (pidfile cannot be written):
# the starter reports it and exits 1, nothing is left running.
expect_exit 1 "cannot write pidfile" "$FSSNAPD" --run-dir "$RUN_DIR" \
  --state-dir "$STATE_DIR" --pidfile "$TESTDIR/no/such/dir/x.pid" "$img"
[ ! -e "$CTL_SOCK" ] || fail "sockets left after a failed background start"
# --syslog in the foreground: once started, nothing more on stderr.
: >"$FSSNAPD_LOG"
start_fssnapd "$img" --syslog
fssnap create >/dev/null || fail "create with --syslog"
stop_fssnapd
! grep -q "fssnapd: serving\|created\|stopped" "$FSSNAPD_LOG" || fail "--syslog still logs to stderr: $(cat "$FSSNAPD_LOG")"
echo "signals ok"
