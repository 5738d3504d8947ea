#!/usr/bin/env bash
# fssnap rollback N: random writes around five snapshots (two older than
# N, two newer), rollback to N; the volume then equals N byte for byte
# (nbdcopy + cmp), every other snapshot reads as before (checksums), diff
# N volume is empty, and a second rollback moves nothing.  Refused while
# an NBD client is connected, while the volume is attached, while it is
# mounted; --force overrides.
. "$(dirname "$0")/functions.sh"
requires_root
requires nbdcopy mkfs.ext4 losetup
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }
cleanup_fn fs_cleanup

img=$TESTDIR/vol.img
make_image "$img" 16M
start_fssnapd "$img" --chunksize 16k
wait_devfs

writes() {
  /usr/bin/python3 - "$(nbd_uri volume)" "$1" "$RANDOM" <<'PY' || fail "writes failed"
import nbd, os, random, sys
uri, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
for _ in range(count):
    n = rnd.randrange(1, 17) * 4096
    off = rnd.randrange(0, (size - n) // 512) * 512
    if rnd.random() < 0.15:
        h.zero(n, off)
    else:
        h.pwrite(os.urandom(n), off)
h.flush()
h.shutdown()
PY
}
image() { nbdcopy "$(nbd_uri "$1")" "$TESTDIR/$2" || fail "nbdcopy $1"; }
sums() { local n; for n in 0 1 3 4; do nbdcopy "$(nbd_uri snap/$n)" - | sha256sum; done; }

for n in 0 1 2 3 4; do
  writes 60
  fssnap create >/dev/null || fail "create $n"
done
writes 60
sums >"$TESTDIR/sums.before"

# Refusals, each changing nothing.
/usr/bin/python3 - "$(nbd_uri volume)" "$TESTDIR/hold" <<'PY' &
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]): time.sleep(0.05)
h.shutdown()
PY
holder=$!
for ((i = 0; i < 100; i++)); do [ -e "$TESTDIR/hold" ] && break; sleep 0.05; done
expect_exit 4 "NBD client" fssnap rollback 2
rm -f "$TESTDIR/hold"; wait $holder

loop=$(fssnap attach volume) || fail "attach volume"
expect_exit 4 "attached as $loop" fssnap rollback 2
mkfs.ext4 -q -F "$loop" || fail "mkfs"
mkdir "$TESTDIR/mnt"; mount "$loop" "$TESTDIR/mnt" || fail "mount"
expect_exit 4 "mounted on $TESTDIR/mnt" fssnap rollback 2
umount "$TESTDIR/mnt"; fssnap detach volume || fail "detach"
expect_exit 3 "no snapshot 9" fssnap rollback 9
expect_exit 1 "one snapshot number" fssnap rollback
[ -z "$(ls "$STATE_DIR" | grep '\.rollback$')" ] || fail "a refused rollback left an intent"

# The rollback itself (the volume was just reformatted: many moves).
out=$(fssnap rollback --json 2) || fail "rollback 2"
moved=$(echo "$out" | json_get 'j["moved"]')
[ "$(echo "$out" | json_get 'j["state"]')" = done ] || fail "rollback: $out"
[ "$moved" -gt 0 ] || fail "rollback moved nothing: $out"
image snap/2 snap2; image volume vol
cmp "$TESTDIR/snap2" "$TESTDIR/vol" || fail "the volume differs from snapshot 2"
sums >"$TESTDIR/sums.after"
cmp "$TESTDIR/sums.before" "$TESTDIR/sums.after" || fail "another snapshot changed"
expect_exit 0 "" fssnap diff 2 volume
[ -z "$LAST_STDOUT" ] || fail "diff 2 volume after the rollback: $LAST_STDOUT"
fssnap diff 1 volume >/dev/null && fail "diff 1 volume is empty: maps lost"
[ -z "$(ls "$STATE_DIR" | grep '\.rollback$')" ] || fail "the intent is still there"

# Again: nothing to move; a write afterwards shows in diff again.
out=$(fssnap rollback --json 2) || fail "second rollback"
[ "$(echo "$out" | json_get 'j["moved"]')" = 0 ] || fail "second rollback moved chunks: $out"
/usr/bin/python3 -c "
import nbd, os
h = nbd.NBD(); h.connect_uri('$(nbd_uri volume)')
h.pwrite(os.urandom(4096), 20480); h.flush(); h.shutdown()" || fail "one write"
[ "$(fssnap diff 2 volume)" = "16384 16384" ] || fail "diff 2 volume after one write: $(fssnap diff 2 volume)"

# --force under an attached volume; and across a restart the target is
# still exact.
loop=$(fssnap attach volume) || fail "attach volume"
fssnap rollback --force 2 >/dev/null || fail "rollback --force"
fssnap detach volume || fail "detach"
stop_fssnapd
start_fssnapd "$img" --chunksize 16k
image volume vol2
cmp "$TESTDIR/snap2" "$TESTDIR/vol2" || fail "the volume differs from snapshot 2 after a restart"
sums >"$TESTDIR/sums.after2"
cmp "$TESTDIR/sums.before" "$TESTDIR/sums.after2" || fail "another snapshot changed by the restart"
echo "rollback moved $moved chunks"
