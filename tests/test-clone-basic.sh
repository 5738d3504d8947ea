#!/usr/bin/env bash
# Writable clones: fssnap clone N gives clone/K (NBD export and FUSE file);
# unaligned writes and zeroes through both read back as snapshot + writes
# (a python model), the snapshot stays byte-exact, volume writes do not
# reach the clone; the base snapshot cannot be deleted while the clone
# exists; the clone survives a clean restart and a kill -9 (unflushed
# writes included); trims and punched holes free the overlay's space and
# read as zeros; list and info show it; delete clone/K drops it and
# its files.
. "$(dirname "$0")/functions.sh"
requires nbdcopy
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: python3-libnbd is not installed"; exit 77; }
requires_root

img=$TESTDIR/vol.img
make_image "$img" 8M
start_fssnapd "$img" --chunksize 16k
wait_devfs
model=$TESTDIR/model

# writes URI FILE SEED COUNT [FLUSH]: random unaligned writes and zeroes
# through NBD export URI, applied to the model file FILE as well.
writes() {
  /usr/bin/python3 - "$@" <<'PY' || fail "writes to $1 failed"
import nbd, os, random, sys
uri, path, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
flush = len(sys.argv) > 5
rnd = random.Random(seed)
h = nbd.NBD(); h.connect_uri(uri)
size = h.get_size()
with open(path, "r+b") as m:
    for _ in range(count):
        n = rnd.randrange(1, 40000)
        off = rnd.randrange(0, size - n)
        if rnd.random() < 0.2:
            h.zero(n, off); data = bytes(n)
        else:
            data = os.urandom(n); h.pwrite(data, off)
        m.seek(off); m.write(data)
if flush:
    h.flush()
h.shutdown()
PY
}
checkclone() {
  nbdcopy "$(nbd_uri clone/0)" "$TESTDIR/clone.img" || fail "nbdcopy clone/0"
  cmp "$model" "$TESTDIR/clone.img" || fail "clone/0 differs from snapshot + writes ($1)"
  nbdcopy "$(nbd_uri snap/0)" - | cmp - "$TESTDIR/snap0" || fail "snapshot 0 changed ($1)"
}

/usr/bin/python3 -c "
import nbd, os
h = nbd.NBD(); h.connect_uri('$(nbd_uri volume)')
h.pwrite(os.urandom(8 << 20), 0); h.flush(); h.shutdown()"
fssnap create >/dev/null || fail "create"
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap0" || fail "nbdcopy snap/0"
cp "$TESTDIR/snap0" "$model"

dev=$(fssnap clone 0) || fail "clone 0"
[ "$dev" = "$RUN_DIR/dev/clone/0" ] || fail "clone 0 printed $dev"
[ -f "$dev" ] || fail "no $dev"
writes "$(nbd_uri clone/0)" "$model" 11 200
# Through the FUSE file too.
/usr/bin/python3 - "$dev" "$model" <<'PY' || fail "FUSE writes"
import os, random, sys
rnd = random.Random(5)
fd = os.open(sys.argv[1], os.O_RDWR)
with open(sys.argv[2], "r+b") as m:
    for _ in range(50):
        n = rnd.randrange(1, 30000); off = rnd.randrange(0, (8 << 20) - n)
        data = os.urandom(n); os.pwrite(fd, data, off); m.seek(off); m.write(data)
os.fsync(fd); os.close(fd)
PY
# Volume writes reach neither the snapshot nor the clone.
writes "$(nbd_uri volume)" /dev/null 3 100 flush
checkclone "after writes"

expect_exit 4 "has clone 0" fssnap delete 0
fssnap list | grep -q "^0 .*0 .*$dev" || fail "list does not show the clone: $(fssnap list)"
[ "$(fssnap info --json clone/0 | json_get 'j["base"]')" = 0 ] || fail "info clone/0"
[ "$(fssnap list --json | json_get '[c["number"] for c in j[0]["clones"]]')" = "[0]" ] \
  || fail "list --json lacks the clone: $(fssnap list --json)"
[ "$(fssnap info --json 0 | json_get 'j["clones"][0]["device"]')" = "$dev" ] \
  || fail "info 0 --json lacks the clone"
fssnap info 0 | grep -q "^Writable clones *: 0 ($dev)" || fail "info 0 lacks the clone: $(fssnap info 0)"
expect_exit 3 "no clone 5" fssnap info clone/5
expect_exit 3 "no snapshot 7" fssnap clone 7

stop_fssnapd
start_fssnapd "$img"
checkclone "after a restart"

writes "$(nbd_uri clone/0)" "$model" 12 100          # no flush
kill -9 "$FSSNAPD_PID"; wait "$FSSNAPD_PID" 2>/dev/null; FSSNAPD_PID=
start_fssnapd "$img"
checkclone "after kill -9"

# Trim through NBD and a punched hole through the FUSE file: the range
# reads as zeros and the overlay no longer holds any of it.
overlay=$(ls "$STATE_DIR"/*.clone0.data) || fail "no overlay file"
blocks=$(stat -c %b "$overlay")
/usr/bin/python3 - "$(nbd_uri clone/0)" "$dev" "$model" <<'PY' || fail "trims"
import fcntl, nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.trim(3 << 20, 1 << 20); h.flush(); h.shutdown()
fd = os.open(sys.argv[2], os.O_RDWR)
import ctypes  # fallocate(PUNCH_HOLE | KEEP_SIZE): os has no punch
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
if libc.fallocate(fd, 3, 4 << 20, 1 << 20) != 0:
    sys.exit("fallocate: " + os.strerror(ctypes.get_errno()))
os.fsync(fd); os.close(fd)
with open(sys.argv[3], "r+b") as m:
    m.seek(1 << 20); m.write(bytes(4 << 20))
PY
checkclone "after trims"
[ "$(stat -c %b "$overlay")" -lt "$blocks" ] || fail "trims freed nothing in $overlay"
/usr/bin/python3 - "$overlay" <<'PY' || fail "the overlay still holds data in the trimmed range"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    at = os.lseek(fd, 1 << 20, os.SEEK_DATA)
except OSError as e:
    at = 1 << 62 if e.errno == errno.ENXIO else 0
sys.exit(0 if at >= 5 << 20 else "data at %d" % at)
PY
stop_fssnapd
start_fssnapd "$img"
checkclone "after trims and a restart"

# A second clone of the same snapshot is independent.
[ "$(fssnap clone 0)" = "$RUN_DIR/dev/clone/1" ] || fail "second clone"
nbdcopy "$(nbd_uri clone/1)" - | cmp - "$TESTDIR/snap0" || fail "clone/1 is not snapshot 0"
fssnap delete-clone 1 || fail "delete-clone 1"
fssnap delete clone/0 || fail "delete clone/0"
expect_exit 3 "no clone 0" fssnap delete-clone 0
ls "$STATE_DIR" | grep -q clone && fail "clone files left: $(ls "$STATE_DIR")"
[ -e "$RUN_DIR/dev/clone/0" ] && fail "clone/0 still in the device files"
fssnap delete 0 || fail "delete 0 after its clones"
echo "clone: writes, restart, kill -9, delete: all exact"
