#!/usr/bin/env bash
# fssnapd under Type=notify, without systemd: a datagram socket stands in
# for systemd's NOTIFY_SOCKET, and fssnapd runs with the command line of
# fssnapd@.service (its directories replaced by this test's).  READY=1 (with MAINPID, fssnapd's own pid)
# arrives once the NBD and control sockets answer and the FUSE device
# files are mounted, never before; SIGTERM brings STOPPING=1 and a clean
# exit 0.  Without NOTIFY_SOCKET nothing is sent (the other tests).
source "$(dirname "$0")/functions.sh"
requires_root
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"

# Print each datagram's lines as they come, to $1; stop after STOPPING=1.
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[1] + ".bound", "w").close()
s.settimeout(60)
with open(sys.argv[2], "a") as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg.rstrip("\n") + "\n---\n"); out.flush()
        if "STOPPING=1" in msg.split("\n"):
            break
' "$TESTDIR/notify.sock" "$TESTDIR/notify.log" &
listener=$!
for ((i = 0; i < 100; i++)); do [ -e "$TESTDIR/notify.sock.bound" ] && break; sleep 0.05; done

# The command line of fssnapd@.service, with this test's directories for
# /run/fssnap/%i and /var/lib/fssnap/%i, the origin for %f, no options file.
make_image "$TESTDIR/disk.img" 16M
cmdline=$(sed -n 's/^ExecStart=@SBINDIR@\/fssnapd //p' "$TOP/systemd/fssnapd@.service.in" |
          sed "s|/run/fssnap/%i|$RUN_DIR|; s|/var/lib/fssnap/%i|$STATE_DIR|; s|\$FSSNAPD_OPTIONS||; s|%f|$TESTDIR/disk.img|")
[[ $cmdline == --foreground* ]] || fail "unexpected ExecStart in the unit: $cmdline"
NOTIFY_SOCKET=$TESTDIR/notify.sock "$FSSNAPD" $cmdline >"$FSSNAPD_LOG" 2>&1 &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
for ((i = 0; i < 400; i++)); do grep -q '^READY=1$' "$TESTDIR/notify.log" 2>/dev/null && break; sleep 0.05; done
grep -q '^READY=1$' "$TESTDIR/notify.log" || { cat "$FSSNAPD_LOG"; fail "no READY=1"; }
# Ready means everything is served already.
[ -f "$RUN_DIR/dev/volume" ] || fail "READY=1 before the device files"
fssnap list >/dev/null || fail "READY=1 but the control socket does not answer"
nbdinfo --size "$(nbd_uri volume)" >/dev/null || fail "READY=1 but NBD does not answer"
grep -qx "MAINPID=$pid" "$TESTDIR/notify.log" || fail "MAINPID is not fssnapd's pid: $(cat "$TESTDIR/notify.log")"
grep -q '^STATUS=serving' "$TESTDIR/notify.log" || fail "no STATUS"
grep -q 'STOPPING=1' "$TESTDIR/notify.log" && fail "STOPPING=1 before the stop"

kill -TERM "$pid"
rc=0; wait_exit "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "fssnapd exited $rc after SIGTERM"
wait_exit "$listener" || fail "no STOPPING=1: $(cat "$TESTDIR/notify.log")"
grep -qx 'STOPPING=1' "$TESTDIR/notify.log" || fail "no STOPPING=1"
[ "$(grep -c '^READY=1$' "$TESTDIR/notify.log")" -eq 1 ] || fail "READY=1 sent more than once"
cat "$TESTDIR/notify.log"
