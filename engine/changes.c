/* SPDX-License-Identifier: MIT */
/*
 * Changed-block tracking: which chunks may differ between two snapshots,
 * or between a snapshot and the live volume, for incremental backups.
 *
 * Maps, one bit per chunk:
 *   X (origin->changed)  chunks written since the newest published
 *                        snapshot; durable as map A of that snapshot.
 *   D (snap->changed)    chunks written between the previous snapshot and
 *                        this one: X as it was when this one was created.
 * Chunks that may differ between snapshots P < Q are the union of D over
 * every snapshot S with P < S <= Q (deleted ones still in the list
 * included), plus X if Q is the volume.  A snapshot also reads zeros where
 * a chunk was not a candidate, so chunks whose candidate bit differs
 * between P and Q may differ too (a block allocated but never written),
 * and against the volume so may every chunk that is not a candidate of P
 * (it reads as zeros there, as whatever the disk holds on the volume).
 *
 * Freeing a snapshot S merges its D into the next newer one (or into X if
 * S was the newest), durably, before S's files go; so every remaining
 * pair stays comparable.  Into the next one, the merged map is written
 * holding snap_lock only shared (writers go on), and set in memory after,
 * under exclusive, as S leaves the list: meanwhile S is still listed, so
 * every comparison ORs both maps.  Into X (S the newest, P the one
 * before): D_S is OR'ed into X under exclusive, then X is written as P's
 * map A holding snap_lock only shared; meanwhile writers log the bits they
 * add to X as A bits of S, still the newest, so as S leaves the list
 * (exclusive again) those bits are logged as A bits of P in the open
 * commit epoch, and S's files stay until it commits.  If neither the
 * merged map nor the record that it is lost can be written, S stays
 * (retained, its files kept), and the merge is tried again at the next
 * reap or restart.
 *
 * Exact across crashes: the first write to a chunk since the newest
 * snapshot logs bit A of that snapshot in the commit epoch it waits for
 * (commit.c), so the bit is durable before the data reaches the origin.
 * Where a map cannot be trusted (a transient snapshot is lost at restart,
 * a damaged or first-release metadata file), the snapshot's D, or X, is
 * marked lost, and comparisons that need it fail with -ESTALE: the user
 * takes a full copy instead of a wrong incremental one.
 *
 * The newest snapshot, deleted while a newer one is being created, is
 * freed only once that one is published (or given up): the new one's
 * metadata file takes X as its D before the publish, so a D merged into X
 * meanwhile would be missing from that map on disk.  The create reaps
 * again when it is done.
 *
 * Locks: writers set X bits under snap_lock shared (bits are atomic); the
 * hand-over at create runs under io_lock and snap_lock exclusive, with the
 * publish; merges and flag changes under snap_lock exclusive, but the
 * write of a merge into the next snapshot, and of a merge into X, under
 * snap_lock shared and reap_lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

/* The newest published snap, or NULL.  Caller holds snap_lock. */
static struct snap *
changes_newest_locked (struct fssnap_origin *o)
{
  for (size_t i = o->nsnaps; i-- > 0;)
    if (atomic_load (&o->snaps[i]->state) != SNAP_CREATING)
      return o->snaps[i];
  return NULL;
}

/* Whether every chunk in [first, last] is marked in X already. */
static bool
changes_all_marked (struct fssnap_origin *o, uint64_t first, uint64_t last)
{
  for (uint64_t c = first; c <= last; c++)
    if (!bitmap_test (&o->changed, c))
      return false;
  return true;
}

uint64_t
changes_track (struct fssnap_origin *o, uint64_t off, uint64_t len)
{
  if (len == 0)
    return 0;
  uint64_t first = off >> o->chunk_shift;
  uint64_t last = (off + len - 1) >> o->chunk_shift;
  if (changes_all_marked (o, first, last))
    return 0;                   /* the common case: no lock, no sync */
  uint64_t epoch = 0;
  pthread_rwlock_rdlock (&o->snap_lock);
  struct snap *newest = changes_newest_locked (o);
  for (uint64_t c = first; newest && c <= last; c++)
    if (!bitmap_set (&o->changed, c)) {
      uint64_t e = commit_add_change (o, newest, c);
      if (e > epoch)
        epoch = e;
    }
  pthread_rwlock_unlock (&o->snap_lock);
  return epoch;
}

static void
bitmap_copy (struct bitmap *dst, const struct bitmap *src)
{
  for (uint64_t w = 0; w < (dst->nbits + 63) / 64; w++)
    atomic_store (&dst->words[w], atomic_load (&src->words[w]));
}

static void
bitmap_or (struct bitmap *dst, const struct bitmap *src)
{
  for (uint64_t w = 0; w < (dst->nbits + 63) / 64; w++)
    atomic_fetch_or (&dst->words[w], atomic_load (&src->words[w]));
}

static void
bitmap_zero (struct bitmap *bm)
{
  for (uint64_t w = 0; w < (bm->nbits + 63) / 64; w++)
    atomic_store (&bm->words[w], 0);
}

void
changes_hand_over (struct fssnap_origin *o, struct snap *s)
{
  bitmap_copy (&s->changed, &o->changed);
  s->changed_lost = o->changed_lost;
  bitmap_zero (&o->changed);
  o->changed_lost = false;
}

/* Record D's trust as 'd_lost', and A's if s holds X (is or is about to be
 * the newest).  Caller holds snap_lock (exclusive, or shared with
 * reap_lock: what a merge writes; or owns the origin alone).
 */
static int
changes_persist_flags_with (struct fssnap_origin *o, struct snap *s,
                            bool d_lost, bool holds_x)
{
  if (!s->meta || s->untrusted)
    return 0;
  uint32_t flags = 0;
  if (d_lost)
    flags |= META_F_CHANGED_LOST;
  if (holds_x && o->changed_lost)
    flags |= META_F_AFTER_LOST;
  int r = meta_set_flags (s->meta, META_F_CHANGED_LOST | META_F_AFTER_LOST,
                          flags, snap_persistent (s));
  if (r < 0)
    engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: recording the trust of "
                "its change maps failed: %s", s->number, strerror (-r));
  return snap_persistent (s) ? r : 0;   /* else its maps go at restart */
}

/* The same with s's own D trust.  Caller holds snap_lock exclusive. */
static int
changes_persist_flags_as (struct fssnap_origin *o, struct snap *s,
                          bool holds_x)
{
  return changes_persist_flags_with (o, s, s->changed_lost, holds_x);
}

int
changes_persist_flags (struct fssnap_origin *o, struct snap *s)
{
  return changes_persist_flags_as (o, s, s == changes_newest_locked (o));
}

static void
changes_log_write_failed (struct fssnap_origin *o, struct snap *s, int err)
{
  engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: writing its change map "
              "failed (%s): it cannot be trusted for incremental backups",
              s->number, strerror (-err));
}

struct snap *
changes_merge_next_locked (struct fssnap_origin *o, size_t i)
{
  struct snap *next = i + 1 < o->nsnaps ? o->snaps[i + 1] : NULL;
  return next && atomic_load (&next->state) != SNAP_CREATING ? next : NULL;
}

int
changes_merge_write (struct fssnap_origin *o, struct snap *s,
                     struct snap *next, bool *lostp)
{
  if (atomic_load (&next->state) == SNAP_OFFLINE)
    return -EAGAIN;             /* its maps cannot be written now */
  *lostp = next->changed_lost || s->changed_lost;
  if (!next->meta || next->untrusted)
    return 0;
  struct bitmap merged;
  if (bitmap_init (&merged, next->changed.nbits) < 0)
    return -ENOMEM;
  bitmap_or (&merged, &next->changed);
  bitmap_or (&merged, &s->changed);
  int r = meta_write_map (next->meta, META_MAP_CHANGED, &merged,
                          snap_persistent (next));
  bitmap_free (&merged);
  if (r < 0) {
    changes_log_write_failed (o, next, r);
    *lostp = true;
  }
  return changes_persist_flags_with (o, next, *lostp,
                                     next == changes_newest_locked (o));
}

void
changes_merge_apply_locked (struct snap *s, struct snap *next, bool lost)
{
  bitmap_or (&next->changed, &s->changed);
  next->changed_lost = lost;
}

int
changes_volume_absorb_locked (struct fssnap_origin *o, size_t i,
                              struct snap **intop)
{
  struct snap *s = o->snaps[i];
  struct snap *into = i > 0 ? o->snaps[i - 1] : NULL;
  if (into && atomic_load (&into->state) == SNAP_OFFLINE)
    return -EAGAIN;             /* its maps cannot be written now */
  *intop = into;
  /* The volume's changes now count from the one before. */
  bitmap_or (&o->changed, &s->changed);
  o->changed_lost |= s->changed_lost;
  if (!into) {                  /* nothing older: nothing to compare with */
    bitmap_zero (&o->changed);
    o->changed_lost = false;
  }
  return 0;
}

int
changes_volume_write (struct fssnap_origin *o, struct snap *into,
                      struct bitmap *written)
{
  bitmap_copy (written, &o->changed);
  if (!into->meta || into->untrusted)
    return 0;
  int r = meta_write_map (into->meta, META_MAP_AFTER, written,
                          snap_persistent (into));
  return r < 0 ? r : changes_persist_flags_as (o, into, true);
}

int
changes_volume_catch_up_locked (struct fssnap_origin *o, struct snap *into,
                                const struct bitmap *written, int wr,
                                uint64_t *epochp)
{
  *epochp = 0;
  if (!into->meta || into->untrusted)
    return 0;
  if (wr < 0) {
    changes_log_write_failed (o, into, wr);
    o->changed_lost = true;
    return changes_persist_flags_as (o, into, true);
  }
  for (uint64_t w = 0; w < (o->changed.nbits + 63) / 64; w++) {
    uint64_t late = atomic_load (&o->changed.words[w])
                    & ~atomic_load (&written->words[w]);
    for (; late; late &= late - 1) {
      uint64_t e = commit_add_change (o, into,
                                      w * 64 + (uint64_t) __builtin_ctzll (late));
      if (e > *epochp)
        *epochp = e;
    }
  }
  return 0;
}

/* ---- Comparing ---------------------------------------------------------- */

/* The sequence and candidate map of snapshot num, or UINT64_MAX and NULL
 * for the volume.  Caller holds snap_lock.
 */
static int
changes_point_locked (struct fssnap_origin *o, int num, uint64_t *seqp,
                      const struct bitmap **candp)
{
  *candp = NULL;
  if (num == FSSNAP_VOLUME) {
    *seqp = UINT64_MAX;
    return 0;
  }
  for (size_t i = 0; num >= 0 && i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    int st = atomic_load (&s->state);
    if (s->number_held && s->number == (unsigned) num && st == SNAP_OFFLINE)
      return -EAGAIN;
    if (s->number_held && s->number == (unsigned) num && st != SNAP_DELETED
        && st != SNAP_CREATING) {
      *seqp = s->seq;
      *candp = &s->cand;
      return 0;
    }
  }
  return -ENOENT;
}

/* The maps to OR for (lo, hi]; -ESTALE if one cannot be trusted.
 * Caller holds snap_lock.
 */
static int
changes_collect_locked (struct fssnap_origin *o, uint64_t lo, uint64_t hi,
                        const struct bitmap **maps, size_t *n, char *err,
                        size_t errlen)
{
  *n = 0;
  for (size_t i = 0; i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (s->seq <= lo || s->seq > hi
        || atomic_load (&s->state) == SNAP_CREATING)
      continue;
    if (atomic_load (&s->state) == SNAP_OFFLINE) {
      snprintf (err, errlen, "snapshot %u is offline: the changes it "
                "recorded cannot be read now", s->number);
      return -EAGAIN;
    }
    if (s->changed_lost || s->untrusted) {
      snprintf (err, errlen, "the changes recorded by snapshot %u cannot be "
                "trusted (a transient snapshot was lost at a restart, or its "
                "metadata was damaged or predates change tracking)",
                s->number);
      return -ESTALE;
    }
    maps[(*n)++] = &s->changed;
  }
  if (hi == UINT64_MAX) {
    if (o->changed_lost) {
      snprintf (err, errlen, "the changes made to the volume since the newest "
                "snapshot cannot be trusted (that snapshot was transient and "
                "lost at a restart, or its metadata was damaged)");
      return -ESTALE;
    }
    maps[(*n)++] = &o->changed;
  }
  return 0;
}

/* Whether chunk c may differ: written in between (maps), or read as zeros
 * on one side only (candidate maps ca and cb; NULL: the volume).
 */
static bool
changes_chunk (const struct bitmap **maps, size_t n, const struct bitmap *ca,
               const struct bitmap *cb, uint64_t c)
{
  bool in_a = ca ? bitmap_test (ca, c) : true;
  bool in_b = cb ? bitmap_test (cb, c) : true;
  if (in_a != in_b)
    return true;
  for (size_t k = 0; k < n; k++)
    if (bitmap_test (maps[k], c))
      return true;
  return false;
}

/* Report the chunk runs of [off, end) that may differ or not, as extents
 * clipped to [off, end).
 */
static int
changes_report (struct fssnap_origin *o, const struct bitmap **maps, size_t n,
                const struct bitmap *ca, const struct bitmap *cb,
                uint64_t off, uint64_t end, fssnap_extent_fn fn, void *opaque)
{
  uint64_t first = off >> o->chunk_shift;
  uint64_t last = (end - 1) >> o->chunk_shift;
  uint64_t run_start = off;
  bool run_changed = false;
  for (uint64_t c = first; c <= last; c++) {
    bool changed = changes_chunk (maps, n, ca, cb, c);
    uint64_t start = c << o->chunk_shift;
    if (c == first)
      run_changed = changed;
    else if (changed != run_changed) {
      int r = fn (opaque, run_start, start - run_start, !run_changed);
      if (r)
        return r;
      run_start = start;
      run_changed = changed;
    }
  }
  return fn (opaque, run_start, end - run_start, !run_changed);
}

int
fssnap_changes (struct fssnap_origin *o, int a, int b, uint64_t off,
                uint64_t len, fssnap_extent_fn fn, void *opaque,
                char *errmsg, size_t errlen)
{
  char errbuf[256];
  if (!errmsg || errlen == 0) {
    errmsg = errbuf;
    errlen = sizeof errbuf;
  }
  *errmsg = '\0';
  if (off > o->size || len > o->size - off)
    return -EINVAL;
  if (len == 0)
    return 0;
  size_t n = 0;
  uint64_t sa, sb;
  const struct bitmap *ca, *cb;
  pthread_rwlock_rdlock (&o->snap_lock);
  const struct bitmap **maps = malloc ((o->nsnaps + 1) * sizeof *maps);
  int r = maps ? changes_point_locked (o, a, &sa, &ca) : -ENOMEM;
  if (r == 0)
    r = changes_point_locked (o, b, &sb, &cb);
  if (r == -EAGAIN)
    snprintf (errmsg, errlen, "snapshot %d is offline: its files cannot be "
              "read now", changes_point_locked (o, a, &sa, &ca) == -EAGAIN
                          ? a : b);
  if (r == 0 && sa != sb)
    r = changes_collect_locked (o, sa < sb ? sa : sb, sa < sb ? sb : sa, maps,
                                &n, errmsg, errlen);
  if (r == 0)
    r = changes_report (o, maps, n, ca, cb, off, off + len, fn, opaque);
  pthread_rwlock_unlock (&o->snap_lock);
  free (maps);
  return r;
}
