#!/usr/bin/env bash
# fssnap mount/umount and exec around an ext4 on the volume (a loop
# device on the FUSE file): a snapshot mounted read-only holds what the
# volume held, its loop device goes away with the unmount (autoclear);
# each refusal is one line with the documented exit code (DIR missing, a
# file, already a mount point, a disabled snapshot, not a snapshot's
# mount); exec sets FSSNAP_* for CMD, exits with CMD's status or 125/127,
# cleans up after a failing CMD and after SIGTERM sent to fssnap (the
# signal reaches CMD; the mount, loop device and snapshot are gone), and
# exits 128+1 when a forwarded SIGHUP kills CMD.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 losetup
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }

# Loop devices on this fssnapd's snapshot files (loop devices are global:
# count only ours).
snap_loops() { cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -c "^$RUN_DIR/dev/snap/" || true; }

img=$TESTDIR/disk.img
serve_ext4 "$img" 64M
SNAP=$TESTDIR/snap
mkdir "$SNAP"
echo before >"$MNT/file"

dev=$(fssnap create --mount "$MNT") || fail "create"
n=$(basename "$dev")
echo after >"$MNT/file"

expect_exit 0 "" fssnap mount "$n" "$SNAP"
[ "$(cat "$SNAP/file")" = before ] || fail "the snapshot does not hold the old file"
grep " $SNAP " /proc/mounts | grep -q "ro,nosuid,nodev" || fail "not mounted ro,nosuid,nodev: $(grep " $SNAP " /proc/mounts)"
touch "$SNAP/x" 2>/dev/null && fail "the snapshot mount is writable"
dev=$(awk -v d="$SNAP" '$2 == d { print $1 }' /proc/mounts)
[ "$(cat "/sys/block/${dev#/dev/}/loop/autoclear")" = 1 ] || fail "$dev is not autoclear"
[ "$(snap_loops)" -eq 1 ] || fail "not one loop device on the snapshot file while mounted"

# Refusals, each one line.
expect_exit 4 "already a mount point" fssnap mount "$n" "$SNAP"
expect_exit 1 "No such file or directory" fssnap mount "$n" "$TESTDIR/nowhere"
touch "$TESTDIR/afile"
expect_exit 1 "is not a directory" fssnap mount "$n" "$TESTDIR/afile"
expect_exit 3 "no snapshot 7" fssnap mount 7 "$TESTDIR"
expect_exit 1 "needs a snapshot number and a directory" fssnap mount "$n"
expect_exit 1 "is not a mount point" fssnap umount "$TESTDIR"
expect_exit 4 "is not a snapshot of this fssnapd" fssnap umount "$MNT"
expect_exit 1 "No such file or directory" fssnap umount "$TESTDIR/nowhere"

expect_exit 0 "" fssnap umount "$SNAP"
grep -q " $SNAP " /proc/mounts && fail "still mounted"
[ -e "/sys/block/${dev#/dev/}/loop/backing_file" ] && fail "$dev still attached after umount"
[ "$(snap_loops)" -eq 0 ] || fail "loop devices left behind"

# A snapshot attached beforehand keeps its loop device after umount.
att=$(fssnap attach "$n") || fail "attach"
expect_exit 0 "" fssnap mount "$n" "$SNAP"
[ "$(awk -v d="$SNAP" '$2 == d { print $1 }' /proc/mounts)" = "$att" ] || fail "mount did not use $att"
expect_exit 0 "" fssnap umount "$SNAP"
[ -e "/sys/block/${att#/dev/}/loop/backing_file" ] || fail "umount detached the user's $att"
fssnap detach "$n" || fail "detach"

# exec: the environment, CMD's status, cleanup.
out=$(fssnap exec --mount "$MNT" -- sh -c 'cat "$FSSNAP_ROOT/file"; echo "$FSSNAP_SNAPSHOT $FSSNAP_UUID $FSSNAP_DEVICE"; grep -c " $FSSNAP_ROOT " /proc/mounts') || fail "exec"
set -- $out
[ "$1" = after ] || fail "exec saw \"$1\", not the file at snapshot time"
[ -n "$3" ] && [ "$5" = 1 ] || fail "exec environment: $out"
[[ $4 == /dev/* ]] || fail "FSSNAP_DEVICE is $4"
fssnap info "$2" >/dev/null 2>&1 && fail "exec left snapshot $2"
ls -d "$RUN_DIR"/exec.* 2>/dev/null && fail "exec left its directory"
[ "$(snap_loops)" -eq 0 ] || fail "exec left a loop device"

expect_exit 3 "" fssnap exec --mount "$MNT" -- sh -c 'echo failing >&2; exit 3'
expect_exit 127 "No such file or directory" fssnap exec -- /nonexistent/cmd
expect_exit 1 "exec needs a command" fssnap exec --mount "$MNT"
expect_exit 1 "bad -o option" fssnap exec -o bogus=1 -- true
expect_exit 125 "no fssnapd is running" "$FSSNAP" --run-dir "$TESTDIR/none" exec -- true

# SIGTERM to fssnap: forwarded to CMD, cleanup still happens.
"$FSSNAP" --run-dir "$RUN_DIR" exec --mount "$MNT" -- sh -c 'trap "echo got-term >'"$TESTDIR"'/term; exit 9" TERM; echo "$FSSNAP_SNAPSHOT" >'"$TESTDIR"'/num; while :; do sleep 0.1; done' &
pid=$!
for ((i = 0; i < 100; i++)); do [ -s "$TESTDIR/num" ] && break; sleep 0.1; done
[ -s "$TESTDIR/num" ] || fail "exec did not start CMD"
kill -TERM "$pid"
rc=0; wait_exit "$pid" || rc=$?
[ "$rc" -eq 9 ] || fail "exec exited $rc after SIGTERM, not CMD's 9"
[ "$(cat "$TESTDIR/term")" = got-term ] || fail "CMD did not get SIGTERM"
fssnap info "$(cat "$TESTDIR/num")" >/dev/null 2>&1 && fail "SIGTERM left the snapshot"
ls -d "$RUN_DIR"/exec.* 2>/dev/null && fail "SIGTERM left the mount directory"
[ "$(snap_loops)" -eq 0 ] || fail "SIGTERM left a loop device"

# SIGHUP to fssnap kills a CMD that does not catch it: 128+1, cleaned up.
rm -f "$TESTDIR/num"
"$FSSNAP" --run-dir "$RUN_DIR" exec -- sh -c 'echo "$FSSNAP_SNAPSHOT" >'"$TESTDIR"'/num; exec sleep 600' &
pid=$!
for ((i = 0; i < 100; i++)); do [ -s "$TESTDIR/num" ] && break; sleep 0.1; done
[ -s "$TESTDIR/num" ] || fail "exec did not start CMD"
kill -HUP "$pid"
rc=0; wait_exit "$pid" || rc=$?
[ "$rc" -eq 129 ] || fail "exec exited $rc after SIGHUP killed CMD, not 129"
fssnap info "$(cat "$TESTDIR/num")" >/dev/null 2>&1 && fail "SIGHUP left the snapshot"
[ "$(snap_loops)" -eq 0 ] || fail "SIGHUP left a loop device"

# A snapshot that cannot be trusted after a restart (damaged metadata) is
# disabled: mount refuses it.
umount "$MNT"
fssnap detach volume || fail "detach volume"
stop_fssnapd
meta=$(ls "$STATE_DIR"/disk.img.snap"$n".*.meta)
/usr/bin/python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(8192 + 100); b = f.read(1); f.seek(8192 + 100)
    f.write(bytes([b[0] ^ 0x10]))' "$meta"
start_fssnapd "$img"
wait_devfs
[ "$(fssnap info "$n" -o state)" = disabled ] || fail "snapshot $n is $(fssnap info "$n" -o state), not disabled"
expect_exit 4 "snapshot $n is disabled" fssnap mount "$n" "$SNAP"
echo "mount, umount and exec behave"
