#!/usr/bin/env bash
# Changed-block tracking across kill -9 and a lost transient snapshot.
#  - An NBD client writes at random offsets and logs each write once it is
#    acknowledged; fssnapd is killed with SIGKILL in the middle, three
#    times.  After each restart fssnap diff LAST volume (and the dirty
#    bitmap over NBD) covers every acknowledged write since snapshot LAST.
#  - A transient snapshot between two persistent ones is gone after a
#    restart: every diff that spans where it was exits 5 with one clear
#    line, the dirty bitmap over NBD fails (EIO) instead of saying
#    "clean", and diffs that do not span it still work.
. "$(dirname "$0")/functions.sh"
requires nbdinfo
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }

img=$TESTDIR/vol.img
make_image "$img" 128M
start_fssnapd "$img" --no-fuse --chunksize 16k

# Write until killed; log "offset length" after each acknowledged write.
load() {
  /usr/bin/python3 - "$(nbd_uri volume)" "$1" "$RANDOM" <<'EOF'
import nbd, os, random, sys, time
uri, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
out = open(log, "a", buffering=1)
try:
    while True:
        n = rnd.randrange(1, 17) * 512
        off = rnd.randrange(0, (size - n) // 512) * 512
        h.pwrite(os.urandom(n), off)
        out.write(f"{off} {n}\n")
        time.sleep(0.002)           # a few hundred chunks, not all of them
except nbd.Error:
    pass                            # the daemon was killed
EOF
}

# covered LOG DIFF: every logged write lies inside the diff's extents.
covered() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import bisect, sys
ext = [tuple(map(int, l.split())) for l in open(sys.argv[2])]
starts = [o for o, _ in ext]
writes = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
bad = 0
for off, n in writes:
    i = bisect.bisect_right(starts, off) - 1
    if i < 0 or off + n > ext[i][0] + ext[i][1]:
        bad += 1
        if bad < 5:
            print(f"write {off}+{n} not reported", file=sys.stderr)
if bad or not writes:
    sys.exit(f"{bad} of {len(writes)} acknowledged writes not reported")
print(f"{len(writes)} acknowledged writes, all inside {len(ext)} extents"
      f" ({sum(l for _, l in ext)} bytes)")
EOF
}

# differs A B: fssnap diff A B exits 1 (differs), its output in $DIFF_OUT.
differs() {
  local rc=0
  DIFF_OUT=$(fssnap diff "$@") || rc=$?
  [ "$rc" -eq 1 ] || fail "fssnap diff $* exited $rc, not 1"
}

kill_fssnapd() {
  kill -KILL "$FSSNAPD_PID"
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
}

for round in 1 2 3; do
  last=$(basename "$(fssnap create)") || fail "round $round: create"
  log=$TESTDIR/writes.$round
  : >"$log"
  load "$log" &
  load_pid=$!
  sleep "1.$((RANDOM % 5))"
  kill_fssnapd
  wait "$load_pid" || fail "round $round: the load failed"
  start_fssnapd "$img" --no-fuse
  rc=0
  fssnap diff "$last" volume >"$TESTDIR/diff" || rc=$?
  [ "$rc" -eq 1 ] || fail "round $round: diff $last volume exited $rc"
  covered "$log" "$TESTDIR/diff" || fail "round $round: writes lost by diff $last volume"
  nbdinfo --map="qemu:dirty-bitmap:snap/$last" "$(nbd_uri volume)" \
    | awk '$3 == 1 { print $1, $2 }' >"$TESTDIR/map" || fail "round $round: nbdinfo --map"
  covered "$log" "$TESTDIR/map" >/dev/null || fail "round $round: writes lost by the dirty bitmap"
  if [ "$round" -gt 1 ]; then   # and from the snapshot before, both logs
    cat "$TESTDIR/writes.$((round - 1))" "$log" >"$TESTDIR/both"
    fssnap diff "$prev" volume >"$TESTDIR/diff"
    covered "$TESTDIR/both" "$TESTDIR/diff" >/dev/null || fail "round $round: diff $prev volume"
  fi
  prev=$last
done

# A transient snapshot between two persistent ones.
qio() { /usr/bin/python3 -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pwrite(b"\x5a" * 65536, int(sys.argv[2])); h.flush()' \
  "$(nbd_uri volume)" "$1" || fail "write at $1"; }
p1=$(basename "$(fssnap create)")
qio 0
t=$(basename "$(fssnap create -o transient)")
qio $((1 << 20))
p2=$(basename "$(fssnap create)")
qio $((2 << 20))
differs "$p1" "$p2"                     # fine while it lives
stop_fssnapd
start_fssnapd "$img" --no-fuse
fssnap info "$t" >/dev/null 2>&1 && fail "transient snapshot $t came back"
for pair in "$p1 $p2" "$p1 volume" "$prev $p2"; do
  # shellcheck disable=SC2086
  expect_exit 5 "take a full copy" fssnap diff $pair
done
echo "message: $LAST_STDERR"
[[ $LAST_STDERR == "fssnap: "* ]] || fail "the message does not start with fssnap:"
expect_exit 5 "take a full copy" fssnap diff "$p2" "$p1" --json
[ -z "$LAST_STDOUT" ] || fail "diff --json printed something on exit 5: $LAST_STDOUT"
differs "$p2" volume                    # after it: exact
[ "$DIFF_OUT" = "$((2 << 20)) 65536" ] || fail "diff $p2 volume: $DIFF_OUT"
differs "$prev" "$p1"                   # before it: exact
nbdinfo --map="qemu:dirty-bitmap:snap/$p1" "$(nbd_uri "snap/$p2")" >/dev/null 2>&1 \
  && fail "the dirty bitmap over a lost transient snapshot did not fail"
nbdinfo --map="qemu:dirty-bitmap:snap/$p2" "$(nbd_uri volume)" | grep -q "65536 *1" \
  || fail "the dirty bitmap after the transient snapshot"
stop_fssnapd
echo "cbt crash: acknowledged writes reported after 3 kill -9; lost transient snapshot gives exit 5"
