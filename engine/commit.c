/* SPDX-License-Identifier: MIT */
/*
 * Group commit: the durability order of persistent snapshots.
 *
 * A write may reach the origin only once the old copy of every chunk it
 * overwrites, and the owner bit O that points to the copy, are durable.
 * (The preserved bits H of the snapshots that need the copy are not
 * stored: recovery derives them from C and O, so one metadata file per
 * copy is synced, however many snapshots share it.)  Making each write sync on its own
 * would cost a store fsync and a metadata fsync per write; instead copies
 * are grouped in epochs:
 *
 *   1. The copy path (cow.c) logs each copy's bits in the open epoch E and
 *      counts its store write as pending in E; the write then waits until
 *      E is committed (commit_wait).
 *   2. The committer thread closes E (new copies go to E+1), waits until
 *      the store writers have written every copy of E, fsyncs those stores,
 *      then writes E's bits into the metadata files and fsyncs each once,
 *      and declares E committed.
 *
 * Bits of E+1 are never written with E's, so the metadata on disk never
 * points at a copy that is not durable.  A storm of writes pays one round
 * of fsyncs per epoch, however many copies the epoch holds.  Copies that
 * only transient snapshots need are not logged and nobody waits for them.
 *
 * Changed-block tracking rides on the same epochs: the first write to a
 * chunk since the newest snapshot logs bit A of that snapshot (changes.c),
 * made durable with the H bits, before the write reaches the origin.
 *
 * If a store or metadata sync fails, every snapshot with bits in the epoch
 * is disabled (conservatively: it may depend on a copy that is not durable)
 * before the epoch is declared committed, so the origin write that follows
 * can never leave a persistent snapshot pointing at missing data.
 *
 * Locks: commit_lock (a leaf) guards the epochs and logs; the committer
 * does its I/O holding none.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

/* Whether copies for s must be durable before the origin changes. */
static bool
commit_needed (const struct snap *s)
{
  return s->meta && snap_persistent (s);
}

/* Caller holds commit_lock. */
static int
commit_append (struct commit_log *log, struct snap *s, uint64_t c,
               enum meta_map map)
{
  if (log->n == log->alloc) {
    size_t n = log->alloc ? 2 * log->alloc : 256;
    struct commit_rec *p = realloc (log->recs, n * sizeof *p);
    if (!p)
      return -ENOMEM;
    log->recs = p;
    log->alloc = n;
  }
  snap_ref (s);
  log->recs[log->n++] = (struct commit_rec) { s, c, map };
  return 0;
}

/* Whether the open epoch holds nothing yet: the committer, idle, waits for
 * its first record (later ones need no wake-up: it takes the whole epoch
 * when it closes it, and a signal meanwhile would only wake it from its
 * wait for the store writes of the epoch before).  Caller holds
 * commit_lock.
 */
static bool
commit_log_empty (const struct commit_log *log)
{
  return log->n == 0 && log->pending == 0;
}

uint64_t
commit_add_copy (struct fssnap_origin *o, struct xentry *e, struct snap **set,
                 size_t n)
{
  bool needed = false;
  for (size_t i = 0; i < n; i++)
    needed |= commit_needed (set[i]);
  if (!needed)
    return 0;
  pthread_mutex_lock (&o->commit_lock);
  uint64_t epoch = o->open_epoch;
  struct commit_log *log = &o->logs[epoch & 1];
  bool wake = commit_log_empty (log);
  int r = e->owner->meta ? commit_append (log, e->owner, e->chunk,
                                           META_MAP_OWNER) : -EINVAL;
  if (r < 0)
    log->failed = true;         /* disable what this epoch touches */
  log->pending++;
  e->epoch = epoch;
  if (wake)
    pthread_cond_signal (&o->commit_cond);
  pthread_mutex_unlock (&o->commit_lock);
  return epoch;
}

uint64_t
commit_add_change (struct fssnap_origin *o, struct snap *s, uint64_t c)
{
  if (!commit_needed (s))
    return 0;
  pthread_mutex_lock (&o->commit_lock);
  uint64_t epoch = o->open_epoch;
  struct commit_log *log = &o->logs[epoch & 1];
  bool wake = commit_log_empty (log);
  if (commit_append (log, s, c, META_MAP_AFTER) < 0)
    log->failed = true;
  if (wake)
    pthread_cond_signal (&o->commit_cond);
  pthread_mutex_unlock (&o->commit_lock);
  return epoch;
}

void
commit_store_done (struct fssnap_origin *o, uint64_t epoch)
{
  pthread_mutex_lock (&o->commit_lock);
  if (--o->logs[epoch & 1].pending == 0)
    pthread_cond_signal (&o->commit_cond);
  pthread_mutex_unlock (&o->commit_lock);
}

void
commit_wait (struct fssnap_origin *o, uint64_t epoch)
{
  if (atomic_load (&o->committed_epoch) >= epoch)
    return;                     /* most writes: nothing to wait for */
  pthread_mutex_lock (&o->commit_lock);
  while (o->committed_epoch < epoch)
    pthread_cond_wait (&o->commit_done, &o->commit_lock);
  pthread_mutex_unlock (&o->commit_lock);
}

/* Disable every snapshot with bits in the epoch, and every snapshot that
 * reads a copy of the epoch (it may not be durable).  Takes snap_lock
 * shared and state_lock.
 */
static void
commit_fail (struct fssnap_origin *o, struct commit_rec *recs, size_t n,
             const char *what, int err)
{
  char why[256];
  snprintf (why, sizeof why, "%s failed: %s; a copy it needs may not be "
            "durable", what, strerror (-err));
  for (size_t i = 0; i < n; i++) {
    if (recs[i].map == META_MAP_OWNER)
      snap_disable_readers (o, recs[i].s, recs[i].chunk, why);
    else
      snap_disable (recs[i].s, "%s", why);
  }
}

/* Make the epoch's bits durable: set them in the durable maps, then write
 * and fsync each file concerned once.  A snapshot removed from the list is
 * skipped: the store writers skip its copies (writer.c), so its owner bits
 * would point at copies that were never written, and its files are going.
 * A writer skips a copy only if the snapshot was already removed, and
 * this runs after every store write of the epoch; removal is never undone.
 */
static int
commit_flush_bits (struct commit_log *log, uint64_t round)
{
  int r = 0;
  for (size_t i = 0; i < log->n; i++)
    if (!atomic_load (&log->recs[i].s->removed))
      meta_set_bit (log->recs[i].s->meta, log->recs[i].map,
                    log->recs[i].chunk);
  for (size_t i = 0; r == 0 && i < log->n; i++) {
    struct snap *s = log->recs[i].s;
    if (!atomic_load (&s->removed) && s->flushed_round != round) {
      s->flushed_round = round;
      r = meta_flush (s->meta);
    }
  }
  return r;
}

/* Make the epoch's copies and bits durable.  Runs in the committer. */
static void
commit_apply (struct fssnap_origin *o, struct commit_log *log)
{
  uint64_t round = ++o->commit_round;
  int r = log->failed ? -ENOMEM : 0;
  for (size_t i = 0; r == 0 && i < log->n; i++) {
    struct snap *s = log->recs[i].s;
    if (log->recs[i].map == META_MAP_OWNER && s->synced_round != round) {
      s->synced_round = round;
      r = store_sync (s->store);
    }
  }
  if (r < 0) {
    commit_fail (o, log->recs, log->n, "syncing a backing store", r);
    return;
  }
  r = commit_flush_bits (log, round);
  if (r < 0)
    commit_fail (o, log->recs, log->n, "writing snapshot metadata", r);
}

static void
commit_release (struct commit_log *log)
{
  for (size_t i = 0; i < log->n; i++)
    snap_unref (log->recs[i].s);
  free (log->recs);
}

static void *
commit_main (void *arg)
{
  struct fssnap_origin *o = arg;
  pthread_mutex_lock (&o->commit_lock);
  for (;;) {
    struct commit_log *log = &o->logs[o->open_epoch & 1];
    while (!o->commit_stopping && log->n == 0 && log->pending == 0)
      pthread_cond_wait (&o->commit_cond, &o->commit_lock);
    if (log->n == 0 && log->pending == 0)
      break;                    /* stopping, nothing left */
    uint64_t epoch = o->open_epoch++;
    while (log->pending > 0)
      pthread_cond_wait (&o->commit_cond, &o->commit_lock);
    struct commit_log done = *log;
    memset (log, 0, sizeof *log);
    pthread_mutex_unlock (&o->commit_lock);

    commit_apply (o, &done);
    commit_release (&done);

    pthread_mutex_lock (&o->commit_lock);
    o->committed_epoch = epoch;
    pthread_cond_broadcast (&o->commit_done);
  }
  pthread_mutex_unlock (&o->commit_lock);
  return NULL;
}

int
commit_start (struct fssnap_origin *o)
{
  o->open_epoch = 1;
  o->committed_epoch = 0;
  int r = pthread_create (&o->committer, NULL, commit_main, o);
  if (r)
    return -r;
  o->committer_running = true;
  return 0;
}

/* Commit what is left, then end the thread.  Store writers must be idle. */
void
commit_stop (struct fssnap_origin *o)
{
  if (!o->committer_running)
    return;
  pthread_mutex_lock (&o->commit_lock);
  o->commit_stopping = true;
  pthread_cond_signal (&o->commit_cond);
  pthread_mutex_unlock (&o->commit_lock);
  pthread_join (o->committer, NULL);
  o->committer_running = false;
}
