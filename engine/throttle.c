/* SPDX-License-Identifier: MIT */
/*
 * The throttle: at most max_mem_chunks copies are held in memory, waiting
 * for the store writers.  A copier takes a slot before it allocates a copy;
 * a writer gives it back once the copy is in the store.  Copiers wait here
 * holding no lock but io_lock (shared), which neither the writers nor
 * delete need, so the wait always ends.  Takes throttle_lock (a leaf).
 *
 * Once full, the throttle stays closed until a batch of slots is free
 * (THROTTLE_BATCH_DIV of them), then lets every waiter go at once.  A
 * slot at a time would make the copiers and the store writers take turns
 * at every copy, two context switches each: with 8 copiers on 2 CPUs the
 * first writes after a snapshot ran slower than with one.  Admission is
 * closed for newcomers too while full, so a waiter is never overtaken for
 * ever.
 */
#include "engine/internal.h"

#define THROTTLE_BATCH_DIV 16

/* The level at which a full throttle opens again. */
static uint64_t
throttle_low (const struct fssnap_origin *o)
{
  uint64_t batch = o->max_mem_chunks / THROTTLE_BATCH_DIV;
  return o->max_mem_chunks - (batch ? batch : 1);
}

/* Take a slot if the throttle is open.  Caller holds throttle_lock. */
static bool
throttle_take_locked (struct fssnap_origin *o)
{
  if (o->throttle_full)
    return false;
  o->mem_chunks++;
  if (o->mem_chunks > o->mem_chunks_peak)
    o->mem_chunks_peak = o->mem_chunks;
  if (o->mem_chunks >= o->max_mem_chunks)
    o->throttle_full = true;
  return true;
}

bool
throttle_try_acquire (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->throttle_lock);
  bool ok = throttle_take_locked (o);
  pthread_mutex_unlock (&o->throttle_lock);
  return ok;
}

void
throttle_acquire (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->throttle_lock);
  if (o->throttle_full)
    atomic_fetch_add (&o->throttle_waits, 1);
  while (!throttle_take_locked (o))
    pthread_cond_wait (&o->throttle_cond, &o->throttle_lock);
  pthread_mutex_unlock (&o->throttle_lock);
}

void
throttle_release (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->throttle_lock);
  o->mem_chunks--;
  bool open = o->throttle_full && o->mem_chunks <= throttle_low (o);
  if (open)
    o->throttle_full = false;
  pthread_mutex_unlock (&o->throttle_lock);
  if (open)
    pthread_cond_broadcast (&o->throttle_cond);
}
