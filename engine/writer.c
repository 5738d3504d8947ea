/* SPDX-License-Identifier: MIT */
/*
 * Store writers: a small pool of threads that moves copies from the
 * translation tables to the backing stores, in the order they were made,
 * up to STORE_BATCH_MAX copies of one owner in one store write (the store
 * puts them side by side: one large write instead of many small ones).
 * A copy leaves its table only once it is in the store, so a reader that
 * misses in the table finds it in the store.
 *
 * A failed store write (ENOSPC, EIO...) disables the owner and every older
 * snapshot that reads this copy; the copy stays in the table as a tombstone
 * so that nobody reads the store's stale bytes in its place.  The origin is
 * not touched: its write went ahead when the copy was made.
 *
 * Locks: queue_lock around the queue; writer_fail takes snap_lock shared.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/store.h"

/* Caller holds no lock.  Takes snap_lock (shared). */
static void
writer_fail (struct fssnap_origin *o, struct xentry *e, int err)
{
  struct snap *owner = e->owner;
  atomic_fetch_add (&o->store_errors, 1);
  pthread_rwlock_rdlock (&o->snap_lock);
  engine_log (o, FSSNAP_LOG_ERR,
              "snapshot %u: writing chunk %llu to backing store %s failed: %s",
              owner->number, (unsigned long long) e->chunk, owner->store->path,
              strerror (-err));
  for (size_t i = 0; i < o->nsnaps && o->snaps[i]->seq <= owner->seq; i++) {
    struct snap *s = o->snaps[i];
    if (s != owner
        && !(bitmap_test (&s->pres, e->chunk)
             && cow_owner_of (o, s, e->chunk) == owner))
      continue;
    snap_disable (s, "copy of chunk %llu to %s failed: %s",
                  (unsigned long long) e->chunk, owner->store->path,
                  strerror (-err));
  }
  copybuf_put (o, xtable_fail (&owner->table, e));
  pthread_rwlock_unlock (&o->snap_lock);
}

/* Write a batch of copies with one owner to its store, together; a
 * failed write fails them all.
 */
static void
writer_write (struct fssnap_origin *o, struct xentry **batch, size_t n)
{
  struct snap *s = batch[0]->owner;
  struct store_copy copies[STORE_BATCH_MAX];
  int r = 0;
  if (!atomic_load (&s->removed)) {
    for (size_t i = 0; i < n; i++)
      copies[i] = (struct store_copy) { batch[i]->chunk, batch[i]->data,
                                        batch[i]->len };
    r = store_write_copies (s->store, copies, n);
  }
  for (size_t i = 0; i < n; i++) {
    struct xentry *e = batch[i];
    uint64_t epoch = e->epoch;
    if (r < 0)
      writer_fail (o, e, r);
    else
      copybuf_put (o, xtable_remove (&s->table, e));
    if (epoch)
      commit_store_done (o, epoch);
    throttle_release (o);
    snap_unref (s);
  }
}

/* Pop the next copies: up to STORE_BATCH_MAX in a row with one owner, so
 * that its store writes them together; 0 when stopping with nothing left.
 * Takes queue_lock.
 */
static size_t
writer_next (struct fssnap_origin *o, struct xentry **batch)
{
  size_t n = 0;
  pthread_mutex_lock (&o->queue_lock);
  while (!o->queue_head && !o->stopping)
    pthread_cond_wait (&o->queue_cond, &o->queue_lock);
  while (o->queue_head && n < STORE_BATCH_MAX
         && (n == 0 || o->queue_head->owner == batch[0]->owner)) {
    batch[n++] = o->queue_head;
    o->queue_head = o->queue_head->queue_next;
  }
  if (!o->queue_head)
    o->queue_tail = NULL;
  bool more = o->queue_head != NULL;
  pthread_mutex_unlock (&o->queue_lock);
  if (more)                     /* what is left wakes the next writer */
    pthread_cond_signal (&o->queue_cond);
  return n;
}

static void *
writer_main (void *arg)
{
  struct fssnap_origin *o = arg;
  struct xentry *batch[STORE_BATCH_MAX];
  size_t n;
  while ((n = writer_next (o, batch)) > 0) {
    writer_write (o, batch, n);
    pthread_mutex_lock (&o->queue_lock);
    o->queued -= n;
    if (o->queued == 0)
      pthread_cond_broadcast (&o->idle_cond);
    pthread_mutex_unlock (&o->queue_lock);
  }
  return NULL;
}

int
writer_start (struct fssnap_origin *o, unsigned nthreads)
{
  o->writers = calloc (nthreads, sizeof *o->writers);
  if (!o->writers)
    return -ENOMEM;
  for (o->nwriters = 0; o->nwriters < nthreads; o->nwriters++) {
    int r = pthread_create (&o->writers[o->nwriters], NULL, writer_main, o);
    if (r) {
      writer_stop (o);
      return -r;
    }
  }
  return 0;
}

/* Takes queue_lock. */
void
writer_queue (struct fssnap_origin *o, struct xentry *e)
{
  e->queue_next = NULL;
  pthread_mutex_lock (&o->queue_lock);
  bool was_empty = !o->queue_tail;
  if (o->queue_tail)
    o->queue_tail->queue_next = e;
  else
    o->queue_head = e;
  o->queue_tail = e;
  o->queued++;
  pthread_mutex_unlock (&o->queue_lock);
  /* Into an empty queue, wake a writer (after the unlock: woken under it,
   * it would block on it at once); into a longer one, the writer that
   * takes the copies before this one wakes the next (writer_next).
   */
  if (was_empty)
    pthread_cond_signal (&o->queue_cond);
}

/* Wait until every queued copy is in its store.  Takes queue_lock. */
void
writer_drain (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->queue_lock);
  while (o->queued > 0)
    pthread_cond_wait (&o->idle_cond, &o->queue_lock);
  pthread_mutex_unlock (&o->queue_lock);
}

/* Finish the queue, then end the threads.  Takes queue_lock. */
void
writer_stop (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->queue_lock);
  o->stopping = true;
  pthread_cond_broadcast (&o->queue_cond);
  pthread_mutex_unlock (&o->queue_lock);
  for (unsigned i = 0; i < o->nwriters; i++)
    pthread_join (o->writers[i], NULL);
  free (o->writers);
  o->writers = NULL;
  o->nwriters = 0;
}
