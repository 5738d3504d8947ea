#!/usr/bin/env bash
# kill -9 of fssnapd in the middle of writes to a clone, three times: an
# NBD client writes versioned blocks (some partial, so that chunks are
# copied up from the base) to clone/0 with a flush now and then (most of
# them to chunks not written before: new journal records), noting
# each acknowledged write; fssnapd is killed under it and restarted.
# Every block of the clone must then read as its last acknowledged
# version (the one in flight: either), every block never written as the
# base snapshot, and the snapshot must not have changed.
. "$(dirname "$0")/functions.sh"
requires nbdcopy

img=$TESTDIR/vol.img
make_image "$img" 64M
head -c 64M /dev/urandom >"$img"
start_fssnapd --no-fuse "$img"
fssnap create >/dev/null || fail "create"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/base" || fail "nbdcopy snap/0"
fssnap clone 0 >/dev/null || fail "clone 0"

cat >"$TESTDIR/load.py" <<'PY'
# load.py URI LOG SEED: write until the server goes; LOG gets "w B V OFF
# LEN" before each write and "a" after its acknowledgement.
import hashlib, nbd, random, sys
uri, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
with open(log, "a", buffering=1) as f:
    for n in range(1000000):
        b = rng.randrange(size // 4096)
        off = rng.randrange(4096) if rng.random() < 0.3 else 0
        ln = rng.randrange(1, 4096 - off + 1)
        v = hashlib.sha256(b"%d:%d:%d" % (seed, b, n)).digest()
        data = (v * (ln // 32 + 1))[:ln]
        f.write("w %d %d %d %d\n" % (b, n, off, ln))
        try:
            h.pwrite(data, b * 4096 + off)
            if n % 400 == 0:
                h.flush()
        except nbd.Error:
            sys.exit(0)
        f.write("a\n")
PY

cat >"$TESTDIR/check.py" <<'PY'
# check.py URI BASE LOG...: every block as the acknowledged writes left it
# on top of BASE; a write not acknowledged may or may not be there.
import hashlib, nbd, sys
uri, base = sys.argv[1], open(sys.argv[2], "rb").read()
img = bytearray(base)
maybe = []
for (seed, path) in enumerate(sys.argv[3:], 1):
    pending = None
    for line in open(path):
        p = line.split()
        if p[0] == "w":
            pending = tuple(int(x) for x in p[1:])
        elif pending:
            b, n, off, ln = pending
            v = hashlib.sha256(b"%d:%d:%d" % (seed, b, n)).digest()
            img[b * 4096 + off:b * 4096 + off + ln] = (v * (ln // 32 + 1))[:ln]
            pending = None
    if pending:
        maybe.append(pending[0])
h = nbd.NBD()
h.connect_uri(uri)
got = b"".join(h.pread(1 << 20, o) for o in range(0, len(img), 1 << 20))
for blk in range(len(img) // 4096):
    a, g = img[blk * 4096:(blk + 1) * 4096], got[blk * 4096:(blk + 1) * 4096]
    if a != g and blk not in maybe:
        sys.exit("block %d differs from the acknowledged writes" % blk)
print("%d blocks as acknowledged (%d in flight at a kill)" % (len(img) // 4096, len(maybe)))
PY

logs=()
for round in 1 2 3; do
  : >"$TESTDIR/log$round"
  logs+=("$TESTDIR/log$round")
  /usr/bin/python3 "$TESTDIR/load.py" "$(nbd_uri clone/0)" "$TESTDIR/log$round" "$round" &
  load=$!
  sleep 2
  kill -9 "$FSSNAPD_PID"
  wait "$FSSNAPD_PID" 2>/dev/null
  FSSNAPD_PID=
  wait "$load" || fail "the load failed in round $round"
  [ "$(grep -c '^a' "$TESTDIR/log$round")" -gt 10 ] || fail "round $round wrote almost nothing"
  start_fssnapd --no-fuse "$img"
  /usr/bin/python3 "$TESTDIR/check.py" "$(nbd_uri clone/0)" "$TESTDIR/base" "${logs[@]}" \
    || fail "clone/0 after kill -9 $round"
done
nbdcopy "$(nbd_uri snap/0)" - | cmp - "$TESTDIR/base" || fail "snapshot 0 changed under its clone"
echo "clone: 3 kills mid-write, every acknowledged write there"
