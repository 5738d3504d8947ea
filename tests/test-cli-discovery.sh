#!/usr/bin/env bash
# Without --run-dir, fssnap talks to the one fssnapd under /run/fssnap and
# refuses (exit 2) when there is none or several.  Runs in a private mount
# namespace with a tmpfs on /run/fssnap, so daemons of the host or of other
# tests are not seen and not disturbed.  Also fssnapd's default run dir.
source "$(dirname "$0")/functions.sh"
requires_root
requires unshare

if [ -z "${IN_PRIVATE_NS:-}" ]; then
  mkdir -p /run/fssnap
  IN_PRIVATE_NS=1 BUILD=$BUILD exec unshare -m --propagation private bash "$0"
fi
mount -t tmpfs fssnap-test /run/fssnap || fail "cannot mount a tmpfs on /run/fssnap"

make_image "$TESTDIR/a.img" 16M
make_image "$TESTDIR/b.img" 16M
expect_exit 2 "no fssnapd is running under /run/fssnap" "$FSSNAP" list

"$FSSNAPD" --no-fuse --state-dir "$TESTDIR/sa" --pidfile "$TESTDIR/a.pid" "$TESTDIR/a.img" \
  || fail "start a"
cleanup_fn "kill \$(cat '$TESTDIR/a.pid') 2>/dev/null"
[ -S /run/fssnap/a.img/control.sock ] || fail "default run dir is not /run/fssnap/a.img"
[ "$("$FSSNAP" create)" = snap/0 ] || fail "create without --run-dir"
"$FSSNAP" list | grep -q "^0 " || fail "list without --run-dir"

"$FSSNAPD" --no-fuse --state-dir "$TESTDIR/sb" --pidfile "$TESTDIR/b.pid" "$TESTDIR/b.img" \
  || fail "start b"
cleanup_fn "kill \$(cat '$TESTDIR/b.pid') 2>/dev/null"
expect_exit 2 "2 fssnapd run under /run/fssnap" "$FSSNAP" list
[[ $LAST_STDERR == *"/run/fssnap/a.img"*"/run/fssnap/b.img"* || $LAST_STDERR == *"/run/fssnap/b.img"*"/run/fssnap/a.img"* ]] \
  || fail "the message does not name both: $LAST_STDERR"
"$FSSNAP" --run-dir /run/fssnap/b.img list --json | json_get 'len(j)' | grep -qx 0 || fail "--run-dir b"

# A dead daemon's stale socket does not count.
kill "$(cat "$TESTDIR/b.pid")"
for _ in $(seq 100); do [ -e "$TESTDIR/b.pid" ] || break; sleep 0.1; done
touch /run/fssnap/b.img/control.sock.stale
"$FSSNAP" delete 0 || fail "delete without --run-dir after b stopped"
kill "$(cat "$TESTDIR/a.pid")"
for _ in $(seq 100); do [ -e "$TESTDIR/a.pid" ] || break; sleep 0.1; done
echo "discovery ok"
