#!/usr/bin/env bash
# bench/run in quick mode (1 rep, 1-second runs, small images) into a
# scratch dir: it must finish, leave no daemon, loop device or mount
# behind, and write a results.json that parses and has every workload key
# and a results.md.  The committed bench/results.* are not touched.
source "$(dirname "$0")/functions.sh"
requires fio nbdkit qemu-nbd qemu-img nbdcopy nbdinfo
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "skipped: fio lacks the nbd engine"; exit 77; }
for b in "$FSSNAPD" "$FSSNAP" "$BUILD/bench/engine"; do
  [ -x "$b" ] || fail "$b not built"
done

out=$TESTDIR/out
# Scratch images on a real file system (loop devices with direct I/O),
# like bench/run's default, but in a dir of our own.
btmp=$(mktemp -d /var/tmp/fssnap-bench-smoke.XXXXXX)
cleanup_fn "rm -rf '$btmp'"
committed=$(cat "$TOP/bench/results.json" 2>/dev/null | md5sum)
BENCH_QUICK=1 BENCH_TMP=$btmp BUILD=$BUILD timeout 300 "$TOP/bench/run" --out "$out" \
  >"$TESTDIR/bench.log" 2>&1 || { cat "$TESTDIR/bench.log"; fail "bench/run failed"; }
tail -3 "$TESTDIR/bench.log"

[ -s "$out/results.md" ] || fail "no results.md"
grep -q '^## Headline' "$out/results.md" || fail "results.md has no Headline section"
/usr/bin/python3 - "$out/results.json" <<'PY' || fail "results.json is incomplete"
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["engine", "w1_randwrite_4k", "w2_seqwrite_1m", "w3_snapshot_reads",
        "w4_many_snapshots", "w5_create_time", "w6_backup", "w7_peak_rss", "loop_fuse"]
missing = [k for k in keys if k not in r["workloads"]]
assert not missing, "missing workloads: %s" % missing
for k in keys:
    w = r["workloads"][k]
    assert w["rows"] or w["notes"], "%s has neither rows nor a note saying why" % k
for k in ("engine", "w1_randwrite_4k", "w2_seqwrite_1m", "w3_snapshot_reads",
          "w4_many_snapshots", "w5_create_time", "w7_peak_rss"):
    rows = [x for x in r["workloads"][k]["rows"] if "median" in x]
    assert rows, "%s has no measurement" % k
    assert all(x["median"] > 0 for x in rows), "%s has a zero figure" % k
ft = [x for x in r["workloads"]["first_touch"]["rows"] if "median" in x]
assert {x["peer"] for x in ft} >= {"fssnapd, 1 snapshot", "fssnapd, 1 snapshot, transient",
                                   "nbdkit --filter=cow file",
                                   "disk ceiling: O_DIRECT write bandwidth / chunk size"}, \
    "first_touch lacks a server: %s" % sorted(x["peer"] for x in ft)
assert all(x["median"] > 0 for x in ft), "first_touch has a zero figure"
ft4k = {x["peer"] for x in ft if x["case"].startswith("random order, 4 KiB chunks")}
assert ft4k == {"fssnapd, 1 snapshot", "fssnapd, 1 snapshot, transient",
                "nbdkit --filter=cow file"}, "first_touch 4 KiB rows: %s" % sorted(ft4k)
assert any("ceiling" in h for h in r["headline"]), "no disk ceiling in the headline"
for k in ("machine", "versions", "config", "headline", "commands"):
    assert r[k], "empty %s" % k
print("results.json: %d workloads, %d headline lines" % (len(keys), len(r["headline"])))
PY
[ "$(cat "$TOP/bench/results.json" 2>/dev/null | md5sum)" = "$committed" ] || fail "bench/results.json changed"
[ -z "$(ls -A "$btmp")" ] || fail "scratch dir left behind: $(ls "$btmp")"
losetup -a 2>/dev/null | grep -q "$btmp" && fail "loop device left behind"
grep -q "$btmp" /proc/mounts && fail "mount left behind"
pgrep -f "$btmp" && fail "process left behind"
echo PASS
