/* SPDX-License-Identifier: MIT */
/*
 * Replies of the transmission phase.  Without structured replies every
 * reply is simple (a read's data follows its header; a failed read sends
 * no data).  With them every reply is structured: a read is one
 * OFFSET_DATA chunk, block status one BLOCK_STATUS chunk, success without
 * data a NONE chunk, an error one ERROR chunk carrying a message; each of
 * these is the final chunk (NBD_REPLY_FLAG_DONE).  Block status is one
 * BLOCK_STATUS chunk per selected metadata context, the last one final.
 *
 * Locks: every nbd_reply_* takes conn->send_lock for the whole reply so
 * that replies from several workers never interleave on the wire.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "nbd/internal.h"

uint32_t
nbd_errno_to_nbd (int err)
{
  switch (err < 0 ? -err : err) {
  case EPERM: case EROFS: return NBD_EPERM;
  case EIO: return NBD_EIO;
  case ENOMEM: return NBD_ENOMEM;
  case EINVAL: return NBD_EINVAL;
  case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
  case EOVERFLOW: return NBD_EOVERFLOW;
  case ENOTSUP: return NBD_ENOTSUP;
  case ESHUTDOWN: return NBD_ESHUTDOWN;
  default: return NBD_EIO;
  }
}

/* Send head then body as one message; conn->send_lock is held. */
static int
nbd_send_locked (struct nbd_conn *c, const void *head, size_t headlen,
                 const void *body, size_t bodylen)
{
  const struct nbd_transport *t = c->s->t;
  int r;

  if (c->send_failed)
    return -EPIPE;
  r = nbd_send_all (t, head, headlen, bodylen > 0);
  if (r == 0 && bodylen > 0)
    r = nbd_send_all (t, body, bodylen, false);
  if (r < 0) {
    c->send_failed = true;
    if (t->shutdown)
      t->shutdown (t->opaque);
  }
  return r;
}

/* Send head then body as one message.  Takes conn->send_lock. */
static int
nbd_send_message (struct nbd_conn *c, const void *head, size_t headlen,
                  const void *body, size_t bodylen)
{
  int r;

  pthread_mutex_lock (&c->send_lock);
  r = nbd_send_locked (c, head, headlen, body, bodylen);
  pthread_mutex_unlock (&c->send_lock);
  return r;
}

static void
nbd_put_simple (uint8_t *h, uint32_t error, uint64_t handle)
{
  nbd_put32 (h, NBD_SIMPLE_REPLY_MAGIC);
  nbd_put32 (h + 4, error);
  nbd_put64 (h + 8, handle);
}

static void
nbd_put_chunk (uint8_t *h, uint16_t flags, uint16_t type, uint64_t handle,
               uint32_t len)
{
  nbd_put32 (h, NBD_STRUCTURED_REPLY_MAGIC);
  nbd_put16 (h + 4, flags);
  nbd_put16 (h + 6, type);
  nbd_put64 (h + 8, handle);
  nbd_put32 (h + 16, len);
}

int
nbd_reply_ok (struct nbd_conn *c, uint64_t handle)
{
  uint8_t h[NBD_CHUNK_HEADER_SIZE];

  if (!c->s->structured) {
    nbd_put_simple (h, 0, handle);
    return nbd_send_message (c, h, NBD_SIMPLE_REPLY_SIZE, NULL, 0);
  }
  nbd_put_chunk (h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0);
  return nbd_send_message (c, h, sizeof h, NULL, 0);
}

int
nbd_reply_error (struct nbd_conn *c, uint64_t handle, int err,
                 const char *what)
{
  uint8_t h[NBD_CHUNK_HEADER_SIZE + 6 + 200];
  uint32_t nbderr = nbd_errno_to_nbd (err);
  int msglen;

  if (!c->s->structured) {
    nbd_put_simple (h, nbderr, handle);
    return nbd_send_message (c, h, NBD_SIMPLE_REPLY_SIZE, NULL, 0);
  }
  msglen = snprintf ((char *) h + NBD_CHUNK_HEADER_SIZE + 6, 200, "%s: %s",
                     what, strerror (err < 0 ? -err : err));
  if (msglen < 0)
    msglen = 0;
  if (msglen > 199)
    msglen = 199;
  nbd_put_chunk (h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handle,
                 6 + (uint32_t) msglen);
  nbd_put32 (h + NBD_CHUNK_HEADER_SIZE, nbderr);
  nbd_put16 (h + NBD_CHUNK_HEADER_SIZE + 4, (uint16_t) msglen);
  return nbd_send_message (c, h, NBD_CHUNK_HEADER_SIZE + 6 + (size_t) msglen,
                           NULL, 0);
}

int
nbd_reply_read (struct nbd_conn *c, uint64_t handle, uint64_t off,
                const void *data, uint32_t len)
{
  uint8_t h[NBD_CHUNK_HEADER_SIZE + 8];

  if (!c->s->structured) {
    nbd_put_simple (h, 0, handle);
    return nbd_send_message (c, h, NBD_SIMPLE_REPLY_SIZE, data, len);
  }
  nbd_put_chunk (h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, handle,
                 8 + len);
  nbd_put64 (h + NBD_CHUNK_HEADER_SIZE, off);
  return nbd_send_message (c, h, sizeof h, data, len);
}

/* One BLOCK_STATUS chunk; conn->send_lock is held. */
static int
nbd_send_status_chunk (struct nbd_conn *c, uint64_t handle,
                       const struct nbd_status_chunk *chunk, bool last)
{
  uint8_t h[NBD_CHUNK_HEADER_SIZE + 4];
  uint8_t body[8 * NBD_MAX_EXTENTS];
  unsigned i, n = chunk->n < NBD_MAX_EXTENTS ? chunk->n : NBD_MAX_EXTENTS;

  for (i = 0; i < 2 * n; i++)
    nbd_put32 (body + 4 * i, chunk->descs[i]);
  nbd_put_chunk (h, last ? NBD_REPLY_FLAG_DONE : 0,
                 NBD_REPLY_TYPE_BLOCK_STATUS, handle, 4 + 8 * n);
  nbd_put32 (h + NBD_CHUNK_HEADER_SIZE, chunk->id);
  return nbd_send_locked (c, h, sizeof h, body, 8 * n);
}

/* Takes conn->send_lock once for all the chunks. */
int
nbd_reply_block_status (struct nbd_conn *c, uint64_t handle,
                        const struct nbd_status_chunk *chunks,
                        unsigned nchunks)
{
  unsigned i;
  int r = 0;

  pthread_mutex_lock (&c->send_lock);
  for (i = 0; r == 0 && i < nchunks; i++)
    r = nbd_send_status_chunk (c, handle, &chunks[i], i + 1 == nchunks);
  pthread_mutex_unlock (&c->send_lock);
  return r;
}
