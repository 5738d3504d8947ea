#!/usr/bin/env bash
# NBD over TCP when asked (--listen on loopback): the same exports as on
# the unix socket, several connections at once (multi-conn nbdcopy).
source "$(dirname "$0")/functions.sh"
requires nbdinfo nbdcopy qemu-io python3
[ -x "$FSSNAP" ] || fail "$FSSNAP not built"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
img=$TESTDIR/img
truncate -s 32M "$img"
start_fssnapd "$img" --tls=off --listen "127.0.0.1:$port"
for ((i = 0; i < 100; i++)); do
  nbdinfo --size "nbd://127.0.0.1:$port/volume" >/dev/null 2>&1 && break
  sleep 0.05
done
[ "$(nbdinfo --size "nbd://127.0.0.1:$port/volume")" = 33554432 ] \
  || fail "volume over TCP"
qemu-io -f raw -c 'write -P 0x77 1M 3M' "nbd://127.0.0.1:$port/volume" \
  >/dev/null || fail "write over TCP"
fssnap create >/dev/null || fail "fssnap create"
nbdcopy --connections=4 "nbd://127.0.0.1:$port/snap/0" "$TESTDIR/copy" \
  || fail "nbdcopy over TCP"
cmp "$TESTDIR/copy" "$img" || fail "TCP copy differs from the origin"
nbdinfo --list "nbd://127.0.0.1:$port" | grep -q 'export="snap/0"' \
  || fail "list over TCP"
stop_fssnapd
echo PASS
