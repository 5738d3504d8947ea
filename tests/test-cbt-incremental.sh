#!/usr/bin/env bash
# examples/incremental-backup.sh: a full backup from snapshot 0, brought up
# to date through snapshots 1..4 with only the changed extents, equals a
# full copy of snapshot 4 (qemu-img compare), each step after the first
# transferring far less than a full copy; the fallback to a full copy when
# the recorded snapshot was deleted and its number reused, and when
# fssnap diff cannot trust the maps (a lost transient snapshot).
. "$(dirname "$0")/functions.sh"
requires nbdcopy qemu-img qemu-io
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }

size=$((64 << 20))
img=$TESTDIR/vol.img
backup=$TESTDIR/backup.img
make_image "$img" $size
start_fssnapd "$img" --no-fuse --chunksize 64k
export FSSNAP
inc() { "$TOP/examples/incremental-backup.sh" --run-dir "$RUN_DIR" "$@"; }
qio() { qemu-io -f raw -c "$1" "$(nbd_uri volume)" >/dev/null || fail "qemu-io $1"; }
# bytes OUTPUT KIND: the byte count of the last line, which must be KIND.
bytes() {
  local last
  last=$(tail -1 <<<"$1")
  [[ $last =~ ^transferred\ ([0-9]+)\ bytes\ \(($2)\)$ ]] || fail "expected a $2 copy, got: $last"
  echo "${BASH_REMATCH[1]}"
}
same_as() {
  nbdcopy "$(nbd_uri "snap/$1")" "$TESTDIR/full.img" || fail "nbdcopy snap/$1"
  qemu-img compare -q -f raw -F raw "$backup" "$TESTDIR/full.img" \
    || fail "the backup differs from snapshot $1"
}

"$TOP/examples/incremental-backup.sh" --help | grep -q "^Usage: incremental-backup.sh" || fail "--help"
qio "write -P 0x11 0 48M"
fssnap create >/dev/null || fail "create 0"
out=$(inc 0 "$backup" 2>"$TESTDIR/err") || fail "full backup: $(cat "$TESTDIR/err")"
[ "$(bytes "$out" full)" -eq $size ] || fail "full copy: $out"
grep -q "no backup" "$TESTDIR/err" || fail "the first run did not say why it copies everything"
same_as 0

total=0
for n in 1 2 3 4; do
  for i in 1 2 3; do
    qio "write -P $((n * 16 + i)) $((RANDOM % 60000))k 100k"
  done
  qio "write -z $((n * 5))M 64k"
  [ "$(basename "$(fssnap create)")" = $n ] || fail "create $n"
  out=$(inc $n "$backup" 2>"$TESTDIR/err") || fail "step $n: $(cat "$TESTDIR/err")"
  b=$(bytes "$out" incremental)
  [ "$b" -gt 0 ] && [ "$b" -lt $((size / 50)) ] || fail "step $n transferred $b bytes"
  total=$((total + b))
  echo "step $((n - 1)) -> $n: $b bytes"
done
same_as 4
[ "$total" -lt $((size / 10)) ] || fail "four incremental steps transferred $total bytes"
echo "incremental 0 -> 4: $total bytes in all, against $((4 * size)) for four full copies"

# Nothing changed: nothing transferred.
fssnap create >/dev/null || fail "create 5"
out=$(inc 5 "$backup" 2>/dev/null) || fail "step 4 -> 5"
[ "$(bytes "$out" incremental)" -eq 0 ] || fail "an unchanged snapshot transferred data: $out"

# The recorded snapshot (5) deleted and its number reused: a full copy.
fssnap delete 5 || fail "delete 5"
qio "write -P 0x77 1M 64k"
[ "$(basename "$(fssnap create)")" = 5 ] || fail "number 5 not reused"
qio "write -P 0x78 2M 64k"
fssnap create >/dev/null || fail "create 6"
out=$(inc 6 "$backup" 2>"$TESTDIR/err") || fail "after reuse: $(cat "$TESTDIR/err")"
[ "$(bytes "$out" full)" -eq $size ] || fail "after reuse: $out"
grep -q "was deleted; number 5 now belongs to another snapshot" "$TESTDIR/err" \
  || fail "no reason for the full copy: $(cat "$TESTDIR/err")"
same_as 6

# A transient snapshot lost at a restart between the recorded one and the
# next: fssnap diff exits 5, the script copies everything.
fssnap create -o transient >/dev/null || fail "create transient"
qio "write -P 0x79 3M 64k"
stop_fssnapd
start_fssnapd "$img" --no-fuse
n=$(basename "$(fssnap create)")
out=$(inc "$n" "$backup" 2>"$TESTDIR/err") || fail "after the transient: $(cat "$TESTDIR/err")"
[ "$(bytes "$out" full)" -eq $size ] || fail "after the transient: $out"
grep -q "cannot be trusted" "$TESTDIR/err" || fail "no reason: $(cat "$TESTDIR/err")"
same_as "$n"
qio "write -P 0x7a 4M 64k"
m=$(basename "$(fssnap create)")
out=$(inc "$m" "$backup" 2>/dev/null) || fail "incremental after the full copy"
[ "$(bytes "$out" incremental)" -eq 65536 ] || fail "one chunk changed: $out"
same_as "$m"
stop_fssnapd
echo "cbt incremental: backups equal the snapshots; fallbacks to a full copy said why"
