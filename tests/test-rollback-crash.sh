#!/usr/bin/env bash
# kill -9 of fssnapd in the middle of a rollback (paced by
# FSSNAP_TEST_ROLLBACK_DELAY_MS, a test-only knob of engine/rollback.c):
# the intent is left in the state dir, the restarted fssnapd resumes the
# rollback by itself, and the result is the same as an uninterrupted one:
# the volume equals the snapshot, the other snapshots are unchanged, the
# intent is gone.
. "$(dirname "$0")/functions.sh"
requires nbdcopy
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }

img=$TESTDIR/vol.img
make_image "$img" 8M
start_fssnapd "$img" --no-fuse --chunksize 16k

fill() {
  /usr/bin/python3 - "$(nbd_uri volume)" "$1" <<'PY' || fail "writes failed"
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
step = int(sys.argv[2])
for off in range(0, h.get_size(), step):
    h.pwrite(os.urandom(4096), off)
h.flush(); h.shutdown()
PY
}
sums() { local n; for n in 0 1; do nbdcopy "$(nbd_uri snap/$n)" - | sha256sum; done; }

fill 32768
fssnap create >/dev/null || fail "create 0"
fill 16384                      # every chunk differs from snapshot 0 now
fssnap create >/dev/null || fail "create 1"
fill 65536
sums >"$TESTDIR/sums.before"
chunks=$((8 * 1024 / 16))

stop_fssnapd
FSSNAP_TEST_ROLLBACK_DELAY_MS=10 start_fssnapd "$img" --no-fuse
fssnap rollback 0 >/dev/null 2>&1 &
cli=$!
for ((i = 0; i < 200; i++)); do
  moved=$(echo '{"request":"rollback-status"}' | ctl_raw | json_get 'j["rollback"]["moved"]')
  [ "$moved" -ge 40 ] && break
  sleep 0.05
done
[ "$moved" -ge 40 ] || fail "the rollback does not progress"
expect_exit 4 "being rolled back to snapshot 0" fssnap delete 0
expect_exit 4 "rollback is running" fssnap create
kill -9 "$FSSNAPD_PID"; wait "$FSSNAPD_PID" 2>/dev/null; FSSNAPD_PID=
wait $cli && fail "fssnap rollback succeeded although fssnapd was killed"
ls "$STATE_DIR" | grep -q '\.rollback$' || fail "no intent left after kill -9"

start_fssnapd "$img" --no-fuse
for ((i = 0; i < 400; i++)); do
  state=$(echo '{"request":"rollback-status"}' | ctl_raw | json_get 'j["rollback"]["state"]')
  [ "$state" = running ] || break
  sleep 0.05
done
[ "$state" = done ] || fail "the resumed rollback ended as $state"
grep -q "resuming the unfinished rollback to snapshot 0" "$FSSNAPD_LOG" || fail "no resume logged"
ls "$STATE_DIR" | grep -q '\.rollback$' && fail "intent left after the resumed rollback"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0" && nbdcopy "$(nbd_uri volume)" "$TESTDIR/vol" || fail nbdcopy
cmp "$TESTDIR/snap0" "$TESTDIR/vol" || fail "the volume differs from snapshot 0"
sums >"$TESTDIR/sums.after"
cmp "$TESTDIR/sums.before" "$TESTDIR/sums.after" || fail "a snapshot changed"
expect_exit 0 "" fssnap diff 0 volume
[ -z "$LAST_STDOUT" ] || fail "diff 0 volume: $LAST_STDOUT"
echo "killed after $moved of $chunks chunks; resumed and finished"
