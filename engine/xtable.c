/* SPDX-License-Identifier: MIT */
/* Translation table: chained hash of in-memory chunk copies (xtable.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/xtable.h"

static size_t
xtable_bucket (const struct xtable *t, uint64_t chunk)
{
  return (chunk * UINT64_C (0x9E3779B97F4A7C15)) >> 32 & (t->nbuckets - 1);
}

int
xtable_init (struct xtable *t, size_t expected)
{
  size_t n = 16;
  while (n < expected && n < (1u << 20))
    n <<= 1;
  t->buckets = calloc (n, sizeof *t->buckets);
  if (!t->buckets)
    return -ENOMEM;
  t->nbuckets = n;
  t->count = 0;
  pthread_mutex_init (&t->lock, NULL);
  return 0;
}

void
xtable_destroy (struct xtable *t)
{
  for (size_t i = 0; i < t->nbuckets; i++) {
    struct xentry *e = t->buckets[i], *next;
    for (; e; e = next) {
      next = e->hash_next;
      free (e->data);
      free (e);
    }
  }
  free (t->buckets);
  t->buckets = NULL;
  pthread_mutex_destroy (&t->lock);
}

void
xtable_insert (struct xtable *t, struct xentry *e)
{
  pthread_mutex_lock (&t->lock);
  size_t b = xtable_bucket (t, e->chunk);
  e->hash_next = t->buckets[b];
  t->buckets[b] = e;
  t->count++;
  pthread_mutex_unlock (&t->lock);
}

void *
xtable_remove (struct xtable *t, struct xentry *e)
{
  pthread_mutex_lock (&t->lock);
  struct xentry **pp = &t->buckets[xtable_bucket (t, e->chunk)];
  while (*pp && *pp != e)
    pp = &(*pp)->hash_next;
  if (*pp) {
    *pp = e->hash_next;
    t->count--;
  }
  pthread_mutex_unlock (&t->lock);
  void *data = e->data;
  free (e);
  return data;
}

void *
xtable_fail (struct xtable *t, struct xentry *e)
{
  pthread_mutex_lock (&t->lock);
  void *data = e->data;
  e->data = NULL;
  pthread_mutex_unlock (&t->lock);
  return data;
}

enum xtable_result
xtable_read (struct xtable *t, uint64_t chunk, void *buf, size_t skip,
             size_t len)
{
  enum xtable_result r = XTABLE_MISS;
  pthread_mutex_lock (&t->lock);
  for (struct xentry *e = t->buckets[xtable_bucket (t, chunk)]; e;
       e = e->hash_next) {
    if (e->chunk != chunk)
      continue;
    if (e->data) {
      memcpy (buf, (char *) e->data + skip, len);
      r = XTABLE_HIT;
    }
    else
      r = XTABLE_FAILED;
    break;
  }
  pthread_mutex_unlock (&t->lock);
  return r;
}

size_t
xtable_count (struct xtable *t)
{
  pthread_mutex_lock (&t->lock);
  size_t n = t->count;
  pthread_mutex_unlock (&t->lock);
  return n;
}
