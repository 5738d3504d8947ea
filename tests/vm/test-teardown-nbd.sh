#!/usr/bin/env bash
# Kernel NBD devices on fssnapd, torn down in every order: unmount, then
# disconnect, then stop; stop (SIGTERM) while connected, then disconnect;
# kill -9 while mounted, then unmount and disconnect; delete the snapshot
# while its device is connected.  Each leaves no stuck device (nbd-client -d
# works, the size is back to 0), no process in D state and no I/O that
# hangs; reads of a deleted snapshot fail or return the snapshot, never
# other data.
. "$(dirname "$0")/guest.sh"
requires nbd-client mkfs.ext4

guest_modprobe nbd
guest_wait_dev /dev/nbd1
mkdir -p "$TESTDIR/mnt"
make_image "$TESTDIR/vol.img" 32M

connect() {  # DEV EXPORT [nbd-client options]
  timeout 30 nbd-client -unix "$NBD_SOCK" "$1" -N "$2" -b 4096 "${@:3}" >/dev/null ||
    fail "nbd-client $2 on $1"
  cleanup_fn "nbd-client -d $1 >/dev/null 2>&1"
}
disconnect() { timeout 30 nbd-client -d "$1" >/dev/null || fail "nbd-client -d $1 failed or hung"; }
settled() {  # DEV...: no device left connected, nothing hung
  local dev hung
  for dev in "$@"; do guest_nbd_wait_size "$dev" 0; done
  hung=$(ps -eo stat=,pid=,args= | awk '$1 ~ /^D/')
  [ -z "$hung" ] || fail "processes in D state: $hung"
  ! pgrep -x nbd-client >/dev/null || fail "nbd-client still running: $(pgrep -a -x nbd-client)"
}
digest() { timeout 30 dd if="$1" bs=1M count=4 iflag=direct status=none | sha256sum; }

echo "== unmount, disconnect, stop"
start_fssnapd "$TESTDIR/vol.img" --no-fuse
connect /dev/nbd0 volume
mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4"
mount /dev/nbd0 "$TESTDIR/mnt" || fail "mount"
echo data >"$TESTDIR/mnt/f"
umount "$TESTDIR/mnt" || fail "umount"
disconnect /dev/nbd0
stop_fssnapd
settled /dev/nbd0

echo "== stop while connected, then disconnect"
start_fssnapd "$TESTDIR/vol.img" --no-fuse
connect /dev/nbd0 volume
dd if=/dev/urandom of=/dev/nbd0 bs=1M seek=16 count=2 oflag=direct status=none || fail "write /dev/nbd0"
stop_fssnapd
rc=0; timeout 30 dd if=/dev/nbd0 of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null || rc=$?
[ "$rc" -ne 124 ] || fail "a read of /dev/nbd0 hangs once fssnapd stopped"
disconnect /dev/nbd0
settled /dev/nbd0

echo "== kill -9 while mounted, then unmount and disconnect"
start_fssnapd "$TESTDIR/vol.img" --no-fuse
connect /dev/nbd0 volume
mount /dev/nbd0 "$TESTDIR/mnt" || fail "mount"
echo more >"$TESTDIR/mnt/g"
kill -9 "$FSSNAPD_PID"
wait "$FSSNAPD_PID" 2>/dev/null
FSSNAPD_PID=
timeout 60 umount "$TESTDIR/mnt" 2>/dev/null
[ $? -ne 124 ] || fail "umount hangs after kill -9 of fssnapd"
mountpoint -q "$TESTDIR/mnt" && fail "still mounted after umount"
disconnect /dev/nbd0
settled /dev/nbd0

echo "== delete the snapshot while its device is connected"
start_fssnapd "$TESTDIR/vol.img" --no-fuse
connect /dev/nbd0 volume
fssnap create >/dev/null || fail "fssnap create"
connect /dev/nbd1 snap/0 -readonly
before=$(digest /dev/nbd1) || fail "read /dev/nbd1"
# The volume moves on: what a stale read could wrongly return.
dd if=/dev/urandom of=/dev/nbd0 bs=1M count=4 oflag=direct status=none || fail "write /dev/nbd0"
deleted=0; out=$(fssnap delete 0 2>&1) || deleted=$?
echo "fssnap delete 0: exit $deleted: $out"
if [ "$deleted" -eq 0 ]; then
  rc=0
  timeout 30 dd if=/dev/nbd1 of="$TESTDIR/after" bs=1M count=4 iflag=direct status=none 2>/dev/null || rc=$?
  [ "$rc" -ne 124 ] || fail "a read of a deleted snapshot hangs"
  [ "$rc" -ne 0 ] || [ "$(sha256sum <"$TESTDIR/after")" = "$before" ] ||
    fail "a deleted snapshot reads data that is not the snapshot's"
  # While a client holds the export it may stay listed, as "deleting".
  fssnap list | grep -q "^0 " && ! fssnap list | grep -q "^0  *deleting " &&
    fail "snapshot 0 listed as not deleted: $(fssnap list)"
else
  [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "delete refused with more than one line: $out"
  [ "$(digest /dev/nbd1)" = "$before" ] || fail "the snapshot changed"
fi
disconnect /dev/nbd1
if [ "$deleted" -eq 0 ]; then
  for ((i = 0; i < 100; i++)); do fssnap list | grep -q "^0 " || break; sleep 0.1; done
  fssnap list | grep -q "^0 " && fail "snapshot 0 still there once its device is gone: $(fssnap list)"
fi
disconnect /dev/nbd0
stop_fssnapd
settled /dev/nbd0 /dev/nbd1
echo ok
