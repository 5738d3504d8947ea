#!/usr/bin/env bash
# TLS required: a plaintext client (nbd://) gets NBD_REP_ERR_TLS_REQD, a
# wrong key and an unknown PSK user fail the TLS handshake; none of them
# reads or writes anything, and the daemon goes on serving good clients.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/lib/tls.sh"
requires psktool nbdinfo nbdcopy qemu-io

img=$TESTDIR/img
make_image "$img" 16M
printf 'original' | dd of="$img" conv=notrunc status=none
TLS_USER=alice TLS_PSK=$TESTDIR/keys.psk TLS_PORT=$(free_port)
tls_psk "$TLS_PSK" alice
tls_psk "$TESTDIR/wrong.psk" alice          # same user, another key
tls_psk "$TESTDIR/bob.psk" bob              # a user the server does not know
start_fssnapd "$img" --no-fuse --verbose --listen "127.0.0.1:$TLS_PORT" --tls-psk="$TLS_PSK"
wait_tcp 127.0.0.1 "$TLS_PORT"
before=$(sha256sum <"$img")

plain="nbd://127.0.0.1:$TLS_PORT/volume"
wrong="nbds://alice@127.0.0.1:$TLS_PORT/volume?tls-psk-file=$TESTDIR/wrong.psk"
bob="nbds://bob@127.0.0.1:$TLS_PORT/volume?tls-psk-file=$TESTDIR/bob.psk"
for u in "$plain" "$wrong" "$bob"; do
  nbdinfo --size "$u" >/dev/null 2>&1 && fail "nbdinfo $u was served"
  nbdcopy "$u" "$TESTDIR/out" 2>/dev/null && fail "nbdcopy $u was served"
  qemu-io -f raw -c 'write -P 0xee 0 64k' "$u" >/dev/null 2>&1 && fail "qemu-io wrote through $u"
  [ "$(nbdinfo --size "$(tls_uri volume)")" = 16777216 ] || fail "good client refused after $u"
done
[ ! -s "$TESTDIR/out" ] || fail "a refused client got data"
grep -q "refused: TLS is required" "$FSSNAPD_LOG" || fail "plaintext options not refused with TLS_REQD"
[ "$(grep -c "TLS handshake.*dropping client" "$FSSNAPD_LOG")" -ge 4 ] \
  || fail "bad keys not refused in the TLS handshake"
stop_fssnapd
[ "$(sha256sum <"$img")" = "$before" ] || fail "a refused client changed the volume"
echo PASS
