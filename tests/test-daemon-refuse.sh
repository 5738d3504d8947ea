#!/usr/bin/env bash
# fssnapd refuses to start, with one line on stderr and exit 1, when the
# origin is missing, not a file or device, unreadable, already served, or
# its run dir belongs to a live daemon; stale sockets of a dead one are
# cleaned up; bad options exit 1 too.
source "$(dirname "$0")/functions.sh"
requires_root
requires setpriv

img=$TESTDIR/disk.img
make_image "$img" 16M
d() { "$FSSNAPD" --foreground --run-dir "$TESTDIR/run" --state-dir "$TESTDIR/state" "$@"; }

expect_exit 1 "cannot open origin $TESTDIR/missing.img: No such file" d "$TESTDIR/missing.img"
expect_exit 1 "is not a regular file or block device" d "$TESTDIR"
expect_exit 1 "no ORIGIN given" d
expect_exit 1 "one ORIGIN only" d "$img" "$img"
expect_exit 1 "bad --chunksize" d --chunksize 3000 "$img"
expect_exit 1 "bad --chunksize" d --chunksize 2m "$img"
expect_exit 1 "unknown option" d --frobnicate "$img"
expect_exit 1 "bad --listen address" d --tls=off --listen "[::1" "$img"

# Unreadable: an unprivileged user cannot open a 0600 root image.
chmod 0600 "$img"
chmod 0755 "$TESTDIR"
expect_exit 1 "cannot open origin $img: Permission denied" \
  setpriv --reuid=65534 --regid=65534 --clear-groups \
  "$FSSNAPD" --foreground --run-dir "$TESTDIR/nobody-run" "$img"

# The one daemon of this origin.
start_fssnapd "$img"

# Same origin, another run dir: the origin is locked.
expect_exit 1 "origin $img is already served by another fssnapd" \
  "$FSSNAPD" --foreground --run-dir "$TESTDIR/run2" --state-dir "$TESTDIR/state2" "$img"
# Same origin through a symlink: still the same file, still locked.
ln -s "$img" "$TESTDIR/link.img"
expect_exit 1 "already served by another fssnapd" \
  "$FSSNAPD" --foreground --run-dir "$TESTDIR/run3" "$TESTDIR/link.img"
# Another origin, the same run dir: in use.
make_image "$TESTDIR/other.img" 16M
expect_exit 1 "run dir $RUN_DIR is in use by fssnapd (pid $FSSNAPD_PID)" \
  d "$TESTDIR/other.img"
# The refusals left the live daemon's sockets alone.
[ -S "$NBD_SOCK" ] && [ -S "$CTL_SOCK" ] || fail "a refused start removed the sockets"
fssnap list >/dev/null || fail "the first daemon stopped answering"

# A daemon killed with SIGKILL leaves stale sockets; the next start removes
# them and serves.
kill -KILL "$FSSNAPD_PID"
wait "$FSSNAPD_PID" 2>/dev/null
FSSNAPD_PID=
[ -S "$CTL_SOCK" ] || fail "expected a stale control socket after SIGKILL"
start_fssnapd "$img"
nbdinfo "$(nbd_uri volume)" >/dev/null || fail "NBD after restart over stale sockets"
stop_fssnapd

# Something else listening in the run dir (not a fssnapd): refused.
rm -f "$NBD_SOCK"
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
time.sleep(30)' "$NBD_SOCK" &
squatter=$!
cleanup_fn "kill $squatter 2>/dev/null"
for _ in $(seq 50); do [ -S "$NBD_SOCK" ] && break; sleep 0.1; done
expect_exit 1 "run dir $RUN_DIR is in use: a server answers on $NBD_SOCK" d "$img"
kill "$squatter"
echo "all refusals ok"
