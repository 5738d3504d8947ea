#!/usr/bin/env bash
# Hostile clients against a TLS-requiring export (raw sockets,
# tests/lib/nbdtls.py): every option before STARTTLS gets
# NBD_REP_ERR_TLS_REQD with its data consumed and the session goes on;
# EXPORT_NAME before TLS closes; STARTTLS twice is refused; what was
# negotiated in plaintext (structured replies, a meta context) does not
# survive STARTTLS; bytes pipelined behind STARTTLS are not served as
# plaintext; garbage instead of a ClientHello ends the session.  A TLS
# client connected from the start keeps being served throughout.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/lib/tls.sh"
requires certtool nbdsh nbdinfo
RAW=$(dirname "$0")/lib/nbdtls.py

img=$TESTDIR/img
make_image "$img" 16M
printf 'fssnap tls' | dd of="$img" conv=notrunc status=none
tls_x509 "$TESTDIR/x509" 127.0.0.1
port=$(free_port)
uri="nbds://127.0.0.1:$port/volume?tls-certificates=$TESTDIR/x509/client"

start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$port" --tls-certificates="$TESTDIR/x509/server"
wait_tcp 127.0.0.1 "$port"

# A well-behaved client that stays connected while the others misbehave.
FLAG=$TESTDIR/go URI=$uri nbdsh -c '
import os, time
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
first = h.pread(4096, 0)
for i in range(600):
    if os.path.exists(os.environ["FLAG"]):
        break
    time.sleep(0.1)
assert h.pread(4096, 0) == first and first.startswith(b"fssnap tls")
print("steady client ok")
' &
steady=$!

for s in refused export_name pipelined garbage; do
  /usr/bin/python3 "$RAW" "$s" 127.0.0.1 "$port" "$TESTDIR/x509/client" || fail "scenario $s"
  [ "$(nbdinfo --size "$uri")" = 16777216 ] || fail "a TLS client after scenario $s"
done
grep -q "NBD_OPT_EXPORT_NAME before TLS" "$FSSNAPD_LOG" || fail "EXPORT_NAME before TLS not logged"
grep -q "TLS handshake.*dropping client" "$FSSNAPD_LOG" || fail "failed handshakes not logged"
touch "$TESTDIR/go"
wait "$steady" || fail "the steady client was disturbed"
stop_fssnapd

# TLS optional: plaintext negotiation is forgotten at STARTTLS.
start_fssnapd "$img" --no-fuse --listen "127.0.0.1:$port" --tls=on --tls-certificates="$TESTDIR/x509/server"
wait_tcp 127.0.0.1 "$port"
/usr/bin/python3 "$RAW" forget 127.0.0.1 "$port" "$TESTDIR/x509/client" || fail "scenario forget"
stop_fssnapd
echo PASS
