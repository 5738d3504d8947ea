#!/usr/bin/env bash
# fssnapd --ublk on a kernel without the ublk driver (no /dev/ublk-control,
# as on the machines CI runs on) refuses to start with one clear line,
# exit 1, and leaves nothing behind.
. "$(dirname "$0")/functions.sh"

[ -e /dev/ublk-control ] && { echo "skipped: this kernel has ublk"; exit 77; }
make_image "$TESTDIR/vol.img" 16M
msg="fssnapd: --ublk: no /dev/ublk-control: this kernel has no ublk driver"
expect_exit 1 "$msg" "$FSSNAPD" --foreground --ublk --run-dir "$RUN_DIR" \
  --state-dir "$STATE_DIR" "$TESTDIR/vol.img"
[ ! -e "$RUN_DIR/nbd.sock" ] && [ ! -e "$RUN_DIR/control.sock" ] \
  || fail "sockets left behind"
# In the background too: the refusal reaches the terminal.
expect_exit 1 "$msg" "$FSSNAPD" --ublk --run-dir "$RUN_DIR" \
  --state-dir "$STATE_DIR" "$TESTDIR/vol.img"
# And the same origin still starts without --ublk.
start_fssnapd "$TESTDIR/vol.img"
stop_fssnapd
