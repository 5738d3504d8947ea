#!/usr/bin/env bash
# Real clients over TLS, byte-exact against the plaintext unix socket:
# nbdinfo, nbdcopy and qemu-img with a PSK (nbds://user@host/...?
# tls-psk-file=, tls-creds-psk) and with X.509 (tls-certificates=,
# tls-creds-x509); --tls-verify-peer with and without a client
# certificate, and with one revoked by ca-crl.pem; --tls=on serves plaintext and TLS clients alike; an
# explicit --tls=require covers the unix socket too.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/lib/tls.sh"
requires certtool psktool nbdinfo nbdcopy qemu-img qemu-io

img=$TESTDIR/img
make_image "$img" 32M
TLS_USER=alice
mkdir -p "$TESTDIR/psk"
TLS_PSK=$TESTDIR/psk/keys.psk           # qemu wants DIR/keys.psk
tls_psk "$TLS_PSK" "$TLS_USER"
tls_x509 "$TESTDIR/x509" 127.0.0.1
TLS_PORT=$(free_port)
X=$TESTDIR/x509
qpsk="tls-creds-psk,id=tls0,endpoint=client,dir=$TESTDIR/psk,username=$TLS_USER"
qx509="tls-creds-x509,id=tls0,endpoint=client,dir=$X/client"
qnbd() { echo "driver=nbd,host=127.0.0.1,port=$TLS_PORT,export=$1,tls-creds=tls0"; }

# ---- PSK ----
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$TLS_PORT" --tls-psk="$TLS_PSK"
wait_tcp 127.0.0.1 "$TLS_PORT"
qemu-io -f raw -c 'write -P 0x5a 1M 2M' "$(nbd_uri volume)" >/dev/null || fail "write on the unix socket"
fssnap create >/dev/null || fail "fssnap create"
# A write over TLS (qemu-io, PSK) lands on the volume, not the snapshot.
qemu-io --object "$qpsk" --image-opts -c 'write -P 0xa5 8M 1M' "$(qnbd volume)" >/dev/null \
  || fail "qemu-io write over TLS (PSK)"
[ "$(nbdinfo --size "$(tls_uri snap/0)")" = 33554432 ] || fail "nbdinfo over TLS (PSK)"
nbdinfo "$(tls_uri volume)" | grep -q "with TLS" || fail "nbdinfo does not report TLS"
for e in volume snap/0; do
  [ "$(nbd_sum "$(tls_uri "$e")")" = "$(nbd_sum "$(nbd_uri "$e")")" ] \
    || fail "nbdcopy of $e over TLS (PSK) differs from the unix socket"
done
[ "$(nbd_sum "$(tls_uri snap/0)")" != "$(nbd_sum "$(tls_uri volume)")" ] \
  || fail "the write over TLS did not reach the volume"
qemu-img convert --object "$qpsk" --image-opts "$(qnbd snap/0)" -O raw "$TESTDIR/q.img" \
  || fail "qemu-img convert over TLS (PSK)"
[ "$(sha256sum <"$TESTDIR/q.img" | cut -d' ' -f1)" = "$(nbd_sum "$(nbd_uri snap/0)")" ] \
  || fail "qemu-img copy over TLS (PSK) differs"
stop_fssnapd

# ---- X.509, no client certificate needed ----
xuri() { echo "nbds://127.0.0.1:$TLS_PORT/$1?tls-certificates=$X/$2"; }
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$TLS_PORT" --tls-certificates="$X/server"
wait_tcp 127.0.0.1 "$TLS_PORT"
[ "$(nbd_sum "$(xuri snap/0 client)")" = "$(nbd_sum "$(nbd_uri snap/0)")" ] \
  || fail "nbdcopy over TLS (X.509) differs"
qemu-img convert --object "$qx509" --image-opts "$(qnbd snap/0)" -O raw "$TESTDIR/q2.img" \
  || fail "qemu-img convert over TLS (X.509)"
cmp "$TESTDIR/q.img" "$TESTDIR/q2.img" || fail "qemu-img copy over TLS (X.509) differs"
mkdir -p "$X/nocert" && cp "$X/ca-cert.pem" "$X/nocert/"
nbdinfo --size "$(xuri volume nocert)" >/dev/null || fail "no client certificate refused without --tls-verify-peer"
stop_fssnapd

# ---- X.509 with --tls-verify-peer ----
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$TLS_PORT" --tls-certificates="$X/server" --tls-verify-peer
wait_tcp 127.0.0.1 "$TLS_PORT"
[ "$(nbd_sum "$(xuri snap/0 client)")" = "$(nbd_sum "$(nbd_uri snap/0)")" ] \
  || fail "nbdcopy with a client certificate differs"
qemu-img info --object "$qx509" --image-opts "$(qnbd volume)" >/dev/null \
  || fail "qemu-img with a client certificate"
nbdinfo --size "$(xuri volume nocert)" >/dev/null 2>&1 && fail "--tls-verify-peer let a client without a certificate in"
nbdinfo --size "$(xuri volume rogue)" >/dev/null 2>&1 && fail "--tls-verify-peer let a certificate of another CA in"
nbdinfo --size "$(xuri volume client)" >/dev/null || fail "the daemon stopped serving after refusals"
stop_fssnapd
# ca-crl.pem revokes the client's certificate.
tls_revoke "$X"
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$TLS_PORT" --tls-certificates="$X/revoked" --tls-verify-peer
wait_tcp 127.0.0.1 "$TLS_PORT"
nbdinfo --size "$(xuri volume client)" >/dev/null 2>&1 && fail "a revoked client certificate was let in"
grep -q "client certificate refused:.*revoked" "$FSSNAPD_LOG" || fail "the revocation is not logged"
stop_fssnapd

# ---- --tls=on: TLS offered, plaintext still served ----
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$TLS_PORT" --tls=on --tls-psk="$TLS_PSK"
wait_tcp 127.0.0.1 "$TLS_PORT"
[ "$(nbd_sum "nbd://127.0.0.1:$TLS_PORT/snap/0")" = "$(nbd_sum "$(tls_uri snap/0)")" ] \
  || fail "--tls=on: plaintext and TLS copies differ"
nbdinfo "nbds+unix://$TLS_USER@/volume?socket=$NBD_SOCK&tls-psk-file=$TLS_PSK" | grep -q "with TLS" \
  || fail "--tls=on: the unix socket does not offer TLS"
nbdinfo "$(nbd_uri volume)" | grep -q "without TLS" || fail "--tls=on: plaintext on the unix socket"
stop_fssnapd

# ---- an explicit --tls=require covers RUN_DIR/nbd.sock ----
start_fssnapd "$img" --no-fuse --tls=require --tls-psk="$TLS_PSK"
nbdinfo --size "$(nbd_uri volume)" >/dev/null 2>&1 && fail "--tls=require: plaintext on the unix socket"
[ "$(nbdinfo --size "nbds+unix://$TLS_USER@/volume?socket=$NBD_SOCK&tls-psk-file=$TLS_PSK")" = 33554432 ] \
  || fail "--tls=require: nbds+unix"
stop_fssnapd
echo PASS
