/* SPDX-License-Identifier: MIT */
/*
 * Transmission phase of one connection.  The connection's thread reads
 * requests (and write payloads), checks them, and queues them; a small
 * pool of workers runs them against the export and sends the replies, so
 * several requests are in flight and replies may come out of order, as
 * the protocol allows.  The queue is bounded by NBD_MAX_INFLIGHT requests
 * and NBD_INFLIGHT_BYTES of payload, so a fast client cannot make the
 * server buffer without limit: the reader waits for room.
 *
 * A request that fails its checks is answered by the reader at once.  A
 * broken stream (bad magic, end of stream, a failed send) ends the
 * reader; NBD_CMD_DISC too.  Either way the workers finish what is
 * queued (sending replies while the peer still listens) and are joined,
 * and every buffer is freed.
 *
 * Locks: conn->lock guards the queue and the budget (reader and workers);
 * conn->send_lock is taken inside nbd_reply_* only, never with conn->lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "nbd/internal.h"

#define NBD_DEFAULT_WORKERS 16
#define NBD_MAX_WORKERS     64
#define NBD_MAX_INFLIGHT    32
#define NBD_INFLIGHT_BYTES  (64u << 20)

struct nbd_request {
  struct nbd_request *next;
  uint16_t flags, type;
  uint64_t handle, offset;
  uint32_t length;
  void *data;                   /* write payload */
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
  void *buf = malloc (r->length);
  int e;

  if (!buf)
    return nbd_reply_error (c, r->handle, -ENOMEM, "read");
  e = nbd_export_read (&c->s->exp, buf, r->length, r->offset);
  if (e < 0)
    e = nbd_reply_error (c, r->handle, e, "read");
  else
    e = nbd_reply_read (c, r->handle, r->offset, buf, r->length);
  free (buf);
  return e;
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

/* Worker thread: run queued requests until the queue is empty and the
 * connection is closing.  Takes conn->lock around queue operations.
 */
static void *
nbd_worker (void *opaque)
{
  struct nbd_conn *c = opaque;
  struct nbd_request *r;

  for (;;) {
    pthread_mutex_lock (&c->lock);
    while (!c->head && !c->closing)
      pthread_cond_wait (&c->work_cv, &c->lock);
    r = c->head;
    if (r) {
      c->head = r->next;
      if (!c->head)
        c->tail = NULL;
    }
    pthread_mutex_unlock (&c->lock);
    if (!r)
      return NULL;
    nbd_run (c, r);
    pthread_mutex_lock (&c->lock);
    c->inflight--;
    c->inflight_bytes -= nbd_request_bytes (r);
    pthread_cond_signal (&c->room_cv);
    pthread_mutex_unlock (&c->lock);
    free (r->data);
    free (r);
  }
}

/* Wait until the request fits the in-flight budget, then count it.  One
 * request always fits when nothing else is in flight.  Takes conn->lock.
 */
static void
nbd_reserve (struct nbd_conn *c, uint32_t bytes)
{
  pthread_mutex_lock (&c->lock);
  while (c->inflight > 0
         && (c->inflight >= NBD_MAX_INFLIGHT
             || c->inflight_bytes + bytes > NBD_INFLIGHT_BYTES))
    pthread_cond_wait (&c->room_cv, &c->lock);
  c->inflight++;
  c->inflight_bytes += bytes;
  pthread_mutex_unlock (&c->lock);
}

/* Undo nbd_reserve for a request that will not be queued.  Takes
 * conn->lock.
 */
static void
nbd_unreserve (struct nbd_conn *c, uint32_t bytes)
{
  pthread_mutex_lock (&c->lock);
  c->inflight--;
  c->inflight_bytes -= bytes;
  pthread_cond_signal (&c->room_cv);
  pthread_mutex_unlock (&c->lock);
}

/* Queue a reserved request for the workers.  Takes conn->lock. */
static void
nbd_enqueue (struct nbd_conn *c, struct nbd_request *r)
{
  pthread_mutex_lock (&c->lock);
  if (c->tail)
    c->tail->next = r;
  else
    c->head = r;
  c->tail = r;
  pthread_cond_signal (&c->work_cv);
  pthread_mutex_unlock (&c->lock);
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

/* Read a write's payload, or drain it if the request is refused.
 * 0: go on (*err says whether to refuse); negative: the stream is broken.
 */
static int
nbd_read_payload (struct nbd_conn *c, struct nbd_request *r, int *err)
{
  if (r->type != NBD_CMD_WRITE)
    return 0;
  if (*err == 0) {
    r->data = malloc (r->length);
    if (!r->data)
      *err = -ENOMEM;
  }
  if (*err < 0)
    return nbd_recv_discard (c->s->t, r->length);
  return nbd_recv_all (c->s->t, r->data, r->length);
}

/* Read, check and queue one request.  Returns 1 to go on, 0 at
 * NBD_CMD_DISC, negative errno when the stream is broken.
 */
static int
nbd_read_request (struct nbd_conn *c)
{
  uint8_t h[NBD_REQUEST_SIZE];
  struct nbd_request *r;
  const char *what = "";
  uint32_t bytes;
  int err, e;

  e = nbd_recv_all (c->s->t, h, sizeof h);
  if (e < 0)
    return e;
  if (nbd_get32 (h) != NBD_REQUEST_MAGIC) {
    nbd_log (c->s->env, FSSNAP_LOG_INFO,
             "nbd: bad request magic 0x%08x, dropping client",
             nbd_get32 (h));
    return -EPROTO;
  }
  r = calloc (1, sizeof *r);
  if (!r)
    return -ENOMEM;
  nbd_parse_request (h, r);
  if (r->type == NBD_CMD_DISC) {
    free (r);
    return 0;
  }
  err = nbd_request_check (c->s, r, &what);
  bytes = err == 0 ? nbd_request_bytes (r) : 0;
  nbd_reserve (c, bytes);
  e = nbd_read_payload (c, r, &err);
  if (e == 0 && err == 0) {
    nbd_enqueue (c, r);
    return 1;
  }
  nbd_unreserve (c, bytes);
  if (e == 0) {
    nbd_log (c->s->env, FSSNAP_LOG_DEBUG, "nbd: request %u refused: %s",
             r->type, what);
    e = nbd_reply_error (c, r->handle, err, what);
  }
  free (r->data);
  free (r);
  return e < 0 ? e : 1;
}

static unsigned
nbd_worker_count (const struct nbd_env *env)
{
  if (env->workers == 0)
    return NBD_DEFAULT_WORKERS;
  return env->workers < NBD_MAX_WORKERS ? env->workers : NBD_MAX_WORKERS;
}

/* Tell the workers to finish the queue and exit.  Takes conn->lock. */
static void
nbd_close_queue (struct nbd_conn *c)
{
  pthread_mutex_lock (&c->lock);
  c->closing = true;
  pthread_cond_broadcast (&c->work_cv);
  pthread_mutex_unlock (&c->lock);
}

void
nbd_transmission (struct nbd_session *s)
{
  struct nbd_conn c = { .s = s };
  pthread_t workers[NBD_MAX_WORKERS];
  unsigned n = 0, want = nbd_worker_count (s->env), i;
  int r = 1;

  pthread_mutex_init (&c.send_lock, NULL);
  pthread_mutex_init (&c.lock, NULL);
  pthread_cond_init (&c.work_cv, NULL);
  pthread_cond_init (&c.room_cv, NULL);
  while (n < want && pthread_create (&workers[n], NULL, nbd_worker, &c) == 0)
    n++;
  if (n == 0) {
    nbd_log (s->env, FSSNAP_LOG_ERR, "nbd: cannot start a worker thread");
    r = -EAGAIN;
  }
  while (r > 0)
    r = nbd_read_request (&c);
  nbd_close_queue (&c);
  for (i = 0; i < n; i++)
    pthread_join (workers[i], NULL);
  pthread_cond_destroy (&c.room_cv);
  pthread_cond_destroy (&c.work_cv);
  pthread_mutex_destroy (&c.lock);
  pthread_mutex_destroy (&c.send_lock);
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
