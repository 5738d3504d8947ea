#!/usr/bin/env bash
# Load: 4 NBD clients (fio jobs, one connection each, 4 requests in flight)
# write random crc32c-verified data to disjoint quarters of the volume
# while 150 snapshots are created, one every 100 ms at most, and the oldest
# is deleted once 4 exist (the 4 MiB volume keeps hashing within the pace).
# The count is fixed, not the time: a slow machine takes longer.  Every snapshot is hashed (sha256 over NBD) right
# after its creation, while the writes go on, and again just before its
# deletion: a copy-on-write that misses a chunk, copies it twice or serves
# a chunk from the wrong store changes the second hash.  Once, the writers
# are frozen (SIGSTOP), the volume is captured, a snapshot is taken, the
# volume is captured again (equal, or a straggling request landed: again)
# and the writers resumed: that snapshot must hash like the capture at the
# end.
source "$(dirname "$0")/functions.sh"
requires_root
requires fio nbdcopy
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "skipped: fio lacks the nbd engine"; exit 77; }
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "skipped: no python3 libnbd bindings"; exit 77; }

size=$((4 << 20))
img=$TESTDIR/disk.img
make_image "$img" "$size"
/usr/bin/python3 -c 'import os, sys; open(sys.argv[1], "r+b").write(os.urandom(int(sys.argv[2])))' "$img" "$size"
start_fssnapd "$img" --no-fuse --chunksize 16k

quarter=$((size / 4))
fio --name=load --thread --ioengine=nbd --uri="$(nbd_uri volume)" \
    --numjobs=4 --offset_increment="$quarter" --size="$quarter" \
    --rw=randwrite --bsrange=4k-64k --iodepth=4 --time_based --runtime=600 \
    --verify=crc32c --verify_backlog=256 --verify_fatal=1 --verify_state_save=0 \
    --group_reporting >"$TESTDIR/fio.log" 2>&1 &
fio_pid=$!
cleanup_fn "kill -CONT $fio_pid 2>/dev/null; kill $fio_pid 2>/dev/null"
sleep 1

/usr/bin/python3 - "$FSSNAP" "$RUN_DIR" "$NBD_SOCK" "$fio_pid" "$TESTDIR" <<'EOP' || fail "snapshot checks"
import hashlib, nbd, os, signal, subprocess, sys, time
fssnap, run_dir, sock, fio_pid, testdir = sys.argv[1:6]
fio_pid = int(fio_pid)

def cli(*args):
    return subprocess.run([fssnap, "--run-dir", run_dir, *args], check=True,
                          capture_output=True, text=True).stdout.strip()

def digest(export):
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{export}?socket={sock}")
    size, d, off = h.get_size(), hashlib.sha256(), 0
    while off < size:
        n = min(4 << 20, size - off)
        d.update(h.pread(n, off))
        off += n
    h.shutdown()
    return d.hexdigest()

def create():
    num = int(cli("create").rsplit("/", 1)[1])
    return num, cli("info", str(num), "-o", "uuid")

def check_and_delete(num, uuid, first, what):
    assert cli("info", str(num), "-o", "uuid") == uuid, f"snapshot {num} changed identity"
    state = cli("info", str(num), "-o", "state")
    assert state in ("idle", "active"), f"snapshot {num} is {state}"
    second = digest(f"snap/{num}")
    assert second == first, f"snapshot {num} ({what}) changed: {first} then {second}"
    cli("delete", str(num))

live, checked, paused = [], 0, None
start = time.monotonic()
while checked < 150:
    t0 = time.monotonic()
    if paused is None and checked >= 60:
        os.kill(fio_pid, signal.SIGSTOP)
        while True:
            time.sleep(0.3)         # let requests already sent land
            capture = digest("volume")
            num, uuid = create()
            if digest("volume") == capture:
                break
            # A request sent before the stop landed around the create (a
            # loaded host): the snapshot may hold it or not; try again.
            cli("delete", str(num))
        os.kill(fio_pid, signal.SIGCONT)
        paused = (num, uuid, capture)
        continue
    num, uuid = create()
    live.append((num, uuid, digest(f"snap/{num}")))
    if len(live) > 4:
        check_and_delete(*live.pop(0), "during writes")
        checked += 1
    time.sleep(max(0, 0.1 - (time.monotonic() - t0)))
for s in live:
    check_and_delete(*s, "during writes")
    checked += 1
check_and_delete(*paused, "volume captured with writes stopped")
took = time.monotonic() - start
print(f"{checked + 1} snapshots checked twice (one every {took / (checked + 1):.2f} s), one against a paused capture")
EOP

# The writers stop on SIGINT with their report (fio exits non-zero when
# interrupted; "err= 0" says no request or verification failed).
kill -INT "$fio_pid"
wait_exit "$fio_pid" 60 || true
grep -q "err= 0" "$TESTDIR/fio.log" || { cat "$TESTDIR/fio.log"; fail "fio reported errors"; }
grep -E "write: IOPS|verify" "$TESTDIR/fio.log" | head -3
fssnap stats --json | json_get 'j["store_errors"], j["snapshots"]' | grep -qx "(0, 0)" \
  || fail "after the load: $(fssnap stats --json)"
fssnap stats
stop_fssnapd
echo "load ok"
