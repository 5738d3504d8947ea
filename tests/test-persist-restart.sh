#!/usr/bin/env bash
# Snapshots survive a clean restart of fssnapd: same numbers, same UUIDs,
# same contents (checksums taken at creation), same counters; a transient
# snapshot is gone; copy-on-write goes on afterwards.
. "$(dirname "$0")/functions.sh"
requires qemu-io nbdcopy sha256sum

img=$TESTDIR/vol.img
make_image "$img" 32M
start_fssnapd "$img" --no-fuse --chunksize 64k

qio() { qemu-io -f raw -c "$1" "$(nbd_uri volume)" >/dev/null || fail "qemu-io $1"; }
sum_of() { nbdcopy "$(nbd_uri "snap/$1")" - | sha256sum | cut -d' ' -f1; }
field() { fssnap info "$1" --json | json_get "j['$2']"; }

qio "write -P 0x11 0 32M"
fssnap create >/dev/null || fail "create 0"
qio "write -P 0x22 0 8M"
fssnap create -o transient >/dev/null || fail "create 1 (transient)"
qio "write -P 0x33 4M 8M"
fssnap create >/dev/null || fail "create 2"
qio "write -P 0x44 2M 20M"
sum0=$(sum_of 0) sum2=$(sum_of 2)
declare -A before
for n in 0 2; do
  for k in uuid preserved_chunks owned_chunks candidate_chunks create_time backing_store; do
    before[$n.$k]=$(field $n $k)
  done
done
[ "${before[0.preserved_chunks]}" -gt 0 ] || fail "nothing was copied for snapshot 0"
vol=$(nbdcopy "$(nbd_uri volume)" - | sha256sum | cut -d' ' -f1)

stop_fssnapd
start_fssnapd "$img" --no-fuse
grep -q "reopened 3 snapshot file(s)" "$FSSNAPD_LOG" || fail "no reopen message in the log"
[ "$(fssnap list --json | /usr/bin/python3 -c 'import json,sys; print(" ".join(str(s["number"]) for s in json.load(sys.stdin)))')" = "0 2" ] \
  || fail "expected snapshots 0 and 2 after restart, got: $(fssnap list)"
[ "$(sum_of 0)" = "$sum0" ] || fail "snapshot 0 changed across the restart"
[ "$(sum_of 2)" = "$sum2" ] || fail "snapshot 2 changed across the restart"
[ "$(nbdcopy "$(nbd_uri volume)" - | sha256sum | cut -d' ' -f1)" = "$vol" ] || fail "volume changed"
for n in 0 2; do
  for k in uuid preserved_chunks owned_chunks candidate_chunks create_time backing_store; do
    [ "$(field $n $k)" = "${before[$n.$k]}" ] || fail "snapshot $n: $k was ${before[$n.$k]}, now $(field $n $k)"
  done
  [ "$(field $n state)" = idle ] || fail "snapshot $n is $(field $n state)"
done

# Copy-on-write after the restart keeps both exact.
qio "write -P 0x55 0 32M"
[ "$(sum_of 0)" = "$sum0" ] && [ "$(sum_of 2)" = "$sum2" ] || fail "a snapshot changed after writes following the restart"
# Number 1 is free again; a new snapshot takes it.
[ "$(basename "$(fssnap create)")" = 1 ] || fail "number 1 was not reused"
stop_fssnapd

# Damage snapshot 0's metadata (a byte of its owner map): after a restart it
# is listed as disabled with the reason; 2 (newer: it never reads 0's
# copies) and the volume keep working.
meta=$(ls "$STATE_DIR"/vol.img.snap0.*.meta)
/usr/bin/python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(8192 + 512 + 100); b = f.read(1); f.seek(8192 + 512 + 100)
    f.write(bytes([b[0] ^ 0x10]))' "$meta"
start_fssnapd "$img" --no-fuse
fssnap list > "$TESTDIR/list.txt"
grep -q "^0 *disabled" "$TESTDIR/list.txt" || fail "snapshot 0 not disabled: $(cat "$TESTDIR/list.txt")"
grep -q "reason: metadata block 0 of map O damaged" "$TESTDIR/list.txt" || fail "no reason listed: $(cat "$TESTDIR/list.txt")"
grep -q "snapshot 0 cannot be trusted" "$FSSNAPD_LOG" || fail "not reported in the log"
nbdcopy "$(nbd_uri snap/0)" - >/dev/null 2>&1 && fail "a disabled snapshot was served"
[ "$(sum_of 2)" = "$sum2" ] || fail "snapshot 2 changed after 0 was damaged"
qio "write -P 0x66 0 1M"
fssnap delete 0 || fail "cannot delete the damaged snapshot"
[ ! -e "$meta" ] || fail "the damaged snapshot's metadata was left behind"
stop_fssnapd
echo "restart: snapshots 0 and 2 back with the same contents and counters; damage to 0 disables it alone"
