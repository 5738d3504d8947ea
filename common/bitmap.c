/* SPDX-License-Identifier: MIT */
/* Chunk bitmaps: see bitmap.h. */
#include <errno.h>
#include <stdlib.h>

#include "common/bitmap.h"

static uint64_t
bitmap_nwords (uint64_t nbits)
{
  return (nbits + 63) / 64;
}

int
bitmap_init (struct bitmap *bm, uint64_t nbits)
{
  bm->nbits = nbits;
  bm->words = calloc (bitmap_nwords (nbits) ? bitmap_nwords (nbits) : 1,
                      sizeof *bm->words);
  return bm->words ? 0 : -ENOMEM;
}

void
bitmap_free (struct bitmap *bm)
{
  free ((void *) bm->words);
  bm->words = NULL;
  bm->nbits = 0;
}

void
bitmap_set_range (struct bitmap *bm, uint64_t first, uint64_t count)
{
  if (first >= bm->nbits)
    return;
  if (count > bm->nbits - first)
    count = bm->nbits - first;
  uint64_t end = first + count;
  while (first < end) {
    uint64_t w = first >> 6, bit = first & 63;
    uint64_t n = 64 - bit < end - first ? 64 - bit : end - first;
    uint64_t mask = n == 64 ? UINT64_MAX : ((UINT64_C (1) << n) - 1) << bit;
    atomic_fetch_or_explicit (&bm->words[w], mask, memory_order_relaxed);
    first += n;
  }
}

uint64_t
bitmap_count (const struct bitmap *bm)
{
  uint64_t n = 0;
  for (uint64_t w = 0; w < bitmap_nwords (bm->nbits); w++)
    n += __builtin_popcountll (atomic_load_explicit (&bm->words[w],
                                                     memory_order_relaxed));
  return n;
}

uint64_t
bitmap_find (const struct bitmap *bm, uint64_t from, bool value)
{
  while (from < bm->nbits) {
    uint64_t w = atomic_load_explicit (&bm->words[from >> 6],
                                       memory_order_relaxed);
    if (!value)
      w = ~w;
    w &= UINT64_MAX << (from & 63);
    if (w) {
      uint64_t bit = (from & ~UINT64_C (63)) + __builtin_ctzll (w);
      return bit < bm->nbits ? bit : bm->nbits;
    }
    from = (from | 63) + 1;
  }
  return bm->nbits;
}
