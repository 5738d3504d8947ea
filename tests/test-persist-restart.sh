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
echo "restart: snapshots 0 and 2 back with the same contents and counters"
