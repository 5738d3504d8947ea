#!/usr/bin/env bash
# NBD interop with real clients: qemu-io writes patterns on the volume,
# a snapshot keeps the old ones; nbdinfo lists and maps the exports;
# nbdcopy and qemu-img convert copy them out; qemu-img compare checks the
# copies; writes to a snapshot are refused.
source "$(dirname "$0")/functions.sh"
requires qemu-io qemu-img nbdinfo nbdcopy
[ -x "$FSSNAP" ] || fail "$FSSNAP not built"

img=$TESTDIR/img
truncate -s 64M "$img"
start_fssnapd "$img"
vol=$(nbd_uri volume)
snap=$(nbd_uri snap/0)

qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0x11 40M 512k' "$vol" \
  || fail "qemu-io write on the volume"
fssnap create >/dev/null || fail "fssnap create"
qemu-io -f raw -c 'write -P 0xcd 0 1M' -c 'write -z 40M 512k' "$vol" \
  || fail "qemu-io overwrite"

# Listing: both exports, the snapshot read-only.
list=$(nbdinfo --list "$(nbd_uri '')") || fail "nbdinfo --list"
echo "$list"
grep -q 'export="volume"' <<<"$list" || fail "volume not listed"
grep -q 'export="snap/0"' <<<"$list" || fail "snap/0 not listed"
nbdinfo --json "$snap" | grep -q '"is_read_only": true' \
  || fail "snap/0 is not read-only"
nbdinfo --can write "$vol" || fail "volume not writable"
nbdinfo --size "$vol" | grep -qx 67108864 || fail "volume size"

# Block status: a full-candidate snapshot maps as data end to end.
map=$(nbdinfo --map "$snap") || fail "nbdinfo --map"
echo "$map"
[ "$(awk '{ s += $2 } END { print s }' <<<"$map")" = 67108864 ] \
  || fail "map does not cover the export"
nbdinfo --map --totals "$vol" | grep -q '100.0.*data' || fail "volume map"

# The snapshot still reads the old patterns, the volume the new ones.
qemu-io -f raw -r -c 'read -P 0xab 0 1M' -c 'read -P 0x11 40M 512k' "$snap" \
  | grep -q 'read 524288/524288' || fail "snapshot lost its data"
qemu-io -f raw -c 'read -P 0xcd 0 1M' -c 'read -P 0 40M 512k' "$vol" \
  | grep -q 'read 524288/524288' || fail "volume lost its writes"
qemu-io -f raw -r -c 'read -P 0xab 0 1M' "$snap" 2>&1 | grep -qi 'pattern verification failed' \
  && fail "pattern check does not work"

# Copies out, compared with the export.
nbdcopy "$snap" "$TESTDIR/snap.raw" || fail "nbdcopy"
qemu-img compare -f raw -F raw "$TESTDIR/snap.raw" "$snap" \
  || fail "nbdcopy copy differs from the snapshot"
qemu-img info -f raw "$snap" | grep -q 'virtual size: 64 MiB' \
  || fail "qemu-img info"
qemu-img convert -f raw -O qcow2 "$vol" "$TESTDIR/vol.qcow2" \
  || fail "qemu-img convert"
qemu-img compare -f qcow2 -F raw "$TESTDIR/vol.qcow2" "$vol" \
  || fail "converted volume differs"
qemu-img compare -f raw -F raw "$snap" "$vol" >/dev/null \
  && fail "snapshot and volume should differ"

# Writing to the snapshot is refused, and nothing changes.
qemu-io -f raw -c 'write -P 0xee 0 4k' "$snap" 2>&1 \
  | grep -qi 'permission\|read-only\|not permitted' \
  || fail "write to a snapshot was not refused"
qemu-io -f raw -r -c 'read -P 0xab 0 4k' "$snap" | grep -q 'read 4096/4096' \
  || fail "snapshot changed"

stop_fssnapd
echo PASS
