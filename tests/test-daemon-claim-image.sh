#!/usr/bin/env bash
# An image-file origin cannot be claimed like a device, so fssnapd refuses
# an image that backs a loop device and otherwise holds a write lease on
# it: when another program opens the image (a reader, losetup, mount -o
# loop), fssnapd logs a warning at once, counts it in fssnap stats
# ("Origin opened elsewhere", origin_opened_elsewhere in --json) and takes
# the lease again once the other program is gone; its own reads (file
# system detection, libext2fs at create) are not counted.  Where no lease
# can be had (here: an unprivileged fssnapd on an image it does not own),
# it says the image cannot be watched.  The image ends unchanged.
source "$(dirname "$0")/functions.sh"
requires_root
requires losetup mkfs.ext4 sha256sum setpriv

MNT=$TESTDIR/mnt
mkdir -p "$MNT"
cleanup_fn fs_cleanup
img=$TESTDIR/disk.img
make_image "$img" 32M
mkfs.ext4 -q -F "$img"
sum() { sha256sum <"$img" | cut -d' ' -f1; }
before=$(sum)
opened() { fssnap stats --json | json_get 'j["origin_opened_elsewhere"]'; }
wait_log() {  # PATTERN COUNT: until the daemon's log has COUNT lines matching
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(grep -c -- "$1" "$FSSNAPD_LOG")" -ge "$2" ] && return 0
    sleep 0.05
  done
  cat "$FSSNAPD_LOG" >&2
  fail "fewer than $2 log lines with \"$1\""
}

# Backing a loop device: refused.
loop=$(losetup -f --show -r "$img") || fail "losetup"
expect_exit 1 "origin $img is in use: it backs the loop device $loop, whose writes would bypass fssnapd (detach it first: losetup -d $loop)" \
  "$FSSNAPD" --foreground --run-dir "$RUN_DIR" --state-dir "$STATE_DIR" "$img"
losetup -d "$loop"
echo "backing a loop device: refused"

start_fssnapd "$img" --no-fuse
[ "$(opened)" = 0 ] || fail "opened elsewhere before anyone did"
# fssnapd's own reads of the image (blkid, libext2fs) count for nothing.
n=$(basename "$(fssnap create -o transient)") || fail "create"
[ "$(opened)" = 0 ] || fail "the create counted as an open elsewhere"
fssnap info "$n" -o candidate_chunks >/dev/null || fail "info"

# A reader: warned at once, counted, the lease comes back after it.
cat "$img" >/dev/null
wait_log "origin $img was opened by another program" 1
[ "$(opened)" = 1 ] || fail "one open elsewhere counted $(opened)"
fssnap stats | grep -Eq "^Origin opened elsewhere +: 1$" || fail "fssnap stats: $(fssnap stats)"
wait_log "origin $img: no other program has it open for writing now; watching it again" 1
echo "reader: warned, counted"

# mount -o loop (read-only, so that nothing is written): warned again.
mount -o loop,ro,noload "$img" "$MNT" || fail "mount -o loop"
wait_log "origin $img was opened by another program" 2
[ "$(opened)" -ge 2 ] || fail "mount -o loop not counted"
umount "$MNT"
echo "mount -o loop: warned, counted"
stop_fssnapd
[ "$(sum)" = "$before" ] || fail "the image changed"

# No lease to be had: an unprivileged fssnapd on an image it does not own
# (leases need the owner or CAP_LEASE) serves it and says it cannot watch.
chmod 0666 "$img"
chmod 0755 "$TESTDIR"
mkdir -m 0777 "$TESTDIR/nobody"
setpriv --reuid=65534 --regid=65534 --clear-groups "$FSSNAPD" --foreground \
  --no-fuse --run-dir "$TESTDIR/nobody/run" --state-dir "$TESTDIR/nobody/state" \
  "$img" >"$TESTDIR/nobody.log" 2>&1 &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
for ((i = 0; i < 100; i++)); do grep -q "^fssnapd: serving" "$TESTDIR/nobody.log" && break; sleep 0.05; done
grep -q "origin $img cannot be watched: no lease for a file fssnapd neither owns" \
  "$TESTDIR/nobody.log" || fail "no warning: $(cat "$TESTDIR/nobody.log")"
kill -TERM "$pid"
wait_exit "$pid" || fail "the unprivileged fssnapd exited $?"
[ "$(sum)" = "$before" ] || fail "the image changed"
echo "all image claims ok"
