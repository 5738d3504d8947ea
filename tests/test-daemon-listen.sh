#!/usr/bin/env bash
# fssnapd listens on TCP only when asked, and then on loopback unless a
# host is given; a port in use is refused at start; both unix sockets are
# mode 0600.
source "$(dirname "$0")/functions.sh"
requires_root
requires nbdinfo

img=$TESTDIR/disk.img
make_image "$img" 16M

# The local addresses "ip:port" of the TCP sockets pid listens on.
tcp_listening() {
  /usr/bin/python3 - "$1" <<'EOP'
import os, socket, struct, sys
pid = sys.argv[1]
inodes = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    if link.startswith("socket:["):
        inodes.add(link[8:-1])
for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
    for line in open(f"/proc/net/{name}").readlines()[1:]:
        f = line.split()
        if f[3] != "0A" or f[9] not in inodes:
            continue
        addr, port = f[1].split(":")
        raw = bytes.fromhex(addr)
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        print(f"{socket.inet_ntop(fam, raw)}:{int(port, 16)}")
EOP
}

start_fssnapd "$img" --no-fuse
[ "$(stat -c %a "$NBD_SOCK")" = 600 ] || fail "nbd.sock has mode $(stat -c %a "$NBD_SOCK")"
[ "$(stat -c %a "$CTL_SOCK")" = 600 ] || fail "control.sock has mode $(stat -c %a "$CTL_SOCK")"
[ -z "$(tcp_listening "$FSSNAPD_PID")" ] || fail "listens on TCP unasked: $(tcp_listening "$FSSNAPD_PID")"
stop_fssnapd

port=$((20000 + RANDOM % 20000))
start_fssnapd "$img" --no-fuse --tls=off --listen "$port"
addrs=$(tcp_listening "$FSSNAPD_PID" | sort | tr '\n' ' ')
echo "--listen $port: $addrs"
[ -n "$addrs" ] || fail "--listen $port: no TCP socket"
for a in $addrs; do
  case $a in 127.0.0.1:$port|::1:$port) ;; *) fail "--listen $port listens on $a, not loopback" ;; esac
done
nbdinfo --size "nbd://127.0.0.1:$port/volume" | grep -qx 16777216 || fail "NBD over TCP"

# The port is taken now: a second daemon (another origin and run dir)
# refuses to start.
make_image "$TESTDIR/other.img" 16M
expect_exit 1 "cannot listen on 127.0.0.1:$port" "$FSSNAPD" --foreground --no-fuse \
  --run-dir "$TESTDIR/run2" --state-dir "$TESTDIR/state2" --tls=off --listen "127.0.0.1:$port" "$TESTDIR/other.img"
[ ! -e "$TESTDIR/run2/nbd.sock" ] || fail "a refused start left its unix socket"
stop_fssnapd
echo "listen ok"
