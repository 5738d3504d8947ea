#!/usr/bin/env bash
# The kernel NBD client on fssnapd's unix socket, the documented path for
# kernels without ublk: ext4 on /dev/nbd0 (export "volume"), a snapshot
# taken with the file system frozen, attached read-only as /dev/nbd1
# (export "snap/0"), mounted, checked file by file, fsck-clean and
# byte-exact against the same export read by nbdcopy.
. "$(dirname "$0")/guest.sh"
requires nbd-client nbdcopy mkfs.ext4 e2fsck

guest_modprobe nbd
guest_wait_dev /dev/nbd1
disconnect() { nbd-client -d "$1" >/dev/null 2>&1; }

make_image "$TESTDIR/vol.img" 64M
start_fssnapd "$TESTDIR/vol.img" --no-fuse
nbd-client -unix "$NBD_SOCK" /dev/nbd0 -N volume -b 4096 >/dev/null || fail "nbd-client volume"
cleanup_fn "disconnect /dev/nbd0"
[ "$(guest_nbd_size /dev/nbd0)" = $((64 * 2048)) ] || fail "/dev/nbd0 has $(guest_nbd_size /dev/nbd0) sectors"

mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4 on /dev/nbd0"
mkdir -p "$TESTDIR/mnt" "$TESTDIR/snap"
mount /dev/nbd0 "$TESTDIR/mnt" || fail "mount /dev/nbd0"
cleanup_fn "umount '$TESTDIR/mnt' 2>/dev/null"
mkdir -p "$TESTDIR/mnt/tree/a/b"
head -c 4M /dev/urandom >"$TESTDIR/mnt/big"
for i in $(seq 50); do echo "file $i" >"$TESTDIR/mnt/tree/a/b/f$i"; done
cp -a /usr/share/doc/e2fsprogs "$TESTDIR/mnt/tree/doc" 2>/dev/null
(cd "$TESTDIR/mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$TESTDIR/before.sum"

fssnap create --mount "$TESTDIR/mnt" >/dev/null || fail "fssnap create --mount"
# After the snapshot: changes it must not see.
head -c 4M /dev/urandom >"$TESTDIR/mnt/big"
rm -r "$TESTDIR/mnt/tree/a"
echo late >"$TESTDIR/mnt/late"
sync

nbd-client -unix "$NBD_SOCK" /dev/nbd1 -N snap/0 -b 4096 -readonly >/dev/null || fail "nbd-client snap/0"
cleanup_fn "disconnect /dev/nbd1"
[ "$(cat /sys/block/nbd1/ro)" = 1 ] || fail "/dev/nbd1 is not read-only"
mount -o ro,noload /dev/nbd1 "$TESTDIR/snap" || fail "mount the snapshot"
cleanup_fn "umount '$TESTDIR/snap' 2>/dev/null"
(cd "$TESTDIR/snap" && sha256sum --quiet -c "$TESTDIR/before.sum") || fail "the snapshot's files differ"
[ ! -e "$TESTDIR/snap/late" ] || fail "the snapshot sees a later file"
umount "$TESTDIR/snap" || fail "umount the snapshot"
e2fsck -fn /dev/nbd1 >"$TESTDIR/fsck.log" 2>&1 || { cat "$TESTDIR/fsck.log"; fail "e2fsck of the snapshot"; }

nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap.img" || fail "nbdcopy snap/0"
cmp /dev/nbd1 "$TESTDIR/snap.img" || fail "/dev/nbd1 and the export snap/0 differ"

umount "$TESTDIR/mnt" || fail "umount the volume"
nbd-client -d /dev/nbd1 >/dev/null || fail "disconnect /dev/nbd1"
nbd-client -d /dev/nbd0 >/dev/null || fail "disconnect /dev/nbd0"
guest_nbd_wait_size /dev/nbd0 0
guest_nbd_wait_size /dev/nbd1 0
stop_fssnapd
echo ok
