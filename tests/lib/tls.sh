# TLS helpers for tests/test-nbd-tls-*.sh (source after functions.sh).
#   free_port                 a TCP port free on loopback right now
#   tls_psk FILE USER         a psktool key file with one user
#   tls_x509 DIR IP...        a CA and keys made with certtool:
#                             DIR/server: ca-cert.pem server-cert.pem
#                               server-key.pem (for fssnapd
#                               --tls-certificates; the certificate names
#                               each IP and localhost)
#                             DIR/client: ca-cert.pem client-cert.pem
#                               client-key.pem (libnbd tls-certificates=,
#                               qemu tls-creds-x509)
#                             DIR/rogue: a client key and certificate
#                               signed by another CA (same file names)
#   tls_revoke DIR            DIR/revoked: DIR/server plus a ca-crl.pem
#                             that revokes DIR/client's certificate
#   wait_tcp HOST PORT        wait until something listens there
#   tls_uri EXPORT            nbds:// URI for EXPORT on $TLS_PORT with the
#                             PSK file $TLS_PSK and user $TLS_USER
#   nbd_sum URI               sha256 of a whole export read with nbdcopy

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tls_psk() {
  rm -f "$1"
  psktool -u "$2" -p "$1" >/dev/null || fail "psktool -u $2 -p $1"
}

# _tls_ca DIR NAME: a self-signed CA in DIR/NAME-key.pem, DIR/NAME-cert.pem
_tls_ca() {
  local d=$1 n=$2
  certtool --generate-privkey --key-type=ecdsa \
    --outfile "$d/$n-key.pem" 2>/dev/null || fail "certtool: CA key"
  printf 'cn = fssnap test %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$n" >"$d/$n.info"
  certtool --generate-self-signed --load-privkey "$d/$n-key.pem" \
    --template "$d/$n.info" --outfile "$d/$n-cert.pem" 2>/dev/null \
    || fail "certtool: CA certificate"
}

# _tls_leaf DIR CA ROLE OUT TEMPLATE: key and certificate OUT-key.pem,
# OUT-cert.pem signed by CA.
_tls_leaf() {
  local d=$1 ca=$2 role=$3 out=$4 tmpl=$5
  certtool --generate-privkey --key-type=ecdsa \
    --outfile "$out-key.pem" 2>/dev/null || fail "certtool: $role key"
  printf '%s' "$tmpl" >"$out.info"
  certtool --generate-certificate --load-privkey "$out-key.pem" \
    --load-ca-certificate "$d/$ca-cert.pem" --load-ca-privkey "$d/$ca-key.pem" \
    --template "$out.info" --outfile "$out-cert.pem" 2>/dev/null \
    || fail "certtool: $role certificate"
}

tls_x509() {
  local d=$1 ip san="dns_name = localhost"$'\n'
  shift
  for ip in "$@"; do san+="ip_address = $ip"$'\n'; done
  mkdir -p "$d/server" "$d/client" "$d/rogue"
  _tls_ca "$d" ca
  _tls_ca "$d" otherca
  _tls_leaf "$d" ca server "$d/server/server" \
    "cn = localhost"$'\n'"$san"$'tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n'
  _tls_leaf "$d" ca client "$d/client/client" \
    $'cn = backup client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n'
  _tls_leaf "$d" otherca rogue "$d/rogue/client" \
    $'cn = rogue client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n'
  cp "$d/ca-cert.pem" "$d/server/"
  cp "$d/ca-cert.pem" "$d/client/"
  cp "$d/ca-cert.pem" "$d/rogue/"
}

tls_revoke() {
  local d=$1
  mkdir -p "$d/revoked"
  cp "$d/server/"*.pem "$d/revoked/"
  printf 'crl_next_update = 2\ncrl_number = 1\n' >"$d/crl.info"
  certtool --generate-crl --load-ca-privkey "$d/ca-key.pem" --load-ca-certificate "$d/ca-cert.pem" \
    --load-certificate "$d/client/client-cert.pem" --template "$d/crl.info" \
    --outfile "$d/revoked/ca-crl.pem" >/dev/null 2>&1 || fail "certtool: CRL"
}

wait_tcp() {
  local i
  for ((i = 0; i < 200; i++)); do
    /usr/bin/python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' "$1" "$2" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "nothing listens on $1:$2"
}

tls_uri() { echo "nbds://$TLS_USER@127.0.0.1:$TLS_PORT/$1?tls-psk-file=$TLS_PSK"; }

nbd_sum() { nbdcopy "$1" - | sha256sum | cut -d' ' -f1; }
