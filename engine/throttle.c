/* SPDX-License-Identifier: MIT */
/*
 * The throttle: at most max_mem_chunks copies are held in memory, waiting
 * for the store writers.  A copier takes a slot before it allocates a copy;
 * a writer gives it back once the copy is in the store.  Copiers wait here
 * holding no lock but io_lock (shared), which neither the writers nor
 * delete need, so the wait always ends.  Takes throttle_lock (a leaf).
 */
#include "engine/internal.h"

static void
throttle_take_locked (struct fssnap_origin *o)
{
  o->mem_chunks++;
  if (o->mem_chunks > o->mem_chunks_peak)
    o->mem_chunks_peak = o->mem_chunks;
}

bool
throttle_try_acquire (struct fssnap_origin *o)
{
  bool ok;
  pthread_mutex_lock (&o->throttle_lock);
  ok = o->mem_chunks < o->max_mem_chunks;
  if (ok)
    throttle_take_locked (o);
  pthread_mutex_unlock (&o->throttle_lock);
  return ok;
}

void
throttle_acquire (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->throttle_lock);
  if (o->mem_chunks >= o->max_mem_chunks)
    atomic_fetch_add (&o->throttle_waits, 1);
  while (o->mem_chunks >= o->max_mem_chunks)
    pthread_cond_wait (&o->throttle_cond, &o->throttle_lock);
  throttle_take_locked (o);
  pthread_mutex_unlock (&o->throttle_lock);
}

void
throttle_release (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->throttle_lock);
  o->mem_chunks--;
  pthread_cond_signal (&o->throttle_cond);
  pthread_mutex_unlock (&o->throttle_lock);
}
