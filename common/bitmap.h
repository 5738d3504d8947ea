/* SPDX-License-Identifier: MIT */
/*
 * Bitmaps of one bit per chunk: the candidate (C), preserved (H) and owner
 * (O) maps of a snapshot.  Words are C11 atomics so that two threads may set
 * bits of different chunks that share a word, each under its own chunk lock,
 * without a lock over the whole map.  Ordering between a bit and the data it
 * describes comes from the chunk locks, so relaxed operations suffice.
 */
#ifndef FSSNAP_BITMAP_H
#define FSSNAP_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct bitmap {
  uint64_t nbits;
  _Atomic uint64_t *words;
};

/* Allocate a map of nbits clear bits; returns -ENOMEM on failure. */
int bitmap_init (struct bitmap *bm, uint64_t nbits);
void bitmap_free (struct bitmap *bm);

static inline bool
bitmap_test (const struct bitmap *bm, uint64_t bit)
{
  uint64_t w = atomic_load_explicit (&bm->words[bit >> 6], memory_order_relaxed);
  return (w >> (bit & 63)) & 1;
}

/* Set one bit; returns whether it was already set. */
static inline bool
bitmap_set (struct bitmap *bm, uint64_t bit)
{
  uint64_t mask = UINT64_C (1) << (bit & 63);
  uint64_t old = atomic_fetch_or_explicit (&bm->words[bit >> 6], mask,
                                           memory_order_relaxed);
  return old & mask;
}

/* Clear one bit. */
static inline void
bitmap_clear (struct bitmap *bm, uint64_t bit)
{
  atomic_fetch_and_explicit (&bm->words[bit >> 6],
                             ~(UINT64_C (1) << (bit & 63)),
                             memory_order_relaxed);
}

/* Set bits [first, first+count), clipped to the map. */
void bitmap_set_range (struct bitmap *bm, uint64_t first, uint64_t count);
/* Number of set bits. */
uint64_t bitmap_count (const struct bitmap *bm);
/* First bit >= from whose value is 'value', or nbits if there is none. */
uint64_t bitmap_find (const struct bitmap *bm, uint64_t from, bool value);

#endif /* FSSNAP_BITMAP_H */
