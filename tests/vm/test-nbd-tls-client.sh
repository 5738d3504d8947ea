#!/usr/bin/env bash
# The kernel NBD client over TLS: nbd-client -x with the CA file (-A) and
# a client certificate (long options: Debian's 3.24 rejects the short -F)
# against fssnapd --listen with X.509 and --tls-verify-peer.  /dev/nbd0 on snap/0 is byte-exact against the same
# export read by nbdcopy on the unix socket; a write through /dev/nbd1 on
# the volume reaches it; without a client certificate nbd-client fails.
. "$(dirname "$0")/guest.sh"
. "$(dirname "$0")/../lib/tls.sh"
requires nbd-client nbdcopy certtool

guest_modprobe nbd
guest_wait_dev /dev/nbd1
disconnect() { nbd-client -d "$1" >/dev/null 2>&1; }

X=$TESTDIR/x509
tls_x509 "$X" 127.0.0.1
port=$(free_port)
make_image "$TESTDIR/vol.img" 8M
head -c 3M /dev/urandom | dd of="$TESTDIR/vol.img" bs=1M seek=1 conv=notrunc status=none
start_fssnapd "$TESTDIR/vol.img" --no-fuse --listen "127.0.0.1:$port" \
  --tls-certificates="$X/server" --tls-verify-peer
wait_tcp 127.0.0.1 "$port"
fssnap create >/dev/null || fail "fssnap create"

tls=(-enable-tls -cacertfile "$X/client/ca-cert.pem" -tlshostname localhost
     -certfile "$X/client/client-cert.pem" -keyfile "$X/client/client-key.pem")
nbd-client 127.0.0.1 "$port" /dev/nbd0 -N snap/0 -b 4096 -readonly "${tls[@]}" >/dev/null \
  || fail "nbd-client -x snap/0"
cleanup_fn "disconnect /dev/nbd0"
guest_nbd_wait_size /dev/nbd0 $((8 * 2048))
nbdcopy "$(nbd_uri snap/0)" "$TESTDIR/snap.img" || fail "nbdcopy snap/0"
cmp /dev/nbd0 "$TESTDIR/snap.img" || fail "/dev/nbd0 over TLS differs from snap/0"

nbd-client 127.0.0.1 "$port" /dev/nbd1 -N volume -b 4096 "${tls[@]}" >/dev/null \
  || fail "nbd-client -x volume"
cleanup_fn "disconnect /dev/nbd1"
guest_nbd_wait_size /dev/nbd1 $((8 * 2048))
head -c 1M /dev/urandom >"$TESTDIR/pattern"
dd if="$TESTDIR/pattern" of=/dev/nbd1 bs=1M seek=5 oflag=direct status=none || fail "write /dev/nbd1"
nbd-client -d /dev/nbd1 >/dev/null || fail "disconnect /dev/nbd1"
nbdcopy "$(nbd_uri volume)" "$TESTDIR/vol.copy" || fail "nbdcopy volume"
cmp -i 0:$((5 << 20)) -n 1048576 "$TESTDIR/pattern" "$TESTDIR/vol.copy" \
  || fail "the write over TLS did not reach the volume"

guest_nbd_wait_size /dev/nbd1 0
nbd-client 127.0.0.1 "$port" /dev/nbd1 -N volume -b 4096 -enable-tls -cacertfile "$X/client/ca-cert.pem" -tlshostname localhost \
  >/dev/null 2>&1 && fail "--tls-verify-peer let nbd-client in without a certificate"
nbd-client -d /dev/nbd0 >/dev/null || fail "disconnect /dev/nbd0"
stop_fssnapd
echo ok
