# A raw NBD client for the TLS tests (tests/test-nbd-tls-hostile.sh): it
# sends what a hostile or confused client would (options before
# STARTTLS, bytes pipelined behind it, garbage instead of a ClientHello)
# and checks the server's answers byte by byte.  X.509 only: Python's ssl
# module has no PSK before 3.13.
#   nbdtls.py SCENARIO HOST PORT CADIR
# exits 0 when the server behaved, else prints why and exits 1.
import socket
import ssl
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
OPT = dict(EXPORT_NAME=1, ABORT=2, LIST=3, STARTTLS=5, INFO=6, GO=7,
           STRUCTURED_REPLY=8, LIST_META_CONTEXT=9, SET_META_CONTEXT=10)
REP_ACK, REP_INFO, REP_META = 1, 3, 4
ERR_UNSUP, ERR_INVALID, ERR_TLS_REQD = 0x80000001, 0x80000003, 0x80000005
FLAG_SEND_DF = 1 << 7
REQUEST_MAGIC, SIMPLE_MAGIC = 0x25609513, 0x67446698
CMD_READ, CMD_BLOCK_STATUS = 0, 7
EINVAL = 22


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Client:
    def __init__(self, host, port, cadir):
        self.cadir = cadir
        self.s = socket.create_connection((host, port), timeout=20)
        head = self.recv(18)
        check(head[:16] == b"NBDMAGICIHAVEOPT", "bad greeting")
        self.s.sendall(struct.pack(">I", 3))   # fixed newstyle, no zeroes

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError("server closed after %d of %d bytes" % (len(b), n))
            b += c
        return b

    def closed(self):
        """True if the server ends the connection (EOF or reset) without
        sending an option reply."""
        try:
            data = self.s.recv(64)
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
        return data == b""

    def opt(self, opt, data=b""):
        return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data

    def send_opt(self, opt, data=b""):
        self.s.sendall(self.opt(opt, data))

    def reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        check(magic == REPLY_MAGIC, "bad option reply magic %x" % magic)
        return opt, typ, self.recv(ln)

    def final(self, opt):
        """Replies to opt up to its final one: (type, [non-final ones])."""
        extra = []
        while True:
            o, typ, data = self.reply()
            check(o == opt, "reply for option %d, not %d" % (o, opt))
            if typ in (REP_INFO, REP_META):
                extra.append((typ, data))
                continue
            return typ, extra

    def starttls(self):
        self.send_opt(OPT["STARTTLS"])
        typ, _ = self.final(OPT["STARTTLS"])
        check(typ == REP_ACK, "STARTTLS got %x" % typ)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.cadir + "/ca-cert.pem")
        ctx.load_cert_chain(self.cadir + "/client-cert.pem",
                            self.cadir + "/client-key.pem")
        self.s = ctx.wrap_socket(self.s, server_hostname="localhost")

    def go(self, name):
        n = name.encode()
        self.send_opt(OPT["GO"], struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
        typ, extra = self.final(OPT["GO"])
        check(typ == REP_ACK, "GO got %x" % typ)
        for t, data in extra:
            if t == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                return struct.unpack(">QH", data[2:12])
        raise Fail("GO without NBD_INFO_EXPORT")

    def cmd(self, typ, handle, off, ln):
        self.s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, typ, handle, off, ln))

    def simple_reply(self, handle):
        magic, err, h = struct.unpack(">IIQ", self.recv(16))
        check(magic == SIMPLE_MAGIC, "reply magic %x is not a simple reply" % magic)
        check(h == handle, "reply handle %d, not %d" % (h, handle))
        return err


def meta_data(name, queries):
    n = name.encode()
    d = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        d += struct.pack(">I", len(q)) + q.encode()
    return d


def info_data(name):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", 0)


def after_tls_reads(c, export="volume"):
    """Finish a session over TLS: GO, one simple read, disconnect."""
    size, flags = c.go(export)
    c.cmd(CMD_READ, 7, 0, 4096)
    check(c.simple_reply(7) == 0, "read over TLS failed")
    data = c.recv(4096)
    c.cmd(2, 8, 0, 0)
    return size, flags, data


def every_option_refused(c):
    """TLS required: each option but STARTTLS and ABORT gets TLS_REQD,
    its data consumed (the next option is parsed correctly)."""
    opts = [(OPT["LIST"], b""), (OPT["INFO"], info_data("volume")),
            (OPT["GO"], info_data("volume")), (OPT["STRUCTURED_REPLY"], b""),
            (OPT["LIST_META_CONTEXT"], meta_data("volume", ["base:allocation"])),
            (OPT["SET_META_CONTEXT"], meta_data("volume", ["base:allocation"])),
            (99, b"x" * 1000), (OPT["INFO"], b"\0" * (70 << 10))]
    for opt, data in opts:
        c.send_opt(opt, data)
        typ, extra = c.final(opt)
        check(typ == ERR_TLS_REQD and not extra,
              "option %d before TLS got %x, not TLS_REQD" % (opt, typ))


def scenario_refused(host, port, cadir):
    c = Client(host, port, cadir)
    every_option_refused(c)
    c.starttls()
    # STARTTLS twice is an error, and the session goes on.
    c.send_opt(OPT["STARTTLS"])
    typ, _ = c.final(OPT["STARTTLS"])
    check(typ == ERR_INVALID, "second STARTTLS got %x" % typ)
    after_tls_reads(c)


def scenario_export_name(host, port, cadir):
    c = Client(host, port, cadir)
    c.send_opt(OPT["EXPORT_NAME"], b"volume")
    check(c.closed(), "EXPORT_NAME before TLS did not close the connection")


def scenario_forget(host, port, cadir):
    """TLS optional: structured replies and a meta context chosen in
    plaintext are forgotten by STARTTLS."""
    c = Client(host, port, cadir)
    c.send_opt(OPT["STRUCTURED_REPLY"])
    check(c.final(OPT["STRUCTURED_REPLY"])[0] == REP_ACK, "STRUCTURED_REPLY")
    c.send_opt(OPT["SET_META_CONTEXT"], meta_data("volume", ["base:allocation"]))
    typ, extra = c.final(OPT["SET_META_CONTEXT"])
    check(typ == REP_ACK and len(extra) == 1, "SET_META_CONTEXT before TLS")
    c.starttls()
    size, flags = c.go("volume")
    check(not flags & FLAG_SEND_DF, "structured replies survived STARTTLS")
    c.cmd(CMD_BLOCK_STATUS, 9, 0, 4096)
    check(c.simple_reply(9) == EINVAL, "a meta context survived STARTTLS")
    c.cmd(CMD_READ, 10, 0, 512)
    check(c.simple_reply(10) == 0, "read after STARTTLS")
    c.recv(512)


def scenario_pipelined(host, port, cadir):
    """An option sent behind STARTTLS in the same packet is not served as
    plaintext: the server reads it as a (bad) ClientHello and hangs up."""
    c = Client(host, port, cadir)
    c.s.sendall(c.opt(OPT["STARTTLS"]) + c.opt(OPT["LIST"]) + c.opt(OPT["ABORT"]))
    typ, _ = c.final(OPT["STARTTLS"])
    check(typ == REP_ACK, "STARTTLS got %x" % typ)
    try:
        data = c.s.recv(20)
    except ConnectionResetError:
        data = b""
    check(not data.startswith(struct.pack(">Q", REPLY_MAGIC)),
          "the server answered a plaintext option sent behind STARTTLS")
    check(data == b"" or c.closed(), "the server kept the session")


def scenario_garbage(host, port, cadir):
    c = Client(host, port, cadir)
    c.send_opt(OPT["STARTTLS"])
    check(c.final(OPT["STARTTLS"])[0] == REP_ACK, "STARTTLS")
    c.s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\0" * 512)
    check(c.closed(), "garbage instead of a ClientHello did not end the session")


def main():
    name, host, port, cadir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    try:
        globals()["scenario_" + name](host, port, cadir)
    except (Fail, EOFError, OSError) as e:
        print("nbdtls.py %s: %s" % (name, e), file=sys.stderr)
        sys.exit(1)
    print("nbdtls.py %s: ok" % name)


main()
