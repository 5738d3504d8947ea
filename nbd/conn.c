/* SPDX-License-Identifier: MIT */
/*
 * Transmission phase of one connection.  A pool of workers (the
 * connection's own thread is one of them) take turns at the stream: the
 * worker holding conn->recv_lock reads one request (and its payload),
 * checks it, lets go of the stream for the next worker, runs the request
 * against the export and sends its reply.  So several requests are in
 * flight and replies may come out of order, as the protocol allows, and
 * a request is read, run and answered by one thread: no hand-off from a
 * reader to a worker, no queue, and buffers freed by the thread that took
 * them.  Requests in flight are bounded by the workers and their payloads
 * by NBD_INFLIGHT_BYTES: the worker at the stream waits for room before
 * taking a payload, so a fast client cannot make the server buffer
 * without limit.
 *
 * The stream is read through a read-ahead buffer (conn->rbuf): a recv
 * takes whatever the client has sent, often several requests, and the
 * next workers parse them without a system call.  Payloads too big for
 * the buffer are received in place.
 *
 * A request that fails its checks is answered at once by the worker that
 * read it.  A broken stream (bad magic, end of stream, a failed send) or
 * NBD_CMD_DISC marks the stream done: every worker finishes the request it
 * holds (sending its reply while the peer still listens) and exits, and
 * the connection's thread joins the others.
 *
 * Locks: conn->recv_lock guards the stream, the read-ahead buffer and
 * done; conn->lock the payload budget, taken under recv_lock (the worker
 * at the stream waits for room) and alone (a worker gives room back);
 * conn->send_lock is taken inside nbd_reply_* only, never with conn->lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"

#define NBD_DEFAULT_WORKERS 16
#define NBD_MAX_WORKERS     64
#define NBD_INFLIGHT_BYTES  (64u << 20)
#define NBD_RBUF_SIZE       (128u << 10)  /* read-ahead buffer */
#define NBD_KEEP_BUF_SIZE   (128u << 10)  /* payload buffer a worker keeps */

struct nbd_request {
  uint16_t flags, type;
  uint64_t handle, offset;
  uint32_t length;
  void *data;                   /* read or write payload */
};

/* One worker: its thread and the payload buffer it reuses. */
struct nbd_worker {
  struct nbd_conn *c;
  pthread_t thread;
  void *buf;                    /* NBD_KEEP_BUF_SIZE bytes, or NULL */
};

/* Bytes of payload this request holds while in flight. */
static uint32_t
nbd_request_bytes (const struct nbd_request *r)
{
  return r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE ? r->length : 0;
}

/* Validate a request against the export and what was negotiated: 0, or
 * the negative errno to reply with.  what names the failed check.
 */
static int
nbd_request_check (const struct nbd_session *s, const struct nbd_request *r,
                   const char **what)
{
  uint16_t allowed = NBD_CMD_FLAG_FUA;
  bool writes = false, payload = false;
  uint64_t size = s->exp.size;

  switch (r->type) {
  case NBD_CMD_READ:
    payload = true;
    if (s->structured)
      allowed |= NBD_CMD_FLAG_DF;
    break;
  case NBD_CMD_WRITE:
    payload = writes = true;
    break;
  case NBD_CMD_TRIM:
    writes = true;
    break;
  case NBD_CMD_WRITE_ZEROES:
    writes = true;
    allowed |= NBD_CMD_FLAG_NO_HOLE;
    break;
  case NBD_CMD_FLUSH:
    *what = "flush with an offset or a length";
    return r->offset || r->length ? -EINVAL : 0;
  case NBD_CMD_BLOCK_STATUS:
    allowed |= NBD_CMD_FLAG_REQ_ONE;
    *what = "block status without a metadata context";
    if (!s->meta && s->nbitmaps == 0)
      return -EINVAL;
    break;
  default:
    *what = "unknown command";
    return -EINVAL;
  }
  *what = "unknown command flags";
  if (r->flags & ~allowed)
    return -EINVAL;
  *what = "read-only export";
  if (writes && nbd_export_readonly (&s->exp))
    return -EPERM;
  *what = "zero length";
  if (r->length == 0)
    return -EINVAL;
  *what = "request over 32 MiB";
  if (payload && r->length > NBD_MAX_PAYLOAD)
    return -EINVAL;
  *what = "beyond the end of the export";
  if (r->offset > size || r->length > size - r->offset)
    return writes ? -ENOSPC : -EINVAL;
  return 0;
}

static int
nbd_run_read (struct nbd_conn *c, struct nbd_request *r)
{
  int e = nbd_export_read (&c->s->exp, r->data, r->length, r->offset);

  if (e < 0)
    return nbd_reply_error (c, r->handle, e, "read");
  return nbd_reply_read (c, r->handle, r->offset, r->data, r->length);
}

/* Fill chunk i of a block status reply with the extents of context
 * number i (base:allocation first if selected, then the dirty bitmaps).
 */
static int
nbd_status_context (struct nbd_conn *c, struct nbd_request *r, unsigned i,
                    uint32_t *descs, struct nbd_status_chunk *chunk,
                    char *errmsg, size_t errlen)
{
  struct nbd_session *s = c->s;
  unsigned max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : NBD_MAX_EXTENTS;
  const struct nbd_bitmap *bm;
  int n;

  chunk->descs = descs;
  if (s->meta && i == 0) {
    chunk->id = NBD_META_ID;
    snprintf (errmsg, errlen, "block status");
    n = nbd_export_extents (&s->exp, r->offset, r->length, descs, max);
  } else {
    bm = &s->bitmaps[i - s->meta];
    chunk->id = NBD_META_BITMAP_ID (bm->num);
    n = nbd_export_changes (&s->exp, bm, r->offset, r->length, descs, max,
                            errmsg, errlen);
  }
  chunk->n = n > 0 ? (unsigned) n : 0;
  return n < 0 ? n : 0;
}

/* Every context is asked before anything is sent, so that a context that
 * fails makes the whole reply an error, never a partial "clean".
 */
static int
nbd_run_block_status (struct nbd_conn *c, struct nbd_request *r)
{
  unsigned nctx = c->s->meta + c->s->nbitmaps, i;
  uint32_t *descs = malloc ((size_t) nctx * 2 * NBD_MAX_EXTENTS
                            * sizeof *descs);
  struct nbd_status_chunk *chunks = calloc (nctx, sizeof *chunks);
  char what[256] = "block status";
  int e = descs && chunks ? 0 : -ENOMEM;

  for (i = 0; e == 0 && i < nctx; i++)
    e = nbd_status_context (c, r, i, descs + (size_t) i * 2 * NBD_MAX_EXTENTS,
                            &chunks[i], what, sizeof what);
  if (e < 0)
    e = nbd_reply_error (c, r->handle, e, what);
  else
    e = nbd_reply_block_status (c, r->handle, chunks, nctx);
  free (chunks);
  free (descs);
  return e;
}

/* Run one checked request and send its reply. */
static void
nbd_run (struct nbd_conn *c, struct nbd_request *r)
{
  struct nbd_export *exp = &c->s->exp;
  bool fua = r->flags & NBD_CMD_FLAG_FUA;
  int e = 0;
  const char *what = "";

  switch (r->type) {
  case NBD_CMD_READ:
    nbd_run_read (c, r);
    return;
  case NBD_CMD_BLOCK_STATUS:
    nbd_run_block_status (c, r);
    return;
  case NBD_CMD_WRITE:
    what = "write";
    e = nbd_export_write (exp, r->data, r->length, r->offset, fua);
    break;
  case NBD_CMD_WRITE_ZEROES:
    what = "write zeroes";
    e = nbd_export_zero (exp, r->length, r->offset, fua,
                         r->flags & NBD_CMD_FLAG_NO_HOLE);
    break;
  case NBD_CMD_TRIM:
    what = "trim";
    e = nbd_export_trim (exp, r->length, r->offset, fua);
    break;
  case NBD_CMD_FLUSH:
    what = "flush";
    e = nbd_export_flush (exp);
    break;
  }
  if (e < 0)
    nbd_reply_error (c, r->handle, e, what);
  else
    nbd_reply_ok (c, r->handle);
}

/* A buffer for len bytes of payload: the worker's own up to
 * NBD_KEEP_BUF_SIZE, else one of its own.  NULL when out of memory.
 */
static void *
nbd_buf_get (struct nbd_worker *w, uint32_t len)
{
  if (len > NBD_KEEP_BUF_SIZE)
    return malloc (len);
  if (!w->buf)
    w->buf = malloc (NBD_KEEP_BUF_SIZE);
  return w->buf;
}

static void
nbd_buf_put (struct nbd_worker *w, void *buf)
{
  if (buf != w->buf)
    free (buf);
}

/* Wait until a payload of bytes fits the budget, then count it.  One
 * always fits when no other is in flight.  Takes conn->lock (under
 * conn->recv_lock).
 */
static void
nbd_reserve (struct nbd_conn *c, uint32_t bytes)
{
  if (bytes == 0)
    return;
  pthread_mutex_lock (&c->lock);
  while (c->inflight_bytes > 0
         && c->inflight_bytes + bytes > NBD_INFLIGHT_BYTES)
    pthread_cond_wait (&c->room_cv, &c->lock);
  c->inflight_bytes += bytes;
  pthread_mutex_unlock (&c->lock);
}

/* Give a payload's budget back.  Takes conn->lock. */
static void
nbd_unreserve (struct nbd_conn *c, uint32_t bytes)
{
  if (bytes == 0)
    return;
  pthread_mutex_lock (&c->lock);
  c->inflight_bytes -= bytes;
  pthread_cond_signal (&c->room_cv);
  pthread_mutex_unlock (&c->lock);
}

/* Receive exactly len bytes of the stream into dst (NULL: drop them),
 * through the read-ahead buffer.  Caller holds conn->recv_lock.
 */
static int
nbd_conn_recv (struct nbd_conn *c, void *dst, uint64_t len)
{
  const struct nbd_transport *t = c->s->t;
  uint8_t *p = dst;

  while (len > 0) {
    if (c->rpos == c->rlen) {
      if (p && len >= NBD_RBUF_SIZE)
        return nbd_recv_all (t, p, (size_t) len);
      ssize_t n = t->recv (t->opaque, c->rbuf, NBD_RBUF_SIZE);
      if (n == -EINTR)
        continue;
      if (n <= 0)
        return n < 0 ? (int) n : -ECONNRESET;
      c->rpos = 0;
      c->rlen = (size_t) n;
    }
    size_t k = c->rlen - c->rpos;
    if (k > len)
      k = (size_t) len;
    if (p) {
      memcpy (p, c->rbuf + c->rpos, k);
      p += k;
    }
    c->rpos += k;
    len -= k;
  }
  return 0;
}

static void
nbd_parse_request (const uint8_t *h, struct nbd_request *r)
{
  r->flags = nbd_get16 (h + 4);
  r->type = nbd_get16 (h + 6);
  r->handle = nbd_get64 (h + 8);
  r->offset = nbd_get64 (h + 16);
  r->length = nbd_get32 (h + 24);
}

/* Take the budget and a buffer for a checked request, and receive a
 * write's payload; a refused write's payload is dropped.  0: go on (*err
 * says whether to refuse); negative: the stream is broken.  Caller holds
 * conn->recv_lock.
 */
static int
nbd_take_payload (struct nbd_worker *w, struct nbd_request *r, int *err)
{
  struct nbd_conn *c = w->c;
  uint32_t bytes = *err == 0 ? nbd_request_bytes (r) : 0;

  if (bytes > 0) {
    nbd_reserve (c, bytes);
    r->data = nbd_buf_get (w, bytes);
    if (!r->data) {
      nbd_unreserve (c, bytes);
      *err = -ENOMEM;
    }
  }
  if (r->type != NBD_CMD_WRITE)
    return 0;
  int e = nbd_conn_recv (c, *err < 0 ? NULL : r->data, r->length);
  if (e < 0 && r->data) {
    nbd_buf_put (w, r->data);
    r->data = NULL;
    nbd_unreserve (c, bytes);
  }
  return e;
}

/* Read requests until one is to be run (answering those refused).
 * Returns 1 with *r to run, 0 at NBD_CMD_DISC, negative errno when the
 * stream is broken.  Caller holds conn->recv_lock.
 */
static int
nbd_read_request (struct nbd_worker *w, struct nbd_request *r)
{
  struct nbd_conn *c = w->c;
  uint8_t h[NBD_REQUEST_SIZE];
  const char *what = "";
  int err, e;

  for (;;) {
    e = nbd_conn_recv (c, h, sizeof h);
    if (e < 0)
      return e;
    if (nbd_get32 (h) != NBD_REQUEST_MAGIC) {
      nbd_log (c->s->env, FSSNAP_LOG_INFO,
               "nbd: bad request magic 0x%08x, dropping client",
               nbd_get32 (h));
      return -EPROTO;
    }
    *r = (struct nbd_request) { 0 };
    nbd_parse_request (h, r);
    if (r->type == NBD_CMD_DISC)
      return 0;
    err = nbd_request_check (c->s, r, &what);
    e = nbd_take_payload (w, r, &err);
    if (e < 0)
      return e;
    if (err == 0)
      return 1;
    nbd_log (c->s->env, FSSNAP_LOG_DEBUG, "nbd: request %u refused: %s",
             r->type, what);
    e = nbd_reply_error (c, r->handle, err, what);
    if (e < 0)
      return e;
  }
}

/* Worker: take the stream, read a request, let go of the stream, run the
 * request and answer it; until the stream is done.  Takes
 * conn->recv_lock around reading, conn->lock to give room back.
 */
static void *
nbd_worker (void *opaque)
{
  struct nbd_worker *w = opaque;
  struct nbd_conn *c = w->c;
  struct nbd_request r;
  int e;

  for (;;) {
    pthread_mutex_lock (&c->recv_lock);
    e = c->done ? 0 : nbd_read_request (w, &r);
    if (e <= 0)
      c->done = true;
    pthread_mutex_unlock (&c->recv_lock);
    if (e <= 0)
      break;
    nbd_run (c, &r);
    if (r.data) {
      nbd_buf_put (w, r.data);
      nbd_unreserve (c, nbd_request_bytes (&r));
    }
  }
  free (w->buf);
  w->buf = NULL;
  return NULL;
}

static unsigned
nbd_worker_count (const struct nbd_env *env)
{
  if (env->workers == 0)
    return NBD_DEFAULT_WORKERS;
  return env->workers < NBD_MAX_WORKERS ? env->workers : NBD_MAX_WORKERS;
}

void
nbd_transmission (struct nbd_session *s)
{
  struct nbd_conn c = { .s = s };
  struct nbd_worker workers[NBD_MAX_WORKERS];
  unsigned n = 1, want = nbd_worker_count (s->env), i;

  c.rbuf = malloc (NBD_RBUF_SIZE);
  if (!c.rbuf) {
    nbd_log (s->env, FSSNAP_LOG_ERR, "nbd: out of memory for a client");
    return;
  }
  pthread_mutex_init (&c.send_lock, NULL);
  pthread_mutex_init (&c.recv_lock, NULL);
  pthread_mutex_init (&c.lock, NULL);
  pthread_cond_init (&c.room_cv, NULL);
  for (i = 0; i < want; i++)
    workers[i] = (struct nbd_worker) { .c = &c };
  /* This thread is worker 0; fewer workers than wanted still work. */
  while (n < want
         && pthread_create (&workers[n].thread, NULL, nbd_worker,
                            &workers[n]) == 0)
    n++;
  nbd_worker (&workers[0]);
  for (i = 1; i < n; i++)
    pthread_join (workers[i].thread, NULL);
  pthread_cond_destroy (&c.room_cv);
  pthread_mutex_destroy (&c.lock);
  pthread_mutex_destroy (&c.recv_lock);
  pthread_mutex_destroy (&c.send_lock);
  free (c.rbuf);
}

/* A client that connects and never chooses an export must not hold one of
 * the server's places for ever: the handshake has a deadline (the TLS
 * handshake within it too); once an export is open the client may stay
 * idle as long as it likes.
 */
void
nbd_session_run (const struct nbd_env *env, const struct nbd_transport *t)
{
  struct nbd_session s = { .env = env, .t = t };
  bool deadline = t->set_timeout && env->handshake_timeout;
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  if (env->handshake_timeout)
    s.handshake_end = now.tv_sec + env->handshake_timeout;

  if (deadline)
    t->set_timeout (t->opaque, env->handshake_timeout);
  int r = nbd_handshake (&s);
  if (deadline)
    t->set_timeout (t->opaque, 0);
  bool counted = r == 1 && s.exp.kind == NBD_EXPORT_VOLUME
                 && env->volume_sessions;
  if (counted)
    atomic_fetch_add (env->volume_sessions, 1);
  if (r == 1)
    nbd_transmission (&s);
  if (counted)
    atomic_fetch_sub (env->volume_sessions, 1);
  if (s.have_export)
    nbd_export_close (&s.exp);
  tls_session_free (s.tls);
}
