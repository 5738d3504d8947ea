#!/usr/bin/env bash
# Requests a well-behaved client would never send, with libnbd's strict
# checks off: out of range, over 32 MiB, writes to a snapshot, unknown
# flags; and a raw client breaking the framing, which is dropped while
# other clients go on.  The server must answer each with the protocol's
# error and keep serving.
source "$(dirname "$0")/functions.sh"
requires nbdsh
[ -x "$FSSNAP" ] || fail "$FSSNAP not built"

img=$TESTDIR/img
truncate -s 16M "$img"
start_fssnapd "$img"
fssnap create >/dev/null || fail "fssnap create"
export NBD_SOCK

nbdsh -c - <<'PY' || fail "nbdsh checks"
import errno, os, socket, struct
sock = os.environ["NBD_SOCK"]
size = 16 << 20

def handle(export):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.add_meta_context("base:allocation")
    h.connect_uri("nbd+unix:///%s?socket=%s" % (export, sock))
    return h

def expect_errno(what, want, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        # Older bindings give the errno's name rather than its number.
        got = e.errno if isinstance(e.errno, int) else getattr(errno, e.errno)
        assert got == want, "%s: errno %s, wanted %s" % (what, e.errno, want)
        return
    raise AssertionError("%s: no error" % what)

vol = handle("volume")
snap = handle("snap/0")
assert vol.get_size() == size
assert snap.is_read_only() and not vol.is_read_only()

expect_errno("read past the end", errno.EINVAL, vol.pread, 4096, size - 512)
expect_errno("read at 2^63", errno.EINVAL, vol.pread, 512, 1 << 63)
expect_errno("write past the end", errno.ENOSPC, vol.pwrite, b"x" * 1024, size - 512)
expect_errno("zero past the end", errno.ENOSPC, vol.zero, 1024, size)
expect_errno("trim past the end", errno.ENOSPC, vol.trim, 1024, size)
expect_errno("read over 32 MiB", errno.EINVAL, vol.pread, (32 << 20) + 512, 0)
expect_errno("write over 32 MiB", errno.EINVAL, vol.pwrite, b"y" * ((32 << 20) + 512), 0)
expect_errno("unknown flag", errno.EINVAL, vol.pread, 512, 0, 1 << 9)
expect_errno("write to a snapshot", errno.EPERM, snap.pwrite, b"z" * 512, 0)
expect_errno("trim a snapshot", errno.EPERM, snap.trim, 512, 0)
expect_errno("zero a snapshot", errno.EPERM, snap.zero, 512, 0)
expect_errno("block status past the end", errno.EINVAL,
             snap.block_status, 512, size, lambda *a: 0)

# A raw client: EXPORT_NAME, then a request with a bad magic.
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
greeting = s.recv(18, socket.MSG_WAITALL)
assert greeting[:8] == b"NBDMAGIC"
s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 6) + b"volume")
assert len(s.recv(10, socket.MSG_WAITALL)) == 10
s.sendall(b"\xde\xad\xbe\xef" + b"\0" * 24)
s.settimeout(5)
assert s.recv(1) == b"", "server did not drop the bad client"
s.close()

# Everyone else is still served, correctly.
vol.pwrite(b"\xab" * 4096, 8192)
assert vol.pread(4096, 8192) == b"\xab" * 4096
assert snap.pread(4096, 8192) == b"\0" * 4096
vol.flush()
vol.shutdown()
snap.shutdown()
PY
stop_fssnapd
echo PASS
