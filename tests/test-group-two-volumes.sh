#!/usr/bin/env bash
# fssnap create --mount /a --mount /b: two ext4 volumes served by two
# fssnapd, found from the mounts (--run-root); one process appends record
# i to /a/log, fsyncs, then to /b/log, fsyncs, in a loop.  In each of many
# group snapshots /b never holds a record that /a lacks (b's log is a
# prefix of a's), and both snapshots carry the same group UUID (list).
# A failure on the second volume (its state dir full) leaves no new
# snapshot on the first and both file systems thawed.
. "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 debugfs losetup timeout
cleanup_fn fs_cleanup

runs=$TESTDIR/runs
mkdir -p "$runs"
gfssnap() { "$FSSNAP" --run-root "$runs" "$@"; }
pids=()
start_one() {               # NAME STATE_DIR
  make_image "$TESTDIR/$1.img" 48M
  "$FSSNAPD" --foreground --run-dir "$runs/$1" --state-dir "$2" \
    "$TESTDIR/$1.img" >>"$TESTDIR/$1.log" 2>&1 &
  pids+=($!)
  cleanup_fn "kill $! 2>/dev/null; wait $! 2>/dev/null"
  for ((i = 0; i < 200; i++)); do
    [ -f "$runs/$1/dev/volume" ] && "$FSSNAP" --run-dir "$runs/$1" list >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$TESTDIR/$1.log"; fail "fssnapd $1 did not start"
}
mkdir -p "$TESTDIR/bstate"
mount -t tmpfs -o size=8m tmpfs "$TESTDIR/bstate" || fail "tmpfs"
start_one a "$TESTDIR/astate"
start_one b "$TESTDIR/bstate"
for v in a b; do
  dev=$("$FSSNAP" --run-dir "$runs/$v" attach volume) || fail "attach $v"
  mkfs.ext4 -q -F "$dev" || fail "mkfs $v"
  mkdir "$TESTDIR/$v" && mount "$dev" "$TESTDIR/$v" || fail "mount $v"
done

/usr/bin/python3 - "$TESTDIR/a/log" "$TESTDIR/b/log" "$TESTDIR/stop" <<'PY' &
import os, sys
a = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
b = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
i = 0
while not os.path.exists(sys.argv[3]):
    rec = b"%08d\n" % i
    os.write(a, rec); os.fsync(a)
    os.write(b, rec); os.fsync(b)
    i += 1
PY
writer=$!
cleanup_fn "touch '$TESTDIR/stop'; wait $writer 2>/dev/null"
sleep 0.3

groups=6
for ((g = 0; g < groups; g++)); do
  gfssnap create --json --mount "$TESTDIR/b" --mount "$TESTDIR/a" >"$TESTDIR/g$g.json" \
    || fail "group create $g"
  sleep 0.2
done
touch "$TESTDIR/stop"; wait $writer

# Each group: the same UUID on both sides, and b's log a prefix of a's.
for ((g = 0; g < groups; g++)); do
  /usr/bin/python3 - "$TESTDIR/g$g.json" "$runs" "$FSSNAP" <<'PY' || fail "group $g is not consistent"
import json, subprocess, sys
j = json.load(open(sys.argv[1]))
snaps = {s["run_dir"].rsplit("/", 1)[1]: s for s in j["snapshots"]}
assert set(snaps) == {"a", "b"}, snaps.keys()
logs = {}
for v, s in snaps.items():
    assert s["group"] == j["group"], (s["group"], j["group"])
    listed = json.loads(subprocess.check_output([sys.argv[3], "--run-dir", s["run_dir"], "list", "--json"]))
    assert [x["group"] for x in listed if x["number"] == s["number"]] == [j["group"]], listed
    logs[v] = subprocess.run(["debugfs", "-R", "cat /log", s["devices"]["fuse"]],
                             capture_output=True).stdout
a, b = logs["a"], logs["b"]
if not a.startswith(b):
    sys.exit("b holds records a lacks: a has %d bytes, b %d" % (len(a), len(b)))
print("group %s: a %d records, b %d" % (j["group"][:8], len(a) // 9, len(b) // 9))
PY
done
lasta=$(/usr/bin/python3 -c "import json; print(json.load(open('$TESTDIR/g$((groups - 1)).json'))['snapshots'][0]['number'])")
[ -n "$lasta" ] || fail "no snapshot numbers"

# A failure on the second volume: its state dir is full.
for v in a b; do
  for n in $("$FSSNAP" --run-dir "$runs/$v" list --json | json_get '" ".join(str(s["number"]) for s in j)'); do
    "$FSSNAP" --run-dir "$runs/$v" delete "$n" || fail "delete $v $n"
  done
done
dd if=/dev/zero of="$TESTDIR/bstate/fill" bs=64k 2>/dev/null
expect_exit 4 "No space left" gfssnap create --mount "$TESTDIR/a" --mount "$TESTDIR/b"
[ "$("$FSSNAP" --run-dir "$runs/a" list --json | json_get 'len(j)')" = 0 ] || fail "a snapshot was left on a"
[ "$("$FSSNAP" --run-dir "$runs/b" list --json | json_get 'len(j)')" = 0 ] || fail "a snapshot was left on b"
for v in a b; do
  timeout 10 sh -c "echo x >'$TESTDIR/$v/after' && sync -f '$TESTDIR/$v/after'" || fail "$v is still frozen"
done
expect_exit 1 "is given twice" gfssnap create --mount "$TESTDIR/a" --mount "$TESTDIR/a/"
echo "$groups consistent groups; a failure on b left nothing"
