/* SPDX-License-Identifier: MIT */
/*
 * Tests of the NBD frontend: a real nbd_server over a real engine on a
 * temporary image, driven by a small raw-socket client in this file, so
 * that malformed and hostile sequences can be sent exactly.  Interop with
 * real clients (libnbd, qemu, fio) is in tests/test-nbd-*.sh.
 *
 * The image (8 MiB) holds a pattern; snapshot 0 is taken with only the
 * first 4 MiB as candidates (the rest must map and read as holes), then
 * the first 1 MiB of the volume is overwritten with 0xee.  Dirty bitmap
 * contexts (changed-block tracking) are checked against that write and
 * later ones.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "libfssnap.h"
#include "nbd/nbd.h"
#include "nbd/protocol.h"
#include "nbd/tls.h"

#define IMG_SIZE   (8u << 20)
#define CAND_SIZE  (4u << 20)
#define OVER_SIZE  (1u << 20)

static char tmpdir[] = "/tmp/test-nbd.XXXXXX";
static char sockpath[256];
static struct fssnap_origin *origin;
static struct nbd_server *server;

static uint8_t
pat (uint64_t off)
{
  return (uint8_t) ((off >> 9) * 31 + 1);
}

static void
quiet_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  if (level <= FSSNAP_LOG_WARN && getenv ("TEST_NBD_VERBOSE"))
    fprintf (stderr, "log: %s\n", msg);
  (void) msg;
}

/* ---- A raw NBD client ------------------------------------------------ */

static int
cli_connect (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  assert_true (fd >= 0);
  snprintf (sun.sun_path, sizeof sun.sun_path, "%s", path);
  assert_int_equal (connect (fd, (struct sockaddr *) &sun, sizeof sun), 0);
  return fd;
}

static void
xsend (int fd, const void *buf, size_t len)
{
  assert_int_equal (send (fd, buf, len, MSG_NOSIGNAL), (ssize_t) len);
}

/* Receive exactly len bytes; false at end of stream (or reset). */
static bool
xrecv (int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t r = recv (fd, p, len, 0);
    if (r <= 0)
      return false;
    p += r;
    len -= (size_t) r;
  }
  return true;
}

/* The server closed the connection (within 5 s). */
static bool
cli_closed (int fd)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  char c;
  return poll (&p, 1, 5000) == 1 && recv (fd, &c, 1, 0) <= 0;
}

static void
cli_greeting (int fd, uint32_t cflags)
{
  uint8_t g[18], f[4];
  assert_true (xrecv (fd, g, sizeof g));
  assert_true (nbd_get64 (g) == NBD_MAGIC);
  assert_true (nbd_get64 (g + 8) == NBD_IHAVEOPT);
  assert_int_equal (nbd_get16 (g + 16),
                    NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  nbd_put32 (f, cflags);
  xsend (fd, f, 4);
}

static void
cli_opt (int fd, uint32_t opt, const void *data, uint32_t len)
{
  uint8_t h[16];
  nbd_put64 (h, NBD_IHAVEOPT);
  nbd_put32 (h + 8, opt);
  nbd_put32 (h + 12, len);
  xsend (fd, h, sizeof h);
  if (len)
    xsend (fd, data, len);
}

/* One option reply; its data (NUL-terminated) in buf[4097]. */
static uint32_t
cli_opt_reply (int fd, uint32_t opt, uint8_t *buf, uint32_t *lenp)
{
  uint8_t h[20];
  uint32_t len;
  assert_true (xrecv (fd, h, sizeof h));
  assert_true (nbd_get64 (h) == NBD_OPT_REPLY_MAGIC);
  assert_int_equal (nbd_get32 (h + 8), opt);
  len = nbd_get32 (h + 16);
  assert_true (len <= 4096);
  assert_true (xrecv (fd, buf, len));
  buf[len] = 0;
  if (lenp)
    *lenp = len;
  return nbd_get32 (h + 12);
}

struct cli {
  int fd;
  bool structured;
  uint64_t size;
  uint16_t flags;
  uint32_t minbs, prefbs, maxbs;
  char name[64];
};

static void
put_string (uint8_t **p, const char *s)
{
  nbd_put32 (*p, (uint32_t) strlen (s));
  memcpy (*p + 4, s, strlen (s));
  *p += 4 + strlen (s);
}

/* The id a context must have: 0 in LIST replies, else by its name. */
static uint32_t
meta_id (uint32_t opt, const char *ctx)
{
  unsigned a;
  if (opt == NBD_OPT_LIST_META_CONTEXT)
    return 0;
  if (strcmp (ctx, "base:allocation") == 0)
    return NBD_META_ID;
  assert_int_equal (sscanf (ctx, "qemu:dirty-bitmap:snap/%u", &a), 1);
  return NBD_META_BITMAP_ID (a);
}

/* LIST or SET with nq queries; the contexts replied, space-separated, in
 * got (if non-NULL).  Returns the final reply type.
 */
static uint32_t
cli_meta (int fd, uint32_t opt, const char *export, const char *const *q,
          unsigned nq, char *got, size_t gotlen)
{
  uint8_t d[1024], *p = d, buf[4097];
  uint32_t type, len;
  put_string (&p, export);
  nbd_put32 (p, nq);
  p += 4;
  for (unsigned i = 0; i < nq; i++)
    put_string (&p, q[i]);
  cli_opt (fd, opt, d, (uint32_t) (p - d));
  if (got)
    *got = '\0';
  while ((type = cli_opt_reply (fd, opt, buf, &len)) == NBD_REP_META_CONTEXT) {
    assert_true (len > 4);
    assert_int_equal (nbd_get32 (buf), meta_id (opt, (char *) buf + 4));
    if (got)
      snprintf (got + strlen (got), gotlen - strlen (got), "%s%s",
                *got ? " " : "", (char *) buf + 4);
  }
  return type;
}

static uint32_t
cli_set_meta (int fd, uint32_t opt, const char *export, const char *query)
{
  return cli_meta (fd, opt, export, &query, query ? 1 : 0, NULL, 0);
}

/* GO or INFO; returns the final reply type and fills c. */
static uint32_t
cli_info (struct cli *c, uint32_t opt, const char *name)
{
  uint8_t d[256], *p = d, buf[4097];
  uint32_t type, len;
  put_string (&p, name);
  nbd_put16 (p, 3);
  nbd_put16 (p + 2, NBD_INFO_NAME);
  nbd_put16 (p + 4, NBD_INFO_DESCRIPTION);
  nbd_put16 (p + 6, NBD_INFO_BLOCK_SIZE);
  p += 8;
  cli_opt (c->fd, opt, d, (uint32_t) (p - d));
  while ((type = cli_opt_reply (c->fd, opt, buf, &len)) == NBD_REP_INFO) {
    switch (nbd_get16 (buf)) {
    case NBD_INFO_EXPORT:
      assert_int_equal (len, 12);
      c->size = nbd_get64 (buf + 2);
      c->flags = nbd_get16 (buf + 10);
      break;
    case NBD_INFO_NAME:
      assert_true (len - 2 < sizeof c->name);
      memcpy (c->name, buf + 2, len - 2);
      c->name[len - 2] = '\0';
      break;
    case NBD_INFO_BLOCK_SIZE:
      assert_int_equal (len, 14);
      c->minbs = nbd_get32 (buf + 2);
      c->prefbs = nbd_get32 (buf + 6);
      c->maxbs = nbd_get32 (buf + 10);
      break;
    case NBD_INFO_DESCRIPTION:
      assert_true (len > 2);
      break;
    default:
      fail_msg ("unexpected info %u", nbd_get16 (buf));
    }
  }
  return type;
}

/* Connect to path and enter transmission on export name. */
static struct cli
cli_open_at (const char *path, const char *name, bool structured, bool meta)
{
  struct cli c = { .fd = cli_connect (path), .structured = structured };
  uint8_t buf[4097];
  cli_greeting (c.fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
  if (structured) {
    cli_opt (c.fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    assert_int_equal (cli_opt_reply (c.fd, NBD_OPT_STRUCTURED_REPLY, buf,
                                     NULL), NBD_REP_ACK);
  }
  if (meta)
    assert_int_equal (cli_set_meta (c.fd, NBD_OPT_SET_META_CONTEXT, name,
                                    "base:allocation"), NBD_REP_ACK);
  assert_int_equal (cli_info (&c, NBD_OPT_GO, name), NBD_REP_ACK);
  return c;
}

static struct cli
cli_open (const char *name, bool structured, bool meta)
{
  return cli_open_at (sockpath, name, structured, meta);
}

/* Structured replies, SET_META_CONTEXT with these queries, GO; the
 * contexts the server selected in got.
 */
static struct cli
cli_open_meta (const char *path, const char *name, const char *const *q,
               unsigned nq, char *got, size_t gotlen)
{
  struct cli c = { .fd = cli_connect (path), .structured = true };
  uint8_t buf[4097];
  cli_greeting (c.fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
  cli_opt (c.fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  assert_int_equal (cli_opt_reply (c.fd, NBD_OPT_STRUCTURED_REPLY, buf,
                                   NULL), NBD_REP_ACK);
  assert_int_equal (cli_meta (c.fd, NBD_OPT_SET_META_CONTEXT, name, q, nq,
                              got, gotlen), NBD_REP_ACK);
  assert_int_equal (cli_info (&c, NBD_OPT_GO, name), NBD_REP_ACK);
  return c;
}

static void
cli_cmd (struct cli *c, uint16_t flags, uint16_t type, uint64_t handle,
         uint64_t off, uint32_t len, const void *data)
{
  uint8_t h[NBD_REQUEST_SIZE];
  nbd_put32 (h, NBD_REQUEST_MAGIC);
  nbd_put16 (h + 4, flags);
  nbd_put16 (h + 6, type);
  nbd_put64 (h + 8, handle);
  nbd_put64 (h + 16, off);
  nbd_put32 (h + 24, len);
  xsend (c->fd, h, sizeof h);
  if (data)
    xsend (c->fd, data, len);
}

struct reply {
  uint64_t handle;
  uint32_t error;
  uint64_t off;                 /* of the data */
  uint8_t *data;                /* malloc'd, for reads */
  uint32_t len;
  uint32_t descs[2 * 300];      /* base:allocation */
  unsigned ndescs;
  unsigned nbm;                 /* dirty bitmap chunks, in order */
  uint32_t bm_id[4];
  unsigned bm_n[4];
  uint32_t bm_descs[4][2 * 300];
};

/* A block status chunk's descriptors into r. */
static void
cli_status_chunk (struct reply *r, const uint8_t *body, uint32_t len)
{
  uint32_t id, *descs;
  unsigned n;
  assert_true (len >= 12 && (len - 4) % 8 == 0);
  id = nbd_get32 (body);
  n = (len - 4) / 8;
  assert_true (n <= 300);
  if (id == NBD_META_ID) {
    descs = r->descs;
    r->ndescs = n;
  } else {
    assert_true (r->nbm < 4);
    r->bm_id[r->nbm] = id;
    r->bm_n[r->nbm] = n;
    descs = r->bm_descs[r->nbm++];
  }
  for (unsigned i = 0; i < 2 * n; i++)
    descs[i] = nbd_get32 (body + 4 + 4 * i);
}

/* Receive one whole reply.  Simple replies to reads need readlen. */
static void
cli_reply (struct cli *c, struct reply *r, uint32_t readlen)
{
  uint8_t h[NBD_CHUNK_HEADER_SIZE];
  memset (r, 0, sizeof *r);
  if (!c->structured) {
    assert_true (xrecv (c->fd, h, NBD_SIMPLE_REPLY_SIZE));
    assert_true (nbd_get32 (h) == NBD_SIMPLE_REPLY_MAGIC);
    r->error = nbd_get32 (h + 4);
    r->handle = nbd_get64 (h + 8);
    if (r->error == 0 && readlen) {
      r->data = malloc (readlen);
      r->len = readlen;
      assert_true (xrecv (c->fd, r->data, readlen));
    }
    return;
  }
  for (;;) {
    uint16_t flags, type;
    uint32_t len;
    uint8_t *body;
    assert_true (xrecv (c->fd, h, sizeof h));
    assert_true (nbd_get32 (h) == NBD_STRUCTURED_REPLY_MAGIC);
    flags = nbd_get16 (h + 4);
    type = nbd_get16 (h + 6);
    r->handle = nbd_get64 (h + 8);
    len = nbd_get32 (h + 16);
    body = malloc (len + 1);
    assert_true (xrecv (c->fd, body, len));
    switch (type) {
    case NBD_REPLY_TYPE_NONE:
      assert_int_equal (len, 0);
      break;
    case NBD_REPLY_TYPE_OFFSET_DATA:
      assert_true (len > 8);
      r->off = nbd_get64 (body);
      r->len = len - 8;
      r->data = malloc (r->len);
      memcpy (r->data, body + 8, r->len);
      break;
    case NBD_REPLY_TYPE_ERROR:
      assert_true (len >= 6);
      r->error = nbd_get32 (body);
      assert_true (nbd_get16 (body + 4) <= len - 6);
      break;
    case NBD_REPLY_TYPE_BLOCK_STATUS:
      cli_status_chunk (r, body, len);
      break;
    default:
      fail_msg ("unexpected chunk type %u", type);
    }
    free (body);
    if (flags & NBD_REPLY_FLAG_DONE)
      return;
  }
}

/* One request, one reply: the error (0 on success). */
static uint32_t
cli_do (struct cli *c, uint16_t flags, uint16_t type, uint64_t off,
        uint32_t len, const void *data, struct reply *out)
{
  static uint64_t handle = 1000;
  struct reply r;
  uint64_t h = handle++;
  cli_cmd (c, flags, type, h, off, len, data);
  cli_reply (c, &r, type == NBD_CMD_READ ? len : 0);
  assert_true (r.handle == h);
  if (r.error == 0 && type == NBD_CMD_READ) {
    assert_int_equal (r.len, len);
    if (c->structured)
      assert_true (r.off == off);
  }
  if (out)
    *out = r;
  else
    free (r.data);
  return r.error;
}

static void
cli_close (struct cli *c)
{
  cli_cmd (c, 0, NBD_CMD_DISC, 1, 0, 0, NULL);
  assert_true (cli_closed (c->fd));
  close (c->fd);
}

/* ---- Fixture --------------------------------------------------------- */

static int
mark_first_half (void *opaque, struct fssnap_candidates *cands)
{
  (void) opaque;
  fssnap_candidates_mark (cands, 0, CAND_SIZE);
  return 0;
}

static int
listen_unix (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  snprintf (sun.sun_path, sizeof sun.sun_path, "%s", path);
  unlink (path);
  if (fd < 0 || bind (fd, (struct sockaddr *) &sun, sizeof sun) < 0
      || listen (fd, 16) < 0)
    return -1;
  return fd;
}

static int
start_server_with (struct fssnap_origin *o, const char *path,
                   unsigned max_clients, unsigned handshake_timeout,
                   struct nbd_server **sp)
{
  struct nbd_server_opts so = {
    .origin = o, .log = quiet_log, .max_clients = max_clients,
    .handshake_timeout = handshake_timeout,
  };
  int fd;
  if (nbd_server_new (&so, sp) < 0)
    return -1;
  fd = listen_unix (path);
  if (fd < 0 || nbd_server_add_listener (*sp, fd) < 0)
    return -1;
  return 0;
}

static int
start_server_on (struct fssnap_origin *o, const char *path,
                 unsigned max_clients, struct nbd_server **sp)
{
  return start_server_with (o, path, max_clients, 0, sp);
}

static int
start_server (const char *path, unsigned max_clients,
              struct nbd_server **sp)
{
  return start_server_on (origin, path, max_clients, sp);
}

static int
setup (void **state)
{
  char img[300], statedir[300], err[256];
  struct fssnap_origin_opts oo = { .path = img, .state_dir = statedir,
                                   .log = quiet_log };
  struct fssnap_create_opts co = { .candidates = mark_first_half };
  uint8_t *buf = malloc (IMG_SIZE);
  unsigned num;
  int fd;

  (void) state;
  if (!mkdtemp (tmpdir))
    return -1;
  snprintf (img, sizeof img, "%s/img", tmpdir);
  snprintf (statedir, sizeof statedir, "%s/state", tmpdir);
  snprintf (sockpath, sizeof sockpath, "%s/nbd.sock", tmpdir);
  mkdir (statedir, 0700);
  for (uint64_t i = 0; i < IMG_SIZE; i++)
    buf[i] = pat (i);
  fd = open (img, O_CREAT | O_RDWR, 0600);
  if (fd < 0 || pwrite (fd, buf, IMG_SIZE, 0) != IMG_SIZE)
    return -1;
  close (fd);
  if (fssnap_origin_open (&oo, &origin) < 0
      || fssnap_snapshot_create (origin, &co, &num, err, sizeof err) < 0
      || num != 0)
    return -1;
  memset (buf, 0xee, OVER_SIZE);
  if (fssnap_origin_write (origin, buf, OVER_SIZE, 0, 0) < 0)
    return -1;
  free (buf);
  return start_server (sockpath, 16, &server);
}

static int
teardown (void **state)
{
  char cmd[400];
  (void) state;
  nbd_server_free (server);
  fssnap_origin_close (origin);
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system (cmd);
}

/* ---- Handshake ------------------------------------------------------- */

static void
test_list (void **state)
{
  int fd = cli_connect (sockpath);
  uint8_t buf[4097];
  uint32_t type, len;
  bool vol = false, snap = false;

  (void) state;
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_LIST, NULL, 0);
  while ((type = cli_opt_reply (fd, NBD_OPT_LIST, buf, &len))
         == NBD_REP_SERVER) {
    uint32_t nl = nbd_get32 (buf);
    assert_true (nl + 4 < len);           /* a description follows */
    vol |= nl == 6 && memcmp (buf + 4, "volume", 6) == 0;
    snap |= nl == 6 && memcmp (buf + 4, "snap/0", 6) == 0;
  }
  assert_int_equal (type, NBD_REP_ACK);
  assert_true (vol && snap);
  cli_opt (fd, NBD_OPT_ABORT, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_ABORT, buf, NULL), NBD_REP_ACK);
  assert_true (cli_closed (fd));
  close (fd);
}

static void
test_info (void **state)
{
  struct cli c = { .fd = cli_connect (sockpath) };
  (void) state;
  cli_greeting (c.fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, "volume"), NBD_REP_ACK);
  assert_true (c.size == IMG_SIZE);
  assert_int_equal (c.flags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH
                    | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM
                    | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_CAN_MULTI_CONN);
  assert_string_equal (c.name, "volume");
  assert_int_equal (c.minbs, 1);
  assert_int_equal (c.prefbs, 4096);
  assert_int_equal (c.maxbs, 32u << 20);
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, ""), NBD_REP_ACK);
  assert_string_equal (c.name, "volume");
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, "snap/0"), NBD_REP_ACK);
  assert_true (c.flags & NBD_FLAG_READ_ONLY);
  assert_false (c.flags & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES));
  assert_string_equal (c.name, "snap/0");
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, "snap/7"),
                    NBD_REP_ERR_UNKNOWN);
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, "snap/00"),
                    NBD_REP_ERR_UNKNOWN);
  assert_int_equal (cli_info (&c, NBD_OPT_INFO, "bogus"),
                    NBD_REP_ERR_UNKNOWN);
  /* Still usable after all those errors. */
  assert_int_equal (cli_info (&c, NBD_OPT_GO, "snap/0"), NBD_REP_ACK);
  cli_close (&c);
}

static void
test_option_errors (void **state)
{
  int fd = cli_connect (sockpath);
  uint8_t buf[4097], bad[10] = { 0, 0, 0, 200 };
  uint8_t *big = calloc (1, 100 << 10);

  (void) state;
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, 99, "xy", 2);
  assert_int_equal (cli_opt_reply (fd, 99, buf, NULL), NBD_REP_ERR_UNSUP);
  cli_opt (fd, NBD_OPT_STARTTLS, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_STARTTLS, buf, NULL),
                    NBD_REP_ERR_UNSUP);
  cli_opt (fd, NBD_OPT_LIST, "x", 1);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_LIST, buf, NULL),
                    NBD_REP_ERR_INVALID);
  cli_opt (fd, NBD_OPT_STRUCTURED_REPLY, "x", 1);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_STRUCTURED_REPLY, buf, NULL),
                    NBD_REP_ERR_INVALID);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_SET_META_CONTEXT, "volume",
                                  "base:allocation"), NBD_REP_ERR_INVALID);
  cli_opt (fd, NBD_OPT_GO, bad, sizeof bad);      /* name length too big */
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_GO, buf, NULL),
                    NBD_REP_ERR_INVALID);
  cli_opt (fd, NBD_OPT_GO, bad, 3);               /* too short */
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_GO, buf, NULL),
                    NBD_REP_ERR_INVALID);
  cli_opt (fd, NBD_OPT_INFO, big, 100 << 10);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_INFO, buf, NULL),
                    NBD_REP_ERR_TOO_BIG);
  free (big);
  cli_opt (fd, NBD_OPT_ABORT, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_ABORT, buf, NULL), NBD_REP_ACK);
  assert_true (cli_closed (fd));
  close (fd);
}

static void
test_meta_contexts (void **state)
{
  int fd = cli_connect (sockpath);
  uint8_t buf[4097];

  (void) state;
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_STRUCTURED_REPLY, buf, NULL),
                    NBD_REP_ACK);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_LIST_META_CONTEXT, "volume",
                                  NULL), NBD_REP_ACK);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_LIST_META_CONTEXT, "volume",
                                  "base:"), NBD_REP_ACK);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_SET_META_CONTEXT, "volume",
                                  "x-other:thing"), NBD_REP_ACK);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_SET_META_CONTEXT, "nope",
                                  "base:allocation"), NBD_REP_ERR_UNKNOWN);
  assert_int_equal (cli_set_meta (fd, NBD_OPT_SET_META_CONTEXT, "",
                                  "base:allocation"), NBD_REP_ACK);
  cli_opt (fd, NBD_OPT_ABORT, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_ABORT, buf, NULL), NBD_REP_ACK);
  close (fd);
}

static void
test_dropped_handshakes (void **state)
{
  uint8_t buf[4097], h[16];
  int fd;

  (void) state;
  fd = cli_connect (sockpath);                    /* unknown client flag */
  cli_greeting (fd, 1u << 7);
  assert_true (cli_closed (fd));
  close (fd);
  fd = cli_connect (sockpath);                    /* bad option magic */
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  memset (h, 0x55, sizeof h);
  xsend (fd, h, sizeof h);
  assert_true (cli_closed (fd));
  close (fd);
  fd = cli_connect (sockpath);                    /* EXPORT_NAME unknown */
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_EXPORT_NAME, "snap/99", 7);
  assert_true (cli_closed (fd));
  close (fd);
  fd = cli_connect (sockpath);                    /* EXPORT_NAME, zeroes */
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_EXPORT_NAME, "volume", 6);
  assert_true (xrecv (fd, buf, 134));
  assert_true (nbd_get64 (buf) == IMG_SIZE);
  for (int i = 10; i < 134; i++)
    assert_int_equal (buf[i], 0);
  close (fd);
  fd = cli_connect (sockpath);                    /* gone mid-greeting */
  close (fd);
}

/* ---- Transmission ---------------------------------------------------- */

static void
check_pattern (const uint8_t *p, uint64_t off, uint32_t len)
{
  for (uint32_t i = 0; i < len; i++)
    if (p[i] != pat (off + i))
      fail_msg ("byte at %llu is 0x%02x", (unsigned long long) (off + i),
                p[i]);
}

static void
test_simple_io (void **state)
{
  struct cli c = cli_open ("volume", false, false);
  uint8_t *w = malloc (65536);
  struct reply r;

  (void) state;
  for (int i = 0; i < 65536; i++)
    w[i] = (uint8_t) (i * 13);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE, 5 * 1048576 + 100, 65536,
                            w, NULL), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 5 * 1048576 + 100, 65536,
                            NULL, &r), 0);
  assert_memory_equal (r.data, w, 65536);
  free (r.data);
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 7 << 20,
                            4096, w, NULL), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_FLUSH, 0, 0, NULL, NULL), 0);
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES,
                            7 << 20, 1000, NULL, NULL), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 7 << 20, 4096, NULL, &r), 0);
  for (int i = 0; i < 1000; i++)
    assert_int_equal (r.data[i], 0);
  assert_memory_equal (r.data + 1000, w + 1000, 4096 - 1000);
  free (r.data);
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 7 << 20,
                            65536, NULL, NULL), 0);
  /* Errors in simple replies carry no data; the stream stays in sync. */
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, IMG_SIZE - 10, 20, NULL,
                            NULL), NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 512, NULL, &r), 0);
  assert_int_equal (r.data[0], 0xee);
  free (r.data);
  free (w);
  cli_close (&c);
}

static void
test_request_errors (void **state)
{
  struct cli c = cli_open ("volume", true, false);
  uint8_t *big = calloc (1, (32u << 20) + 1), small[512] = { 0 };

  (void) state;
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, IMG_SIZE, 1, NULL, NULL),
                    NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, UINT64_MAX - 10, 512, NULL,
                            NULL), NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE, IMG_SIZE - 256, 512, small,
                            NULL), NBD_ENOSPC);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE_ZEROES, IMG_SIZE, 512, NULL,
                            NULL), NBD_ENOSPC);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_TRIM, 0, IMG_SIZE + 1, NULL,
                            NULL), NBD_ENOSPC);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, (32u << 20) + 1, NULL,
                            NULL), NBD_EINVAL);
  /* Too big a write: the payload is drained and refused. */
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE, 0, (32u << 20) + 1, big,
                            NULL), NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, 42, 0, 512, NULL, NULL), NBD_EINVAL);
  assert_int_equal (cli_do (&c, 1u << 9, NBD_CMD_READ, 0, 512, NULL, NULL),
                    NBD_EINVAL);
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 512,
                            small, NULL), NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 512, NULL, NULL),
                    NBD_EINVAL);                  /* no context selected */
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 0, NULL, NULL),
                    NBD_EINVAL);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_FLUSH, 1, 0, NULL, NULL),
                    NBD_EINVAL);
  /* And the connection still works. */
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_DF, NBD_CMD_READ, 2 << 20, 4096,
                            NULL, NULL), 0);
  free (big);
  cli_close (&c);
}

static void
test_snapshot_export (void **state)
{
  struct cli c = cli_open ("snap/0", true, true);
  uint8_t w[4096] = { 0 };
  struct reply r;

  (void) state;
  assert_true (c.flags & NBD_FLAG_READ_ONLY);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 65536, NULL, &r), 0);
  check_pattern (r.data, 0, 65536);               /* not the 0xee overwrite */
  free (r.data);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, CAND_SIZE - 100, 200, NULL,
                            &r), 0);
  check_pattern (r.data, CAND_SIZE - 100, 100);
  for (int i = 100; i < 200; i++)
    assert_int_equal (r.data[i], 0);              /* non-candidate: zeros */
  free (r.data);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE, 0, 4096, w, NULL),
                    NBD_EPERM);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_TRIM, 0, 4096, NULL, NULL),
                    NBD_EPERM);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_WRITE_ZEROES, 0, 4096, NULL, NULL),
                    NBD_EPERM);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_FLUSH, 0, 0, NULL, NULL), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, IMG_SIZE, NULL,
                            &r), 0);
  assert_int_equal (r.ndescs, 2);
  assert_int_equal (r.descs[0], CAND_SIZE);
  assert_int_equal (r.descs[1], 0);
  assert_int_equal (r.descs[2], IMG_SIZE - CAND_SIZE);
  assert_int_equal (r.descs[3], NBD_STATE_HOLE | NBD_STATE_ZERO);
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS,
                            CAND_SIZE - 512, 4096, NULL, &r), 0);
  assert_int_equal (r.ndescs, 1);
  assert_int_equal (r.descs[0], 512);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 6 << 20, 1000, NULL,
                            &r), 0);
  assert_int_equal (r.ndescs, 1);
  assert_int_equal (r.descs[0], 1000);
  assert_int_equal (r.descs[1], NBD_STATE_HOLE | NBD_STATE_ZERO);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, IMG_SIZE, 1, NULL,
                            NULL), NBD_EINVAL);
  cli_close (&c);
}

static void
test_volume_block_status (void **state)
{
  struct cli c = cli_open ("", true, true);
  struct reply r;

  (void) state;
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 4096, IMG_SIZE - 4096,
                            NULL, &r), 0);
  assert_int_equal (r.ndescs, 1);
  assert_int_equal (r.descs[0], IMG_SIZE - 4096);
  assert_int_equal (r.descs[1], 0);
  cli_close (&c);
}

/* The (length, flags) pairs of a reply chunk, as "len:flags ...". */
static const char *
descs_str (const uint32_t *descs, unsigned n)
{
  static char buf[4096];
  buf[0] = '\0';
  for (unsigned i = 0; i < n; i++)
    snprintf (buf + strlen (buf), sizeof buf - strlen (buf), "%s%u:%u",
              i ? " " : "", descs[2 * i], descs[2 * i + 1]);
  return buf;
}

/* qemu:dirty-bitmap:snap/A contexts: listed for older snapshots only,
 * selected with base:allocation, one chunk each in block status.
 */
static void
test_dirty_bitmaps (void **state)
{
  static const char *const all[] = { "qemu:" }, *const dirty[] = {
    "qemu:dirty-bitmap:" };
  struct fssnap_create_opts co = { 0 };
  char err[256], name[32], self[64], got[512], want[512];
  uint8_t w[65536], buf[4097];
  unsigned num;
  struct reply r;
  struct cli c;
  int fd;

  (void) state;
  assert_int_equal (fssnap_snapshot_create (origin, &co, &num, err,
                                            sizeof err), 0);
  memset (w, 0x5a, sizeof w);
  assert_int_equal (fssnap_origin_write (origin, w, sizeof w, 3 << 20, 0), 0);
  snprintf (name, sizeof name, "snap/%u", num);
  snprintf (self, sizeof self, "qemu:dirty-bitmap:snap/%u", num);

  fd = cli_connect (sockpath);
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_STRUCTURED_REPLY, buf, NULL),
                    NBD_REP_ACK);
  assert_int_equal (cli_meta (fd, NBD_OPT_LIST_META_CONTEXT, name, dirty, 1,
                              got, sizeof got), NBD_REP_ACK);
  assert_string_equal (got, "qemu:dirty-bitmap:snap/0");
  assert_int_equal (cli_meta (fd, NBD_OPT_LIST_META_CONTEXT, "snap/0", NULL,
                              0, got, sizeof got), NBD_REP_ACK);
  assert_string_equal (got, "base:allocation");   /* nothing older */
  assert_int_equal (cli_meta (fd, NBD_OPT_LIST_META_CONTEXT, "volume", all,
                              1, got, sizeof got), NBD_REP_ACK);
  snprintf (want, sizeof want, "qemu:dirty-bitmap:snap/0 %s", self);
  assert_string_equal (got, want);
  cli_opt (fd, NBD_OPT_ABORT, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_ABORT, buf, NULL), NBD_REP_ACK);
  close (fd);

  /* SET takes exact names only, once each, and only older snapshots. */
  {
    const char *q[] = { self, "base:allocation", "qemu:dirty-bitmap:snap/0",
                        "qemu:dirty-bitmap:", "qemu:dirty-bitmap:snap/0",
                        "qemu:dirty-bitmap:snap/99" };
    c = cli_open_meta (sockpath, name, q, 6, got, sizeof got);
  }
  assert_string_equal (got, "base:allocation qemu:dirty-bitmap:snap/0");
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 4 << 20, NULL,
                            &r), 0);
  assert_string_equal (descs_str (r.descs, r.ndescs), "4194304:0");
  assert_int_equal (r.nbm, 1);
  assert_int_equal (r.bm_id[0], NBD_META_BITMAP_ID (0));
  /* Snapshot 0 was taken before the fixture wrote the first 1 MiB. */
  assert_string_equal (descs_str (r.bm_descs[0], r.bm_n[0]),
                       "1048576:1 3145728:0");
  assert_int_equal (cli_do (&c, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS,
                            512, 2 << 20, NULL, &r), 0);
  assert_string_equal (descs_str (r.descs, r.ndescs), "2097152:0");
  assert_string_equal (descs_str (r.bm_descs[0], r.bm_n[0]), "1048064:1");
  cli_close (&c);

  /* The volume against the new snapshot: only the write after it. */
  {
    const char *q[] = { self };
    c = cli_open_meta (sockpath, "volume", q, 1, got, sizeof got);
  }
  assert_string_equal (got, self);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 2 << 20, 2 << 20,
                            NULL, &r), 0);
  assert_int_equal (r.ndescs, 0);
  assert_int_equal (r.nbm, 1);
  assert_int_equal (r.bm_id[0], NBD_META_BITMAP_ID (num));
  assert_string_equal (descs_str (r.bm_descs[0], r.bm_n[0]),
                       "1048576:0 65536:1 983040:0");
  /* Its snapshot deleted, and the number reused: never "clean". */
  assert_int_equal (fssnap_snapshot_delete (origin, num), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 4096, NULL,
                            NULL), NBD_EIO);
  assert_int_equal (fssnap_snapshot_create (origin, &co, &num, err,
                                            sizeof err), 0);
  snprintf (want, sizeof want, "qemu:dirty-bitmap:snap/%u", num);
  assert_string_equal (want, self);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 4096, NULL,
                            NULL), NBD_EIO);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 4096, NULL, NULL), 0);
  cli_close (&c);
  assert_int_equal (fssnap_snapshot_delete (origin, num), 0);
}

/* A transient snapshot lost at a restart: block status over it fails
 * (EIO) instead of reporting "clean"; after it, the maps still serve.
 */
static void
test_dirty_bitmap_untrusted (void **state)
{
  char dir[300], img[350], statedir[350], path[350], err[256], got[256];
  struct fssnap_origin_opts oo = { .path = img, .state_dir = statedir,
                                   .log = quiet_log };
  struct fssnap_create_opts co = { 0 }, tco = { .transient = true };
  struct fssnap_origin *o;
  struct nbd_server *s2;
  uint8_t w[4096];
  struct reply r;
  unsigned num;
  struct cli c;
  int fd;

  (void) state;
  snprintf (dir, sizeof dir, "%s/untrusted", tmpdir);
  snprintf (img, sizeof img, "%s/img", dir);
  snprintf (statedir, sizeof statedir, "%s/state", dir);
  snprintf (path, sizeof path, "%s/nbd.sock", dir);
  assert_int_equal (mkdir (dir, 0700), 0);
  assert_int_equal (mkdir (statedir, 0700), 0);
  fd = open (img, O_CREAT | O_RDWR, 0600);
  assert_true (fd >= 0 && ftruncate (fd, 1 << 20) == 0);
  close (fd);
  memset (w, 0x77, sizeof w);
  assert_int_equal (fssnap_origin_open (&oo, &o), 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal (fssnap_snapshot_create (o, i == 1 ? &tco : &co, &num,
                                              err, sizeof err), 0);
    assert_int_equal (fssnap_origin_write (o, w, sizeof w,
                                           (uint64_t) i << 16, 0), 0);
  }
  fssnap_origin_close (o);
  assert_int_equal (fssnap_origin_open (&oo, &o), 0);   /* 1 is gone */
  assert_int_equal (start_server_on (o, path, 0, &s2), 0);
  {
    const char *q[] = { "qemu:dirty-bitmap:snap/0" };
    c = cli_open_meta (path, "snap/2", q, 1, got, sizeof got);
  }
  assert_string_equal (got, "qemu:dirty-bitmap:snap/0");
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 1 << 20, NULL,
                            NULL), NBD_EIO);
  cli_close (&c);
  {
    const char *q[] = { "qemu:dirty-bitmap:snap/2" };
    c = cli_open_meta (path, "volume", q, 1, got, sizeof got);
  }
  assert_int_equal (cli_do (&c, 0, NBD_CMD_BLOCK_STATUS, 0, 1 << 20, NULL,
                            &r), 0);
  assert_string_equal (descs_str (r.bm_descs[0], r.bm_n[0]),
                       "131072:0 65536:1 851968:0");
  cli_close (&c);
  nbd_server_free (s2);
  fssnap_origin_close (o);
}

/* 64 requests sent before any reply is read; replies matched by handle. */
static void
test_many_in_flight (void **state)
{
  struct cli c = cli_open ("volume", true, false);
  enum { N = 64, LEN = 32768 };
  static uint8_t w[N][LEN];
  bool seen[2 * N] = { false };
  struct reply r;

  (void) state;
  for (int i = 0; i < N; i++) {
    memset (w[i], i + 1, LEN);
    cli_cmd (&c, 0, NBD_CMD_WRITE, (uint64_t) i, (2u << 20) + (uint64_t) i * LEN,
             LEN, w[i]);
  }
  for (int i = 0; i < N; i++) {
    cli_reply (&c, &r, 0);
    assert_true (r.handle < N && !seen[r.handle] && r.error == 0);
    seen[r.handle] = true;
  }
  for (int i = 0; i < N; i++)
    cli_cmd (&c, 0, NBD_CMD_READ, (uint64_t) (N + i),
             (2u << 20) + (uint64_t) i * LEN, LEN, NULL);
  for (int i = 0; i < N; i++) {
    cli_reply (&c, &r, 0);
    assert_true (r.handle >= N && r.handle < 2 * N && !seen[r.handle]);
    seen[r.handle] = true;
    assert_int_equal (r.error, 0);
    assert_memory_equal (r.data, w[r.handle - N], LEN);
    free (r.data);
  }
  cli_close (&c);
}

static void
test_bad_magic_drops_one_client (void **state)
{
  struct cli a = cli_open ("volume", true, false);
  struct cli b = cli_open ("snap/0", false, false);
  uint8_t h[NBD_REQUEST_SIZE] = { 0xde, 0xad };

  (void) state;
  xsend (a.fd, h, sizeof h);
  assert_true (cli_closed (a.fd));
  close (a.fd);
  assert_int_equal (cli_do (&b, 0, NBD_CMD_READ, 0, 4096, NULL, NULL), 0);
  cli_close (&b);
}

static void
test_client_vanishes (void **state)
{
  struct cli a = cli_open ("volume", true, false);
  struct cli b = cli_open ("volume", false, false);
  struct cli c;
  uint8_t half[4096] = { 0 };

  (void) state;
  /* A write whose payload never arrives. */
  cli_cmd (&a, 0, NBD_CMD_WRITE, 1, 0, 1u << 20, NULL);
  xsend (a.fd, half, sizeof half);
  close (a.fd);
  /* Reads in flight whose replies are never read. */
  for (int i = 0; i < 40; i++)
    cli_cmd (&b, 0, NBD_CMD_READ, (uint64_t) i, 0, 1u << 20, NULL);
  close (b.fd);
  c = cli_open ("volume", true, false);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 4096, NULL, NULL), 0);
  cli_close (&c);
}

static void
test_deleted_snapshot_reads_fail (void **state)
{
  struct fssnap_create_opts co = { 0 };
  char err[256], name[32];
  unsigned num;
  struct cli c;

  (void) state;
  assert_int_equal (fssnap_snapshot_create (origin, &co, &num, err,
                                            sizeof err), 0);
  snprintf (name, sizeof name, "snap/%u", num);
  c = cli_open (name, true, false);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 4096, NULL, NULL), 0);
  assert_int_equal (fssnap_snapshot_delete (origin, num), 0);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 4096, NULL, NULL),
                    NBD_EIO);
  cli_close (&c);
}

static void
test_max_clients (void **state)
{
  char path[300];
  struct nbd_server *s2;
  int fds[3];
  uint8_t g[18];

  (void) state;
  snprintf (path, sizeof path, "%s/two.sock", tmpdir);
  assert_int_equal (start_server (path, 2, &s2), 0);
  for (int i = 0; i < 3; i++)
    fds[i] = cli_connect (path);
  assert_true (xrecv (fds[0], g, sizeof g));
  assert_true (xrecv (fds[1], g, sizeof g));
  assert_true (cli_closed (fds[2]));
  close (fds[0]);
  close (fds[2]);
  nbd_server_free (s2);                           /* fds[1] still open */
  assert_true (cli_closed (fds[1]));
  close (fds[1]);
}

/* A client silent during the handshake is dropped after the deadline and
 * frees its place; a client with an open export may idle past it.
 */
static void
test_handshake_deadline (void **state)
{
  char path[300];
  struct nbd_server *s2;
  uint8_t g[18];
  struct reply r;

  (void) state;
  snprintf (path, sizeof path, "%s/slow.sock", tmpdir);
  assert_int_equal (start_server_with (origin, path, 1, 1, &s2), 0);
  int silent = cli_connect (path);
  assert_true (xrecv (silent, g, sizeof g));       /* greeting, then nothing */
  sleep (2);
  assert_true (cli_closed (silent));
  close (silent);
  struct cli c = cli_open_at (path, "volume", false, false);   /* its place */
  sleep (2);
  assert_int_equal (cli_do (&c, 0, NBD_CMD_READ, 0, 512, NULL, &r), 0);
  assert_int_equal (r.data[0], 0xee);
  free (r.data);
  cli_close (&c);
  nbd_server_free (s2);
}

/* The handshake deadline covers the TLS handshake: a client that
 * trickles a ClientHello, a byte at a time (so that no single receive
 * waits long), is still dropped once the deadline has passed.
 */
static void
test_tls_handshake_deadline (void **state)
{
  char path[300], psk[300], err[256];
  struct tls_config cfg = { .psk_file = psk };
  struct tls_creds *creds;
  struct nbd_server *s2;
  struct nbd_server_opts so = { .origin = origin, .log = quiet_log,
                                .handshake_timeout = 1 };
  uint8_t buf[4097];
  const uint8_t hello[] = { 0x16, 0x03, 0x01, 0x40, 0x00, 0x01 };
  bool dropped = false;
  int fd, i;
  FILE *f;

  (void) state;
  snprintf (psk, sizeof psk, "%s/keys.psk", tmpdir);
  f = fopen (psk, "w");
  assert_non_null (f);
  fputs ("alice:00112233445566778899aabbccddeeff\n", f);
  fclose (f);
  assert_int_equal (tls_creds_load (&cfg, &creds, err, sizeof err), 0);
  so.tls_creds = creds;
  snprintf (path, sizeof path, "%s/tls.sock", tmpdir);
  assert_int_equal (nbd_server_new (&so, &s2), 0);
  fd = listen_unix (path);
  assert_int_equal (nbd_server_add_listener_tls (s2, fd, NBD_TLS_REQUIRE), 0);

  fd = cli_connect (path);
  cli_greeting (fd, NBD_FLAG_C_FIXED_NEWSTYLE);
  cli_opt (fd, NBD_OPT_LIST, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_LIST, buf, NULL),
                    NBD_REP_ERR_TLS_REQD);
  cli_opt (fd, NBD_OPT_STARTTLS, NULL, 0);
  assert_int_equal (cli_opt_reply (fd, NBD_OPT_STARTTLS, buf, NULL),
                    NBD_REP_ACK);
  /* A 16 KiB record announced, then 6 s of bytes 0.1 s apart. */
  for (i = 0; i < 60 && !dropped; i++) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    uint8_t b = i < (int) sizeof hello ? hello[i] : 0;
    dropped = send (fd, &b, 1, MSG_NOSIGNAL) != 1
              || (poll (&p, 1, 100) == 1 && recv (fd, buf, 1, 0) <= 0);
  }
  assert_true (dropped);
  close (fd);
  nbd_server_free (s2);
  tls_creds_free (creds);
}

static void
test_stop_with_clients (void **state)
{
  char path[300];
  struct nbd_server *s2;
  struct cli c;
  uint8_t g[18];
  int idle;

  (void) state;
  snprintf (path, sizeof path, "%s/stop.sock", tmpdir);
  assert_int_equal (start_server (path, 0, &s2), 0);
  idle = cli_connect (path);                      /* silent in handshake */
  c = cli_open_at (path, "volume", true, false);
  nbd_server_stop (s2);
  assert_true (cli_closed (c.fd));
  assert_true (xrecv (idle, g, sizeof g));
  assert_true (cli_closed (idle));
  close (c.fd);
  close (idle);
  nbd_server_free (s2);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_list),
    cmocka_unit_test (test_info),
    cmocka_unit_test (test_option_errors),
    cmocka_unit_test (test_meta_contexts),
    cmocka_unit_test (test_dropped_handshakes),
    cmocka_unit_test (test_simple_io),
    cmocka_unit_test (test_request_errors),
    cmocka_unit_test (test_snapshot_export),
    cmocka_unit_test (test_volume_block_status),
    cmocka_unit_test (test_dirty_bitmaps),
    cmocka_unit_test (test_dirty_bitmap_untrusted),
    cmocka_unit_test (test_many_in_flight),
    cmocka_unit_test (test_bad_magic_drops_one_client),
    cmocka_unit_test (test_client_vanishes),
    cmocka_unit_test (test_deleted_snapshot_reads_fail),
    cmocka_unit_test (test_max_clients),
    cmocka_unit_test (test_handshake_deadline),
    cmocka_unit_test (test_tls_handshake_deadline),
    cmocka_unit_test (test_stop_with_clients),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
