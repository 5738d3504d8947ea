#!/usr/bin/env bash
# The two allocation maps of ext4 agree: a snapshot taken with --mount
# (the frozen file system's GETFSMAP map) must cover every chunk that a
# snapshot of the same file system, unmounted, takes from libext2fs.  The
# data of each snapshot is read from its NBD block status (non-candidate
# chunks are holes); the GETFSMAP one must not be every chunk either.  The
# map of a mount point that is not on the volume is never used.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup nbdinfo
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

img=$TESTDIR/disk.img
serve_ext4 "$img" 256M
for ((i = 0; i < 20; i++)); do
  mkdir -p "$MNT/d$i"
  head -c $((i * 53 * 1024 + 7)) /dev/urandom >"$MNT/d$i/f"
done
head -c 12M /dev/urandom >"$MNT/big"
rm "$MNT/d3/f" "$MNT/d5/f"
sync

a=$(basename "$(fssnap create -o transient --mount "$MNT")") || fail "create --mount"
grep -q "$MNT: ext4, candidates from its GETFSMAP map" "$FSSNAPD_LOG" ||
  { cat "$FSSNAPD_LOG"; fail "the GETFSMAP map was not used"; }

# A mount point that is not on this volume: its map is not used (and the
# volume, mounted and not frozen, gets every chunk).
make_image "$TESTDIR/other.img" 32M
mkfs.ext4 -q -F "$TESTDIR/other.img"
mkdir "$TESTDIR/other"
mount -o loop "$TESTDIR/other.img" "$TESTDIR/other" || fail "mount other"
o=$(basename "$(fssnap create -o transient --mount "$TESTDIR/other")") || fail "create --mount other"
grep -q "$TESTDIR/other: allocation map not used (the file system on $TESTDIR/other (device [0-9:]*) is not on this volume's device files)" \
  "$FSSNAPD_LOG" || { cat "$FSSNAPD_LOG"; fail "a foreign mount point's map was used"; }
[ "$(fssnap info "$o" -o candidate_chunks)" = 4096 ] || fail "not every chunk a candidate"
fssnap delete "$o" || fail "delete $o"
umount "$TESTDIR/other"
echo "foreign mount point: map not used"

umount "$MNT"
b=$(basename "$(fssnap create -o transient)") || fail "create"

# Data extents of each as "start end" lines, then every B range inside A.
data() { nbdinfo --map --json "$(nbd_uri "snap/$1")" | json_get \
  '"\n".join("%d %d" % (e["offset"], e["offset"] + e["length"]) for e in j if not e["type"] & 1)'; }
data "$a" >"$TESTDIR/a"
data "$b" >"$TESTDIR/b"
[ -s "$TESTDIR/b" ] || fail "no data in the libext2fs snapshot"
/usr/bin/python3 - "$TESTDIR/a" "$TESTDIR/b" <<'EOF' || fail "the GETFSMAP candidates miss libext2fs ones"
import sys
def ranges(p):
    out = []
    for s, e in sorted(tuple(map(int, l.split())) for l in open(p) if l.strip()):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
a, b = ranges(sys.argv[1]), ranges(sys.argv[2])
for s, e in b:
    if not any(x <= s and e <= y for x, y in a):
        sys.exit("libext2fs candidate bytes %d-%d are not GETFSMAP candidates" % (s, e))
EOF
ca=$(fssnap info "$a" -o candidate_chunks)
cb=$(fssnap info "$b" -o candidate_chunks)
chunks=$(fssnap info "$a" --json | json_get 'j["chunks"]')
echo "candidates: GETFSMAP $ca, libext2fs $cb, of $chunks chunks"
[ "$ca" -lt "$chunks" ] || fail "GETFSMAP marked every chunk"
fssnap detach volume || fail "detach volume"
stop_fssnapd
