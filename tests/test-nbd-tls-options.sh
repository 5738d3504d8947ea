#!/usr/bin/env bash
# fssnapd's TLS options: every bad combination or unusable credential is
# refused at start with one line and exit 1, leaving no socket behind;
# --help documents each option.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/lib/tls.sh"
requires psktool certtool

img=$TESTDIR/img
make_image "$img" 16M
d() { "$FSSNAPD" --foreground --no-fuse --run-dir "$TESTDIR/run" --state-dir "$TESTDIR/state" "$@"; }
port=$(free_port)
tls_psk "$TESTDIR/keys.psk" alice
tls_x509 "$TESTDIR/x509" 127.0.0.1
X=$TESTDIR/x509

expect_exit 1 "required on --listen sockets by default" d --listen "127.0.0.1:$port" "$img"
expect_exit 1 "TLS is asked for but has no credentials" d --tls=require "$img"
expect_exit 1 "TLS is asked for but has no credentials" d --tls=on --listen "127.0.0.1:$port" "$img"
expect_exit 1 'bad --tls "maybe"' d --tls=maybe "$img"
expect_exit 1 "TLS is off on every socket" d --tls-psk="$TESTDIR/keys.psk" "$img"
expect_exit 1 "TLS is off on every socket" d --tls=off --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/keys.psk" "$img"
expect_exit 1 "exclude each other" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/keys.psk" --tls-certificates="$X/server" "$img"
expect_exit 1 "--tls-verify-peer needs --tls-certificates" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/keys.psk" --tls-verify-peer "$img"
expect_exit 1 "--tls-psk $TESTDIR/missing.psk: No such file" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/missing.psk" "$img"
printf 'alice:0123\nbob=feed\n' >"$TESTDIR/bad.psk"
expect_exit 1 "line 2 is not \"user:hexkey\"" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/bad.psk" "$img"
printf 'alice:xyz1\n' >"$TESTDIR/bad.psk"
expect_exit 1 "line 1 is not" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/bad.psk" "$img"
: >"$TESTDIR/empty.psk"
expect_exit 1 "no key in the file" d --listen "127.0.0.1:$port" --tls-psk="$TESTDIR/empty.psk" "$img"
expect_exit 1 "$TESTDIR/none/ca-cert.pem: No such file" d --listen "127.0.0.1:$port" --tls-certificates="$TESTDIR/none" "$img"
# A key that is not the certificate's.
mkdir "$TESTDIR/mixed"
cp "$X/server/ca-cert.pem" "$X/server/server-cert.pem" "$TESTDIR/mixed/"
cp "$X/client/client-key.pem" "$TESTDIR/mixed/server-key.pem"
expect_exit 1 "server-cert.pem and server-key.pem in $TESTDIR/mixed" d --listen "127.0.0.1:$port" --tls-certificates="$TESTDIR/mixed" "$img"
echo garbage >"$TESTDIR/mixed/ca-cert.pem"
expect_exit 1 "$TESTDIR/mixed/ca-cert.pem:" d --listen "127.0.0.1:$port" --tls-certificates="$TESTDIR/mixed" "$img"
[ ! -e "$TESTDIR/run/nbd.sock" ] || fail "a refused start left a socket"

help=$("$FSSNAPD" --help)
for o in --tls=off --tls-psk=FILE --tls-certificates=DIR --tls-verify-peer ca-crl.pem NBD_REP_ERR_TLS_REQD; do
  [[ $help == *"$o"* ]] || fail "--help does not mention $o"
done
echo PASS
