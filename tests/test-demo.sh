#!/usr/bin/env bash
# examples/demo.sh, the README's demonstration, runs to the end and leaves
# no mount, loop device or daemon behind.
source "$(dirname "$0")/functions.sh"
requires_root
requires mkfs.ext4 e2fsck losetup
[ -c /dev/fuse ] || { echo "skipped: no /dev/fuse"; exit 77; }
BUILD=$BUILD "$TOP/examples/demo.sh" >"$TESTDIR/demo.log" 2>&1 \
  || { cat "$TESTDIR/demo.log"; fail "examples/demo.sh exited non-zero"; }
tail -3 "$TESTDIR/demo.log"
grep -q "^Demo finished" "$TESTDIR/demo.log" || fail "the demo did not finish"
grep -q "all 24 files hold what they held at the snapshot" "$TESTDIR/demo.log" \
  || fail "the demo did not verify the snapshot"
grep -q "fssnap-demo" /proc/mounts && fail "the demo left a mount"
losetup -a | grep -q "fssnap-demo" && fail "the demo left a loop device"
pgrep -f "fssnapd .*fssnap-demo" && fail "the demo left fssnapd running"
exit 0
