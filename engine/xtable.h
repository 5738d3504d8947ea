/* SPDX-License-Identifier: MIT */
/*
 * The translation table of one snapshot: copies of chunks this snapshot owns
 * that are still in memory, waiting for a store writer.  A hash of chunk
 * number to entry, so look-up is O(1) whatever its size; its size is bounded
 * by the origin's throttle, not here.  An entry also links into the writers'
 * queue, so queuing a copy allocates nothing.
 *
 * A copy whose store write failed stays as a tombstone (no data) so that a
 * reader finds out instead of reading the store's stale bytes.
 *
 * All functions take xtable.lock (a leaf lock).
 */
#ifndef FSSNAP_XTABLE_H
#define FSSNAP_XTABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct snap;

struct xentry {
  uint64_t chunk;
  size_t len;
  void *data;                   /* NULL once the store write failed */
  struct snap *owner;
  uint64_t epoch;               /* commit epoch; 0: nobody waits for it */
  struct xentry *hash_next;     /* xtable.lock */
  struct xentry *queue_next;    /* origin queue_lock */
};

struct xtable {
  pthread_mutex_t lock;
  struct xentry **buckets;
  size_t nbuckets;              /* a power of two */
  size_t count;
};

int xtable_init (struct xtable *t, size_t expected);
/* Frees every entry still present (and its data). */
void xtable_destroy (struct xtable *t);
void xtable_insert (struct xtable *t, struct xentry *e);
/* Unlink and free e (after its store write succeeded); returns its data,
 * for the caller to free or reuse.
 */
void *xtable_remove (struct xtable *t, struct xentry *e);
/* Keep e as a tombstone without its data (reads of it fail); returns the
 * data, as xtable_remove.
 */
void *xtable_fail (struct xtable *t, struct xentry *e);

enum xtable_result { XTABLE_MISS, XTABLE_HIT, XTABLE_FAILED };
/* Copy len bytes at offset 'skip' of chunk's copy into buf, if present. */
enum xtable_result xtable_read (struct xtable *t, uint64_t chunk, void *buf,
                                size_t skip, size_t len);
size_t xtable_count (struct xtable *t);

#endif /* FSSNAP_XTABLE_H */
