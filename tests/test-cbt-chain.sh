#!/usr/bin/env bash
# Changed-block tracking on a chain of five snapshots with random writes
# (python3-libnbd, about 5% of the volume in all) before and between them:
# for every pair (A,B) and (A,volume), fssnap diff covers every byte that
# really differs (full images read with nbdcopy), covers under 10% of the
# volume, and agrees with nbdinfo --map=qemu:dirty-bitmap:snap/A on the
# export snap/B.  Still exact after deleting a middle snapshot and after a
# clean restart of fssnapd.
. "$(dirname "$0")/functions.sh"
requires nbdcopy nbdinfo
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }

size=$((32 << 20))
img=$TESTDIR/vol.img
make_image "$img" $size
start_fssnapd "$img" --no-fuse --chunksize 16k

# Random writes of 32-96 KiB at 4 KiB-aligned offsets, $1 bytes in all.
writes() {
  /usr/bin/python3 - "$(nbd_uri volume)" "$1" "$RANDOM" <<'EOF' || fail "writes failed"
import nbd, os, random, sys
uri, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
done = 0
while done < total:
    n = rnd.randrange(8, 25) * 4096
    off = rnd.randrange(0, (size - n) // 4096) * 4096
    h.pwrite(os.urandom(n), off)
    done += n
h.flush()
h.shutdown()
EOF
}

image() { nbdcopy "$(nbd_uri "$1")" "$TESTDIR/img.${1//\//_}" || fail "nbdcopy $1"; }

# check A B: diff A B covers every differing sector, under 10%, and agrees
# with the dirty bitmap over NBD (B a snapshot).  Prints the coverage.
check() {
  local a=$1 b=$2 rc=0 fb=$2
  [ "$b" = volume ] || fb=snap/$b
  fssnap diff "$a" "$b" >"$TESTDIR/diff" || rc=$?
  [ "$rc" -le 1 ] || fail "fssnap diff $a $b exited $rc"
  if [ "$b" != volume ]; then
    nbdinfo --json --map="qemu:dirty-bitmap:snap/$a" "$(nbd_uri "snap/$b")" >"$TESTDIR/map" \
      || fail "nbdinfo --map=qemu:dirty-bitmap:snap/$a on snap/$b"
  else
    nbdinfo --json --map="qemu:dirty-bitmap:snap/$a" "$(nbd_uri volume)" >"$TESTDIR/map" \
      || fail "nbdinfo --map=qemu:dirty-bitmap:snap/$a on volume"
  fi
  /usr/bin/python3 - "$TESTDIR/img.snap_$a" "$TESTDIR/img.${fb//\//_}" "$TESTDIR/diff" \
    "$TESTDIR/map" "$rc" "$a $b" <<'EOF' || fail "diff $a $b is wrong"
import json, sys
fa, fb, fdiff, fmap, rc, name = sys.argv[1:7]
A, B = open(fa, "rb").read(), open(fb, "rb").read()
ext = [tuple(map(int, l.split())) for l in open(fdiff)]
size, cov = len(A), sum(l for _, l in ext)
# Merged dirty extents from nbdinfo.
m = []
for e in json.load(open(fmap)):
    if e["type"] & 1:
        if m and m[-1][0] + m[-1][1] == e["offset"]:
            m[-1] = (m[-1][0], m[-1][1] + e["length"])
        else:
            m.append((e["offset"], e["length"]))
if m != ext:
    sys.exit(f"{name}: nbdinfo dirty extents {m[:5]}... differ from fssnap diff {ext[:5]}...")
inside = bytearray(size // 512)
for off, l in ext:
    assert off % 512 == 0 and l % 512 == 0, (off, l)
    inside[off // 512:(off + l) // 512] = b"\1" * (l // 512)
missed = [s for s in range(size // 512)
          if not inside[s] and A[s * 512:(s + 1) * 512] != B[s * 512:(s + 1) * 512]]
if missed:
    sys.exit(f"{name}: {len(missed)} differing sectors not reported, first at {missed[0] * 512}")
if (cov > 0) != (rc == "1"):
    sys.exit(f"{name}: exit {rc} with {cov} bytes reported")
if cov >= size // 10:
    sys.exit(f"{name}: {cov} bytes reported, over 10% of {size}")
differ = sum(1 for s in range(size // 512) if A[s * 512:(s + 1) * 512] != B[s * 512:(s + 1) * 512])
print(f"{name}: {len(ext)} extents, {cov} bytes ({100 * cov / size:.2f}%), {differ * 512} bytes differ")
EOF
}

check_all() {
  local a b
  for a in "$@"; do
    for b in "$@"; do [ "$a" -lt "$b" ] && check "$a" "$b"; done
    check "$a" volume
  done
}

per=$((size / 20 / 5))                # 5% of the volume after snapshot 0
writes $((per * 2))
for n in 0 1 2 3 4; do
  [ "$(basename "$(fssnap create)")" = $n ] || fail "create $n"
  writes $per
done
for n in 0 1 2 3 4 volume; do image "$([ $n = volume ] && echo volume || echo snap/$n)"; done
check_all 0 1 2 3 4 >"$TESTDIR/report"
grep -q "^0 volume: .* bytes (" "$TESTDIR/report" || fail "no report for 0 volume"

# The same snapshot against itself, and unknown ones.
expect_exit 0 "" fssnap diff 3 3
[ -z "$LAST_STDOUT" ] || fail "diff 3 3 printed $LAST_STDOUT"
expect_exit 3 "no snapshot 9" fssnap diff 1 9
expect_exit 6 "not a snapshot number" fssnap diff 1 x
expect_exit 6 "diff needs two snapshot numbers" fssnap diff 1
fssnap diff 0 volume --json | json_get 'j["bytes"] == sum(e["length"] for e in j["extents"]) and j["a"] == 0 and j["b"] == "volume"' \
  | grep -qx True || fail "diff --json: $(fssnap diff 0 volume --json | head -5)"

# A middle snapshot deleted: its changes go to the next one.
fssnap delete 2 || fail "delete 2"
check_all 0 1 3 4 >/dev/null
nbdinfo --list --content "nbd+unix://?socket=$NBD_SOCK" | grep -q "qemu:dirty-bitmap:snap/3" \
  || fail "nbdinfo --list does not show the dirty bitmaps"
nbdinfo --map "$(nbd_uri snap/4)" | grep -q "data" || fail "base:allocation map of snap/4"

# A clean restart keeps the maps exact.
stop_fssnapd
start_fssnapd "$img" --no-fuse
check_all 0 1 3 4 >/dev/null
writes $per
image volume
for n in 0 1 3 4; do check $n volume; done >/dev/null
stop_fssnapd
echo "cbt chain: every pair exact and under 10%, also after a delete and a restart"
sed 's/^/  /' "$TESTDIR/report"
