/* SPDX-License-Identifier: MIT */
/*
 * The copy-on-write path: many snapshots, one copy.
 *
 * Before a write may change chunk c of the origin, every valid snapshot S
 * with C_S[c] (c held data when S was taken) and not H_S[c] (c not copied
 * for S yet) still sees c as it is now.  Call that set N.  We read c once,
 * put the copy in the translation table of the newest member of N, which
 * becomes its owner (O[c]), set H[c] for every member of N, and queue the
 * copy for the store writers.  Only then does the write reach the origin.
 * Whatever the number of snapshots, a chunk is copied at most once per
 * write that finds N non-empty, and N is empty for every later write until
 * a new snapshot is taken.
 *
 * Which copy does snapshot S read for a chunk c with H_S[c]?  The owner of
 * c nearest to S in creation order, S itself included (cow_owner_of).
 * Proof.  Let w be the copy that set H_S[c] (H only goes 0 -> 1, and only
 * here), and S* the owner chosen at w: S* is the newest member of N at w,
 * so S* >= S, and the copy holds c as it was from S's creation up to w,
 * which is what S must read.  Suppose some S' with S <= S' < S* also owns
 * c, by a copy w'.
 *  - If w' came before w: S existed at w' (S <= S' and S' existed), C_S[c]
 *    holds and H_S[c] was still clear (w is the first copy for S), so S was
 *    in N at w' and w' would have set H_S[c]: contradiction.
 *  - If w' came after w: S' is valid at w' and C_S'[c] holds.  If S'
 *    existed at w, it was in N at w (H_S'[c] clear until w'), so w set
 *    H_S'[c] and S' was not in N at w': contradiction.  If S' did not exist
 *    at w, it was created after S*, so S' > S*: contradiction.
 * So the nearest owner at or after S is S*.  Deleted snapshots that own
 * copies older ones read are kept (retained) until no older snapshot needs
 * them, so the owner is always there to be found; snapshots that are not
 * valid (disabled, deleted, creating) never join N and never become owners.
 *
 * Durability: when a persistent snapshot needs the copy, the copy's bits
 * are logged for group commit (commit.c) and cow_range returns the epoch
 * that must commit before the change may touch the origin: the write is
 * staged until then (staging.c).  So does the change-tracking bit of the
 * first write to a chunk since the newest snapshot (changes.c).  A write
 * that finds N empty because another write has just copied the chunk
 * waits for that copy's epoch too (copy_epoch, per chunk lock), so no
 * write reaches the origin before the copy of what it overwrites is
 * durable.
 *
 * A copy charges the owner's maxsize; an owner that would exceed it is
 * deleted on the spot (logged) and the next newest member of N takes the
 * copy instead, so no other snapshot loses anything.
 *
 * Locks: io_lock is held shared by the caller (origin.c); this file takes
 * the chunk lock, then snap_lock shared; it waits for a throttle slot
 * holding neither.
 */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "engine/internal.h"

/* Caller holds snap_lock (shared is enough). */
struct snap *
cow_owner_of (struct fssnap_origin *o, struct snap *s, uint64_t c)
{
  for (size_t i = 0; i < o->nsnaps; i++) {
    struct snap *t = o->snaps[i];
    if (t->seq >= s->seq && bitmap_test (&t->owner, c))
      return t;
  }
  return NULL;
}

/* Fill set[] with N for chunk c, newest first; returns its size.
 * Caller holds chunk lock c and snap_lock shared.
 */
static size_t
cow_needing (struct fssnap_origin *o, uint64_t c, struct snap **set)
{
  size_t n = 0;
  for (size_t i = o->nsnaps; i-- > 0;) {
    struct snap *s = o->snaps[i];
    if (snap_is_valid (s) && bitmap_test (&s->cand, c)
        && !bitmap_test (&s->pres, c))
      set[n++] = s;
  }
  return n;
}

/* Charge one chunk to s's maxsize; false if it would exceed it. */
static bool
cow_charge (struct snap *s)
{
  uint64_t n = atomic_fetch_add (&s->owned_count, 1) + 1;
  if (s->maxsize && n * s->chunksize > s->maxsize) {
    atomic_fetch_sub (&s->owned_count, 1);
    return false;
  }
  return true;
}

/* Pick the owner among set[] (newest first), deleting those whose maxsize
 * the copy would exceed.  Caller holds chunk lock and snap_lock shared.
 */
static struct snap *
cow_pick_owner (struct snap **set, size_t n, bool *reap)
{
  for (size_t i = 0; i < n; i++) {
    bool charged = cow_charge (set[i]);
    /* Charged first, validity checked after: a snapshot leaving the valid
     * state meanwhile (a delete or a disable, under snap_lock shared like
     * us) either sees our charge (and keeps its metadata file, which its
     * copies need) or we see its state and choose another owner.
     */
    if (charged && !snap_is_valid (set[i])) {
      atomic_fetch_sub (&set[i]->owned_count, 1);
      continue;
    }
    if (charged)
      return set[i];
    if (!snap_is_valid (set[i]))
      continue;
    char why[128];
    snprintf (why, sizeof why, "backing store would exceed maxsize %llu",
              (unsigned long long) set[i]->maxsize);
    snap_mark_deleted (set[i], why);
    *reap = true;
  }
  return NULL;
}

/* Copy chunk c for the members of set[].  Returns 1 if the copy took the
 * caller's throttle slot, 0 if no copy was needed after all, or a negative
 * errno (the origin could not be read: the write must not go ahead).
 * *epochp is the commit epoch to wait for (0: none).
 * Caller holds chunk lock c and snap_lock shared.
 */
static int
cow_copy_locked (struct fssnap_origin *o, uint64_t c, struct snap **set,
                 size_t n, bool *reap, uint64_t *epochp)
{
  size_t len = chunk_bytes (o, c);
  struct xentry *e = calloc (1, sizeof *e);
  void *data = copybuf_get (o, len);      /* O_DIRECT to the store */
  if (!e || !data) {
    free (e);
    copybuf_put (o, data);
    return -ENOMEM;
  }
  int r = io_pread_full (o->io, o->fd, data, len, c << o->chunk_shift);
  if (r < 0) {
    engine_log (o, FSSNAP_LOG_ERR, "reading chunk %llu of %s to copy it: %s",
                (unsigned long long) c, o->path, strerror (-r));
    free (e);
    copybuf_put (o, data);
    return r;
  }
  struct snap *owner = cow_pick_owner (set, n, reap);
  if (!owner) {
    free (e);
    copybuf_put (o, data);
    return 0;
  }
  *e = (struct xentry) { .chunk = c, .len = len, .data = data, .owner = owner };
  xtable_insert (&owner->table, e);
  bitmap_set (&owner->owner, c);
  for (size_t i = 0; i < n; i++)
    if (!bitmap_set (&set[i]->pres, c))
      atomic_fetch_add (&set[i]->pres_count, 1);
  snap_ref (owner);
  *epochp = commit_add_copy (o, e, set, n);
  if (*epochp)
    o->copy_epoch[chunk_lock_index (c)] = *epochp;
  writer_queue (o, e);
  atomic_fetch_add (&o->chunks_copied, 1);
  atomic_fetch_add (&o->bytes_copied, len);
  return 1;
}

/* Make sure chunk c may be overwritten, once *epochp is committed.
 * Returns 1 if it copied c, 0 if no copy was needed.  Caller holds
 * io_lock shared.
 */
static int
cow_chunk (struct fssnap_origin *o, uint64_t c, uint64_t *epochp)
{
  struct snap *set[FSSNAP_MAX_SNAPSHOTS];
  pthread_mutex_t *lock = chunk_lock (o, c);
  bool slot = false, reap = false;
  size_t n;
  int r = 0;

  for (;;) {
    pthread_mutex_lock (lock);
    pthread_rwlock_rdlock (&o->snap_lock);
    n = cow_needing (o, c, set);
    if (n == 0 || slot || (slot = throttle_try_acquire (o)))
      break;
    pthread_rwlock_unlock (&o->snap_lock);
    pthread_mutex_unlock (lock);
    throttle_acquire (o);       /* holding only io_lock */
    slot = true;
  }
  if (n > 0)
    r = cow_copy_locked (o, c, set, n, &reap, epochp);
  else                          /* a copy by another write may be pending */
    *epochp = o->copy_epoch[chunk_lock_index (c)];
  pthread_rwlock_unlock (&o->snap_lock);
  pthread_mutex_unlock (lock);

  if (slot && r != 1)
    throttle_release (o);
  if (reap)
    snap_reap (o);
  return r;
}

int
cow_range (struct fssnap_origin *o, uint64_t off, uint64_t len,
           uint64_t *epochp)
{
  *epochp = 0;
  if (len == 0)
    return 0;
  uint64_t first = off >> o->chunk_shift;
  uint64_t last = (off + len - 1) >> o->chunk_shift;
  uint64_t wait_for = 0;
  bool copied = false;
  int r = 0;
  for (uint64_t c = first; r >= 0 && c <= last
       && atomic_load (&o->valid_snaps) > 0; c++) {
    uint64_t epoch = 0;
    r = cow_chunk (o, c, &epoch);
    copied |= r == 1;
    if (epoch > wait_for)
      wait_for = epoch;
  }
  if (r >= 0) {
    uint64_t epoch = changes_track (o, off, len);
    if (epoch > wait_for)
      wait_for = epoch;
  }
  *epochp = wait_for;
  return r < 0 ? r : copied;
}

/* A hint for frontends that choose which thread runs a write (ublk's
 * queue thread runs writes itself only while they do not sleep): whether
 * the write [off, off+len) may have to wait.  It does when some chunk of
 * it is a candidate not yet preserved for a valid snapshot (the copy reads
 * the origin and may wait for a throttle slot), when it is too large to be
 * staged (it waits for the staged changes and its epoch), when an offline
 * snapshot's marker must be made durable first, and, not knowing, when
 * snap_lock is taken exclusive right now.  The bits are read without the
 * chunk locks: H only goes 0 -> 1, so a stale bit says "may wait".  False
 * promises no copy and no commit wait, not that the write never sleeps
 * (its own I/O, the staging log, a busy lock).  An out-of-range write
 * fails at once: false.  Tries snap_lock shared, never waits for it.
 */
bool
fssnap_origin_write_may_wait (struct fssnap_origin *o, uint64_t off,
                              size_t len)
{
  if (off > o->size || len > o->size - off || len == 0)
    return false;
  if (atomic_load (&o->offline_unmarked) > 0)
    return true;
  if (atomic_load (&o->valid_snaps) == 0)
    return false;
  if (!staging_fits (o, STAGING_WRITE, len))
    return true;
  if (pthread_rwlock_tryrdlock (&o->snap_lock) != 0)
    return true;
  uint64_t first = off >> o->chunk_shift;
  uint64_t last = (off + len - 1) >> o->chunk_shift;
  bool wait = false;
  for (size_t i = 0; !wait && i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    for (uint64_t c = first; !wait && snap_is_valid (s) && c <= last; c++)
      wait = bitmap_test (&s->cand, c) && !bitmap_test (&s->pres, c);
  }
  pthread_rwlock_unlock (&o->snap_lock);
  return wait;
}
