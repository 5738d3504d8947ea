#!/usr/bin/env bash
# fio's nbd engine: several jobs, several requests in flight each, random
# verified writes (crc32c) on the volume while a snapshot exists, so every
# first write to a chunk copies it aside; then the snapshot is checked to
# still hold the data written before it.
source "$(dirname "$0")/functions.sh"
requires fio qemu-io
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "skipped: fio lacks the nbd engine"; exit 77; }
[ -x "$FSSNAP" ] || fail "$FSSNAP not built"

img=$TESTDIR/img
truncate -s 64M "$img"
start_fssnapd "$img"
qemu-io -f raw -c 'write -P 0x5a 0 64M' "$(nbd_uri volume)" >/dev/null \
  || fail "fill"
fssnap create >/dev/null || fail "fssnap create"

for job in 0 1 2; do
  args+=(--name="job$job" --offset=$((job * 16))M --size=16M)
done
fio --ioengine=nbd --uri="$(nbd_uri volume)" --rw=randwrite --bsrange=4k-64k \
    --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
    --numjobs=1 --group_reporting "${args[@]}" >"$TESTDIR/fio.log" 2>&1 \
  || { cat "$TESTDIR/fio.log"; fail "fio"; }
grep -q 'err= 0' "$TESTDIR/fio.log" || { cat "$TESTDIR/fio.log"; fail "fio errors"; }

qemu-io -f raw -r -c 'read -P 0x5a 0 64M' "$(nbd_uri snap/0)" \
  | grep -q 'read 67108864/67108864' || fail "snapshot changed under fio"
stop_fssnapd
echo PASS
