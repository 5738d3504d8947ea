#!/usr/bin/env bash
# Network backup between two hosts (network namespaces joined by veth,
# tests/lib/netns.sh): the volume host runs fssnapd with TLS (PSK) on its
# veth address and an ext4 on the volume (fssnap attach volume, mounted);
# the backup host pulls a full backup of snap/0 over TLS with nbdcopy,
# then, after more writes and snapshot 1, an incremental one from the
# dirty bitmap qemu:dirty-bitmap:snap/0 (tests/lib/nbd-incremental.py);
# the result equals snap/1 byte for byte.  nbdcopy's throughput over TLS
# and in plaintext (a second daemon run with --tls=off) is printed, not
# judged: figures belong to bench/tls.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/lib/tls.sh"
source "$(dirname "$0")/lib/netns.sh"
requires_root
requires ip nsenter psktool nbdcopy mkfs.ext4 losetup
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
INCR=$(dirname "$0")/lib/nbd-incremental.py

netns_up "$$" || { netns_down; echo "skipped: cannot make network namespaces"; exit 77; }
cleanup_fn netns_down
cleanup_fn "umount -l '$RUN_DIR/dev' 2>/dev/null"
cleanup_fn fs_cleanup
# fssnapd lives on the volume host: its network namespace, this machine's
# files and mounts.
printf '#!/bin/sh\nexec nsenter --net=/run/netns/%s %q "$@"\n' "$NETNS_VOL" "$FSSNAPD" >"$TESTDIR/fssnapd-vol"
chmod +x "$TESTDIR/fssnapd-vol"
FSSNAPD_BIN=$FSSNAPD FSSNAPD=$TESTDIR/fssnapd-vol
bak() { netns_run "$NETNS_BAK" "$@"; }

TLS_USER=backup TLS_PSK=$TESTDIR/keys.psk port=10809
tls_psk "$TLS_PSK" "$TLS_USER"
turi() { echo "nbds://$TLS_USER@$VOL_ADDR:$port/$1?tls-psk-file=$TLS_PSK"; }

img=$TESTDIR/disk.img
make_image "$img" 192M
start_fssnapd "$img" --listen "$VOL_ADDR:$port" --tls-psk="$TLS_PSK"
wait_devfs
vol=$(fssnap attach volume) || fail "attach volume"
mkfs.ext4 -q "$vol"
MNT=$TESTDIR/mnt
mkdir "$MNT"
mount "$vol" "$MNT"
for i in 1 2 3 4 5 6; do head -c $((i * 3))M /dev/urandom >"$MNT/file$i"; done
fssnap create --mount "$MNT" >/dev/null || fail "create snapshot 0"

# Only the veth link leads to the volume host.
nbdinfo --size "$(turi snap/0)" >/dev/null 2>&1 && fail "the backup host's address is reachable from outside its namespace"

# Full backup of snap/0 from the backup host.
t0=$(date +%s.%N)
bak nbdcopy "$(turi snap/0)" "$TESTDIR/backup.img" || fail "full backup over TLS"
t1=$(date +%s.%N)
cmp "$TESTDIR/backup.img" "$RUN_DIR/dev/snap/0" || fail "the full backup differs from snap/0"

# More writes, snapshot 1, incremental backup from the dirty bitmap.
rm "$MNT/file2"
dd if=/dev/urandom of="$MNT/file5" bs=64k count=40 seek=7 conv=notrunc status=none
head -c 5M /dev/urandom >"$MNT/new"
fssnap create --mount "$MNT" >/dev/null || fail "create snapshot 1"
out=$(bak /usr/bin/python3 "$INCR" "$(turi snap/1)" 0 "$TESTDIR/backup.img") || fail "incremental backup over TLS"
echo "incremental: $out"
cmp "$TESTDIR/backup.img" "$RUN_DIR/dev/snap/1" || fail "the incremental backup differs from snap/1"
copied=${out#copied }
copied=${copied%% *}
[ "$copied" -lt $((64 << 20)) ] || fail "the incremental backup copied $copied bytes: not incremental"

# Throughput: every byte of snap/1 (no extent skipping), TLS then plaintext.
rate() {   # URI: MiB/s of nbdcopy --no-extents URI null: from the backup host
  local a b
  a=$(date +%s.%N)
  bak nbdcopy --no-extents "$1" null: || fail "nbdcopy $1"
  b=$(date +%s.%N)
  /usr/bin/python3 -c 'import sys; print("%.0f" % (192 / (float(sys.argv[2]) - float(sys.argv[1]))))' "$a" "$b"
}
tls_rate=$(rate "$(turi snap/1)")
umount "$MNT"
fssnap detach volume || fail "detach volume"
stop_fssnapd
start_fssnapd "$img" --tls=off --listen "$VOL_ADDR:$port"
plain_rate=$(rate "nbd://$VOL_ADDR:$port/snap/1")
stop_fssnapd
echo "nbdcopy over the veth link, 192 MiB of snap/1: TLS (PSK) $tls_rate MiB/s, plaintext $plain_rate MiB/s (full backup with extents: $(/usr/bin/python3 -c "print('%.2f' % ($t1 - $t0))") s)"
FSSNAPD=$FSSNAPD_BIN
echo PASS
