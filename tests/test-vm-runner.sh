#!/usr/bin/env bash
# tests/vm/run itself: a guest script's exit status comes out unchanged, a
# guest that dies without reporting fails (not passes, not skips), a hung
# guest is killed at --timeout, and two guests run at once.
. "$(dirname "$0")/functions.sh"
requires_root
requires qemu-system-x86_64
RUNNER=$TOP/tests/vm/run
# Guest scripts must lie outside /tmp, which the guest covers with a tmpfs.
mkdir -p "$BUILD/vm"
dir=$(mktemp -d "$BUILD/vm/selftest.XXXXXX")
cleanup_fn "rm -rf '$dir'"

printf 'echo "args: $*"; exit 3\n' >"$dir/three.sh"
printf 'echo o >/proc/sysrq-trigger; sleep 60\n' >"$dir/vanish.sh"
printf 'sleep 600\n' >"$dir/hang.sh"

"$RUNNER" "$dir/three.sh" "a b" c >"$TESTDIR/three.log" 2>&1 &
three=$!
rc=0; "$RUNNER" "$dir/vanish.sh" >"$TESTDIR/vanish.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$TESTDIR/vanish.log"; fail "a guest that reported nothing exited $rc, not 1"; }
grep -q "reported no status" "$TESTDIR/vanish.log" || fail "no reason given for the lost guest"
rc=0; wait "$three" || rc=$?
[ "$rc" -eq 3 ] || { cat "$TESTDIR/three.log"; fail "exit 3 in the guest came out as $rc"; }
grep -q "args: a b c" "$TESTDIR/three.log" || fail "arguments or console lost: $(cat "$TESTDIR/three.log")"

rc=0; "$RUNNER" --timeout 25 "$dir/hang.sh" >"$TESTDIR/hang.log" 2>&1 || rc=$?
[ "$rc" -eq 124 ] || { cat "$TESTDIR/hang.log"; fail "a hung guest exited $rc, not 124"; }
pgrep -f "$BUILD/vm/runs/hang\." >/dev/null && fail "qemu or virtiofsd left running"
ls "$BUILD"/vm/runs/hang.* >/dev/null 2>&1 && fail "run directory left behind"
echo ok
