#!/usr/bin/env bash
# fssnap create/delete/list/info/stats, human and --json forms: the device
# path printed by create, the fssnap -i style fields (--mount, which
# freezes, is tested with the file system), -o keys and their
# illumos aliases, options reaching the snapshot, a reused number with a
# new UUID.
source "$(dirname "$0")/functions.sh"
requires_root
requires nbdsh

img=$TESTDIR/disk.img
make_image "$img" 32M
start_fssnapd "$img" --no-fuse

[ "$(fssnap list --json)" = "[ ]" ] || [ "$(fssnap list --json | json_get 'len(j)')" = 0 ] \
  || fail "a new daemon has snapshots"
# Without FUSE the only device is the NBD export: create prints its name.
dev0=$(fssnap create -o maxsize=64m,chunksize=16k -o unlink) || fail "create 0"
[ "$dev0" = "snap/0" ] || fail "create printed $dev0"
mkdir "$TESTDIR/store"
dev1=$(fssnap create -o "backing-store=$TESTDIR/store,maxfilesize=1m") || fail "create 1"
[ "$dev1" = "snap/1" ] || fail "create printed $dev1"
fssnap list --json | json_get 'j[1]["devices"]' | grep -qx "{'nbd': '$(nbd_uri snap/1)'}" \
  || fail "--no-fuse still names a FUSE device: $(fssnap list --json)"
expect_exit 4 "has no block device or device file (fssnapd runs with --no-fuse): read it over NBD at $(nbd_uri snap/1)" \
  fssnap attach 1

# list: a header and one line per snapshot.
fssnap list | tee "$TESTDIR/list"
[ "$(wc -l <"$TESTDIR/list")" = 3 ] || fail "list: $(cat "$TESTDIR/list")"
head -1 "$TESTDIR/list" | grep -q "^NUM *STATE *CREATED *UUID" || fail "list header"
grep -q "^0 .*idle" "$TESTDIR/list" || fail "list: snapshot 0 not idle"
fssnap list --json | json_get '[s["number"] for s in j]' | grep -qx "\[0, 1\]" || fail "list --json numbers"

# info N: the fssnap -i fields.
fssnap info 0 | tee "$TESTDIR/info0"
for field in "Snapshot number *: 0" "Block Device *: $dev0" "Mount point *: -" \
             "Device state *: idle" "Backing store path *: $STATE_DIR/" "Backing store size *: 0 B" \
             "Maximum backing store size *: 64 MiB" "Snapshot create time *: ... ... .. ..:..:.. 20.." \
             "Copy-on-write granularity *: 16 KiB" "UUID *: [0-9a-f-]\{36\}" \
             "Candidate chunks *: 2048" "Preserved chunks *: 0"; do
  grep -q "^$field" "$TESTDIR/info0" || fail "info 0 lacks \"$field\""
done
fssnap info 1 | grep -q "^Maximum backing store size *: Unlimited" || fail "info 1: maxsize"
fssnap info 1 | grep -q "^Backing store path *: $TESTDIR/store/" || fail "info 1: backing store"
[ "$(fssnap info | grep -c '^Snapshot number')" = 2 ] || fail "info without N shows every snapshot"

# info -o: raw values in the order asked, illumos aliases accepted.
[ "$(fssnap info 0 -o snapnumber,chunksize,maxsize,state | tr '\n' ' ')" = "0 16384 67108864 idle " ] \
  || fail "info -o: $(fssnap info 0 -o snapnumber,chunksize,maxsize,state)"
[ "$(fssnap info 1 -o blockdevname)" = "$dev1" ] || fail "info -o blockdevname"
fssnap info 0 -o uuid,createtime --json | json_get 'sorted(j)' | grep -qx "\['create_time', 'uuid'\]" \
  || fail "info -o --json keys"

# info --json: one object for N, an array without.
fssnap info 0 --json | json_get 'j["unlinked"], j["chunksize"], j["maxsize"], j["device"]' \
  | grep -qx "(True, 16384, 67108864, '$dev0')" || fail "info 0 --json: $(fssnap info 0 --json)"
# 2048 chunks of 16 KiB, files of 1 MiB: 63 chunks a file after its header
# and index block, 33 files and one spare.
fssnap info 1 --json | json_get 'j["backing_files"], j["mountpoint"]' \
  | grep -qx "(34, '')" || fail "info 1 --json: $(fssnap info 1 --json)"
fssnap info --json | json_get 'len(j)' | grep -qx 2 || fail "info --json array"

# Writes are preserved and counted.
nbdsh -u "$(nbd_uri volume)" -c 'h.pwrite(b"\x01" * (1 << 20), 0); h.flush()'
fssnap info 0 --json | json_get 'j["preserved_chunks"]' | grep -qx 64 || fail "preserved chunks after 1 MiB"
fssnap stats | tee "$TESTDIR/stats"
grep -q "^Volume size *: 32 MiB" "$TESTDIR/stats" || fail "stats: size"
grep -q "^Snapshots *: 2" "$TESTDIR/stats" || fail "stats: snapshots"
fssnap stats --json | json_get 'j["chunks_copied"] >= 64 and j["highest_number"] == 1' | grep -qx True \
  || fail "stats --json: $(fssnap stats --json)"

# delete, then the number is reused with a new UUID.
uuid0=$(fssnap info 0 -o uuid)
fssnap delete 0 || fail "delete 0"
fssnap list --json | json_get '[s["number"] for s in j]' | grep -qx "\[1\]" || fail "list after delete"
[ "$(fssnap create)" = "$dev0" ] || fail "number 0 not reused"
[ "$(fssnap info 0 -o uuid)" != "$uuid0" ] || fail "a reused number kept its UUID"
fssnap delete 0 && fssnap delete 1 || fail "delete all"
[ "$(fssnap list | wc -l)" = 1 ] || fail "list after deleting all"
stop_fssnapd
echo "cli basic ok"
