#!/usr/bin/env bash
# fssnapd killed with SIGKILL at random moments, 50 times, while a client
# writes verified data through NBD and creates and deletes snapshots
# (a third of them transient).
# After each restart: every snapshot that comes back is valid and reads
# exactly the image it was created from; none acknowledged is lost (but
# every transient one is), none whose delete was acknowledged comes back;
# the volume holds every acknowledged write (tests/lib/crashload.py keeps
# the model).
. "$(dirname "$0")/functions.sh"
requires sha256sum
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }

rounds=${FSSNAP_CRASH_ROUNDS:-50}
img=$TESTDIR/vol.img
make_image "$img" 8M
state=$TESTDIR/model.json
load() { /usr/bin/python3 "$TOP/tests/lib/crashload.py" "$1" "$state" "$NBD_SOCK" "$FSSNAP" "$RUN_DIR"; }

start_fssnapd "$img" --no-fuse --chunksize 16k
for ((round = 1; round <= rounds; round++)); do
  load verify || fail "round $round: verification after restart failed"
  load run > "$TESTDIR/load.log" 2>&1 &
  load_pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  kill -KILL "$FSSNAPD_PID"
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
  wait "$load_pid" || { cat "$TESTDIR/load.log" >&2; fail "round $round: the load failed"; }
  start_fssnapd "$img" --no-fuse
done
load verify || fail "final verification failed"
load summary
stop_fssnapd
