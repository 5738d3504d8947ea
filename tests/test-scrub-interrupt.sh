#!/usr/bin/env bash
# fssnap scrub stopped by SIGTERM (to its process group, as a ^C reaches
# the whole foreground job) while e2fsck runs: it exits 8 saying so, and
# leaves no snapshot, no clone and no loop device behind.  e2fsck is a
# stand-in here that waits to be stopped.
. "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup setsid

img=$TESTDIR/vol.img
serve_ext4 "$img" 32M

mkdir "$TESTDIR/bin"
cat >"$TESTDIR/bin/e2fsck" <<EOF2
#!/bin/sh
touch "$TESTDIR/started"
trap 'exit 8' TERM INT
sleep 30 & wait
EOF2
chmod +x "$TESTDIR/bin/e2fsck"
PATH=$TESTDIR/bin:$PATH setsid "$FSSNAP" --run-dir "$RUN_DIR" scrub "$TESTDIR/mnt" \
  >"$TESTDIR/out" 2>"$TESTDIR/err" &
pid=$!
for ((i = 0; i < 200; i++)); do [ -e "$TESTDIR/started" ] && break; sleep 0.05; done
[ -e "$TESTDIR/started" ] || fail "e2fsck never ran: $(cat "$TESTDIR/err")"
fssnap list | grep -q "^CLONE" || fail "no clone while e2fsck runs"
kill -TERM -- "-$pid"
rc=0; wait_exit "$pid" || rc=$?
[ "$rc" = 8 ] || fail "scrub exited $rc: $(cat "$TESTDIR/err")"
grep -q "interrupted" "$TESTDIR/err" || fail "scrub said: $(cat "$TESTDIR/err")"
[ "$(fssnap list --json | json_get 'len(j)')" = 0 ] || fail "a snapshot was left: $(fssnap list)"
fssnap list | grep -q "^CLONE" && fail "a clone was left"
for f in /sys/block/loop*/loop/backing_file; do
  grep -q "dev/clone/" "$f" 2>/dev/null && grep -q "^$RUN_DIR/" "$f" && fail "a loop device on the clone was left"
done
echo "scrub interrupted: everything dropped"
