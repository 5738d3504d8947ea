/* SPDX-License-Identifier: MIT */
/*
 * Copy buffers: the memory a chunk's old contents are read into before a
 * store writer puts them in the store.  A buffer is a whole chunk, aligned
 * and zero-padded for O_DIRECT (store_buf_alloc); once its copy is in the
 * store it goes back on a free list, up to a quarter of the throttle's
 * bound (max_mem / 4 bytes), instead of to the allocator: new pages from
 * the allocator for every copy cost page faults and zeroing, 12% of
 * fssnapd's CPU on a random first touch.  Beyond that bound buffers are
 * freed, so an idle fssnapd keeps at most max_mem / 4 of them.
 *
 * Locks: copybuf_lock, a leaf.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/store.h"

static size_t
copybuf_size (const struct fssnap_origin *o)
{
  return (o->chunksize + STORE_BUF_ALIGN - 1) / STORE_BUF_ALIGN
         * STORE_BUF_ALIGN;
}

/* Takes copybuf_lock. */
void *
copybuf_get (struct fssnap_origin *o, size_t len)
{
  unsigned char *b = NULL;
  pthread_mutex_lock (&o->copybuf_lock);
  if (o->ncopybufs > 0 && o->copybuf_chunksize == o->chunksize)
    b = o->copybufs[--o->ncopybufs];
  pthread_mutex_unlock (&o->copybuf_lock);
  if (!b)
    b = store_buf_alloc (copybuf_size (o));
  if (b && len < copybuf_size (o))      /* the device's short last chunk */
    memset (b + len, 0, copybuf_size (o) - len);
  return b;
}

/* Takes copybuf_lock. */
void
copybuf_put (struct fssnap_origin *o, void *buf)
{
  if (!buf)
    return;
  pthread_mutex_lock (&o->copybuf_lock);
  if (o->copybuf_chunksize != o->chunksize) {     /* first, or new geometry */
    copybuf_free_all (o);
    o->copybufs_max = o->max_mem_chunks / 4;
    o->copybufs = o->copybufs_max ? calloc (o->copybufs_max,
                                            sizeof *o->copybufs) : NULL;
    o->copybuf_chunksize = o->chunksize;
  }
  if (o->copybufs && o->ncopybufs < o->copybufs_max) {
    o->copybufs[o->ncopybufs++] = buf;
    buf = NULL;
  }
  pthread_mutex_unlock (&o->copybuf_lock);
  free (buf);
}

/* At close, no copy left (or under copybuf_lock). */
void
copybuf_free_all (struct fssnap_origin *o)
{
  while (o->ncopybufs > 0)
    free (o->copybufs[--o->ncopybufs]);
  free (o->copybufs);
  o->copybufs = NULL;
}
