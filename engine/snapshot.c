/* SPDX-License-Identifier: MIT */
/*
 * Snapshot lifecycle and the snapshot read path.
 *
 * Create: pick the lowest free number and a new sequence number, make the
 * bitmaps and the store, then quiesce origin writes (io_lock exclusive),
 * let the caller's callback fill the candidate map and publish the
 * snapshot as valid.  Everything that can be slow happens before the
 * quiesce, except the callback itself.
 *
 * With a state dir, each snapshot also has a metadata file (meta.c), written
 * with C before the snapshot is published; every state change is written
 * to it (and synced, unless transient) before it takes effect for writers.
 *
 * Delete: the snapshot is marked deleted at once, so it takes no more
 * copies and reads of it fail.  Its number is released when no handle is
 * open; its data when no older valid snapshot may read a copy it owns
 * (snap_reap).  A snapshot is freed when its last reference goes: list
 * membership, open handles and copies queued for its store each hold one.
 *
 * Read of chunk c of snapshot S:
 *   not a candidate         -> zeros;
 *   candidate, not copied   -> the origin, read under chunk lock c so that
 *                              no copy-and-overwrite of c can run meanwhile;
 *   copied                  -> the copy of the owner (cow.c), from its
 *                              translation table if still there, else from
 *                              its store (a copy leaves the table only once
 *                              it is in the store).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/size.h"
#include "engine/internal.h"

struct fssnap_snapshot {
  struct fssnap_origin *origin;
  struct snap *snap;
};

struct fssnap_candidates {
  struct fssnap_origin *origin;
  struct bitmap *map;
  const char *mountpoint;       /* opts->mountpoint, or NULL */
};

/* ---- References and states ------------------------------------------ */

void
snap_ref (struct snap *s)
{
  atomic_fetch_add (&s->refs, 1);
}

static void
snap_destroy (struct snap *s)
{
  xtable_destroy (&s->table);
  /* The metadata file is what makes a snapshot exist after a restart:
   * remove it (durably) before the store it points into.
   */
  bool had_meta = s->meta != NULL;
  int r = meta_close (s->meta, s->discard);
  if (r == 0 && s->discard && had_meta && snap_persistent (s))
    r = origin_sync_state_dir (s->origin);
  if (r < 0)                    /* the file says it exists: keep its store */
    engine_log (s->origin, FSSNAP_LOG_ERR, "snapshot %u: removing its "
                "metadata file failed (%s): its files are kept, and the next "
                "start removes them", s->number, strerror (-r));
  if (s->store && s->discard && r == 0)
    engine_log (s->origin, FSSNAP_LOG_INFO, "snapshot %u: removing its %s "
                "backing store %s (%llu bytes of copies)", s->number,
                s->store->ops->kind, s->store->path,
                (unsigned long long) store_usage (s->store));
  store_destroy (s->store, s->discard && r == 0);
  bitmap_free (&s->cand);
  bitmap_free (&s->pres);
  bitmap_free (&s->owner);
  bitmap_free (&s->changed);
  free (s->mountpoint);
  free (s);
}

void
snap_unref (struct snap *s)
{
  if (atomic_fetch_sub (&s->refs, 1) == 1)
    snap_destroy (s);
}

bool
snap_is_valid (const struct snap *s)
{
  return atomic_load (&s->state) == SNAP_VALID;
}

/* Create s's .missed marker (not yet durable).  Caller holds state_lock. */
static int
snap_write_missed_locked (struct fssnap_origin *o, struct snap *s)
{
  char *path = snap_state_file (o, s->number, s->seq, "missed");
  if (!path)
    return -ENOMEM;
  int fd = o->io->open (o->io->opaque, path, O_WRONLY | O_CREAT | O_CLOEXEC,
                        0600);
  free (path);
  if (fd < 0)
    return fd;
  o->io->close (o->io->opaque, fd);
  return 0;
}

/* Record s's state in its metadata file, synced unless transient, so that
 * a restart never trusts a state that is no longer true.  If the file
 * cannot take it, a durable .missed marker says the same (recovery then
 * disables s); failing that, removing the file does, durably, if no older
 * snapshot can need the copies s owns.  Returns 0 once one of them is
 * durable, else the error (logged).  Caller holds state_lock.
 */
static int
snap_persist_state_locked (struct snap *s, enum meta_state state)
{
  struct fssnap_origin *o = s->origin;
  if (!s->meta || s->untrusted)   /* its file is never trusted again */
    return 0;
  int r = meta_set_state (s->meta, state, s->reason, snap_persistent (s));
  if (r == 0 || !snap_persistent (s))   /* else it is gone at restart */
    return 0;
  engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: recording its state in %s "
              "failed (%s): recording that it missed copies instead",
              s->number, s->meta->path, strerror (-r));
  r = snap_write_missed_locked (o, s);
  if (r == 0)
    r = origin_sync_state_dir (o);
  if (r == 0)
    return 0;
  if (atomic_load (&s->owned_count) == 0) {
    r = o->io->unlink (o->io->opaque, s->meta->path);
    if (r == 0)
      r = origin_sync_state_dir (o);
    if (r == 0)
      return 0;
  }
  engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: no durable record that it is "
              "no longer valid (%s); a restart may bring it back valid",
              s->number, strerror (-r));
  return r;
}

/* Move s from valid to 'state' with a reason; *durable says whether that
 * is on disk (0) or the error.  Takes state_lock.
 */
static bool
snap_leave_valid (struct snap *s, enum snap_state state, const char *why,
                  int *durable)
{
  struct fssnap_origin *o = s->origin;
  bool was_valid;
  *durable = 0;
  pthread_mutex_lock (&o->state_lock);
  was_valid = atomic_load (&s->state) == SNAP_VALID;
  if (was_valid || (state == SNAP_DELETED
                    && atomic_load (&s->state) == SNAP_DISABLED)) {
    atomic_store (&s->state, state);
    if (why)
      snprintf (s->reason, sizeof s->reason, "%s", why);
    *durable = snap_persist_state_locked (s, state == SNAP_DELETED
                                             ? META_DELETED : META_DISABLED);
  }
  pthread_mutex_unlock (&o->state_lock);
  if (was_valid)
    atomic_fetch_sub (&o->valid_snaps, 1);
  return was_valid;
}

int
snap_disable (struct snap *s, const char *fmt, ...)
{
  char why[256];
  va_list ap;
  int durable;
  va_start (ap, fmt);
  vsnprintf (why, sizeof why, fmt, ap);
  va_end (ap);
  if (snap_leave_valid (s, SNAP_DISABLED, why, &durable))
    engine_log (s->origin, FSSNAP_LOG_ERR, "snapshot %u disabled: %s",
                s->number, why);
  return durable;
}

void
snap_disable_readers (struct fssnap_origin *o, struct snap *owner,
                      uint64_t c, const char *why)
{
  pthread_rwlock_rdlock (&o->snap_lock);
  for (size_t i = 0; i < o->nsnaps && o->snaps[i]->seq <= owner->seq; i++) {
    struct snap *s = o->snaps[i];
    if (s == owner || (bitmap_test (&s->pres, c)
                       && cow_owner_of (o, s, c) == owner))
      snap_disable (s, "%s", why);
  }
  pthread_rwlock_unlock (&o->snap_lock);
}

void
snap_mark_deleted (struct snap *s, const char *why)
{
  int durable;
  snap_leave_valid (s, SNAP_DELETED, NULL, &durable);
  engine_log (s->origin, FSSNAP_LOG_INFO, "snapshot %u (%s) deleted: %s",
              s->number, s->uuid, why);
}

/* Whether a valid snapshot older than snaps[i] exists.
 * Caller holds snap_lock.
 */
static bool
snap_has_older_valid (struct fssnap_origin *o, size_t i)
{
  while (i-- > 0)
    if (snap_is_valid (o->snaps[i]))
      return true;
  return false;
}

static void
snap_list_remove_locked (struct fssnap_origin *o, size_t i)
{
  memmove (&o->snaps[i], &o->snaps[i + 1],
           (o->nsnaps - i - 1) * sizeof *o->snaps);
  o->nsnaps--;
}

/* Whether the snap after i is still being created.  Its create takes the
 * volume's change map (X) as its own D, writing it to its metadata file
 * first: so a D merged into X meanwhile could reach its map in memory but
 * not on disk.  The create reaps again once the snap is published (then
 * the D goes into its map) or given up.  Caller holds snap_lock.
 */
static bool
snap_creating_after_locked (struct fssnap_origin *o, size_t i)
{
  return i + 1 < o->nsnaps
         && atomic_load (&o->snaps[i + 1]->state) == SNAP_CREATING;
}

/* The index of the first deleted snap from 'from' on that nothing needs
 * (its number released if no handle is open), or -1.  Caller holds
 * snap_lock exclusive.
 */
static ssize_t
snap_reapable_locked (struct fssnap_origin *o, size_t from)
{
  for (size_t i = from; i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (atomic_load (&s->state) != SNAP_DELETED)
      continue;
    if (s->number_held && s->open_count == 0) {
      s->number_held = false;
      o->number_used[s->number] = false;
    }
    if (s->number_held)
      continue;
    if (atomic_load (&s->owned_count) > 0 && snap_has_older_valid (o, i))
      continue;                 /* retained: older snapshots read its copies */
    if (snap_creating_after_locked (o, i))
      continue;                 /* until the create reaps again */
    return (ssize_t) i;
  }
  return -1;
}

/* Take s out of the list; its files go with its last reference.  Caller
 * holds snap_lock exclusive.
 */
static void
snap_unlist_locked (struct fssnap_origin *o, struct snap *s)
{
  for (size_t i = 0; i < o->nsnaps; i++)
    if (o->snaps[i] == s) {
      snap_list_remove_locked (o, i);
      break;
    }
  atomic_store (&s->removed, true);
  s->discard = true;
}

/* Merge s's D into next's, the write holding snap_lock shared, then take
 * s out of the list: 0, or the error that keeps s (retained).  Caller
 * holds reap_lock and no snap_lock; takes snap_lock shared, then
 * exclusive.
 */
static int
snap_reap_into_next (struct fssnap_origin *o, struct snap *s,
                     struct snap *next)
{
  bool lost;
  pthread_rwlock_rdlock (&o->snap_lock);
  int r = changes_merge_write (o, s, next, &lost);
  pthread_rwlock_unlock (&o->snap_lock);
  if (r < 0)
    return r;
  pthread_rwlock_wrlock (&o->snap_lock);
  changes_merge_apply_locked (s, next, lost);
  snap_unlist_locked (o, s);
  pthread_rwlock_unlock (&o->snap_lock);
  return 0;
}

/* Whether a snapshot newer than s has been published: then s's D goes
 * into that one's, not into the volume's.  Caller holds snap_lock.
 */
static bool
snap_published_after_locked (struct fssnap_origin *o, struct snap *s)
{
  for (size_t i = o->nsnaps; i-- > 0 && o->snaps[i] != s;)
    if (atomic_load (&o->snaps[i]->state) != SNAP_CREATING)
      return true;
  return false;
}

/* s, the newest, had its D OR'ed into the volume's (X): write X as into's
 * map A holding snap_lock shared, then, exclusive, log what writers added
 * to X meanwhile as A bits of into and take s out of the list; its files
 * wait for that epoch.  0, 1 if a snapshot was published meanwhile (reap
 * s again: into the next), or the error that keeps s (retained).  Caller
 * holds reap_lock and no snap_lock; takes snap_lock shared, then
 * exclusive.
 */
static int
snap_reap_into_volume (struct fssnap_origin *o, struct snap *s,
                       struct snap *into)
{
  struct bitmap written;
  if (bitmap_init (&written, o->changed.nbits) < 0)
    return -ENOMEM;
  pthread_rwlock_rdlock (&o->snap_lock);
  int wr = changes_volume_write (o, into, &written);
  pthread_rwlock_unlock (&o->snap_lock);
  uint64_t epoch = 0;
  int r = 1;
  pthread_rwlock_wrlock (&o->snap_lock);
  if (!snap_published_after_locked (o, s)
      && (r = changes_volume_catch_up_locked (o, into, &written, wr,
                                              &epoch)) == 0)
    snap_unlist_locked (o, s);
  pthread_rwlock_unlock (&o->snap_lock);
  bitmap_free (&written);
  commit_wait (o, epoch);       /* before s's files go */
  return r;
}

/* Free every deleted snap nothing needs any more, merging its change map
 * into its neighbour's first.  Only reaps remove snaps from the list but
 * for a create's abandon (of the newest, never published), and reap_lock
 * serialises them, so s and its neighbours stay listed while the lock is
 * down.  Takes reap_lock, then snap_lock.
 */
void
snap_reap (struct fssnap_origin *o)
{
  pthread_mutex_lock (&o->reap_lock);
  size_t from = 0;
  for (;;) {
    pthread_rwlock_wrlock (&o->snap_lock);
    ssize_t i = snap_reapable_locked (o, from);
    struct snap *s = i >= 0 ? o->snaps[i] : NULL;
    struct snap *next = s ? changes_merge_next_locked (o, (size_t) i) : NULL;
    struct snap *into = NULL;
    int r = 0;
    if (s && !next
        && (r = changes_volume_absorb_locked (o, (size_t) i, &into)) == 0
        && !into)
      snap_unlist_locked (o, s);
    if (next)
      snap_ref (next);
    if (into)
      snap_ref (into);
    pthread_rwlock_unlock (&o->snap_lock);
    if (!s)
      break;
    if (next) {
      r = snap_reap_into_next (o, s, next);
      snap_unref (next);
    }
    else if (into) {
      r = snap_reap_into_volume (o, s, into);
      snap_unref (into);
    }
    if (r < 0)
      from = (size_t) i + 1;    /* retained: its D cannot be merged now */
    else if (r == 0)
      snap_unref (s);           /* the store goes with the last reference */
  }
  pthread_mutex_unlock (&o->reap_lock);
}

/* The visible snap with this number.  Caller holds snap_lock. */
static struct snap *
snap_find_locked (struct fssnap_origin *o, unsigned num)
{
  for (size_t i = 0; i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (s->number_held && s->number == num)
      return s;
  }
  return NULL;
}

int
snap_mark_missed (struct fssnap_origin *o)
{
  if (atomic_load (&o->offline_unmarked) == 0)
    return 0;
  int r = 0;
  unsigned marked = 0;
  pthread_rwlock_rdlock (&o->snap_lock);
  pthread_mutex_lock (&o->state_lock);
  for (size_t i = 0; r == 0 && i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (atomic_load (&s->state) == SNAP_OFFLINE && !s->missed_marked)
      r = snap_write_missed_locked (o, s);
  }
  if (r == 0)
    r = origin_sync_state_dir (o);
  for (size_t i = 0; r == 0 && i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (atomic_load (&s->state) == SNAP_OFFLINE && !s->missed_marked) {
      s->missed_marked = true;
      marked++;
    }
  }
  if (r < 0)
    engine_log (o, FSSNAP_LOG_ERR, "cannot record that an offline snapshot "
                "misses this write (%s): the write is refused", strerror (-r));
  else
    atomic_fetch_sub (&o->offline_unmarked, marked);
  pthread_mutex_unlock (&o->state_lock);
  pthread_rwlock_unlock (&o->snap_lock);
  return r;
}

/* ---- Creation -------------------------------------------------------- */

static void
snap_make_uuid (char *out)
{
  unsigned char b[16];
  if (getrandom (b, sizeof b, 0) != sizeof b) {
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    for (size_t i = 0; i < sizeof b; i++)
      b[i] = (unsigned char) ((ts.tv_nsec >> (i % 4 * 8)) ^ (i * 37) ^ rand ());
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  snprintf (out, FSSNAP_UUID_STRLEN,
            "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
            b[11], b[12], b[13], b[14], b[15]);
}

/* Reserve a number and a sequence for a new snapshot of chunk size cs.
 * Takes snap_lock exclusive.
 */
/* Whether a snapshot with these options may join the others: an unlinked
 * store cannot survive a restart, so it must not hold copies that a
 * persistent (older) snapshot reads.  Caller holds snap_lock.
 */
static bool
snap_options_fit_locked (struct fssnap_origin *o,
                         const struct fssnap_create_opts *opts, char *err,
                         size_t errlen)
{
  if (!opts->transient && !opts->unlink && !o->state_dir) {
    snprintf (err, errlen, "a snapshot that survives restarts needs a state "
              "directory; use -o transient for one that does not");
    return false;
  }
  if (!opts->unlink)
    return true;
  for (size_t i = 0; i < o->nsnaps; i++)
    if (snap_persistent (o->snaps[i]) || o->snaps[i]->untrusted) {
      snprintf (err, errlen, "unlink: an unlinked backing store is lost at "
                "restart, but it could hold copies that persistent "
                "snapshot %u needs; unlink works when every snapshot is "
                "transient", o->snaps[i]->number);
      return false;
    }
  return true;
}

/* Whether the origin's chunk size is that of its snapshots: not when the
 * only ones there are offline (their files, which say, cannot be read).
 * Caller holds snap_lock.
 */
static bool
snap_geometry_known_locked (struct fssnap_origin *o, char *err,
                            size_t errlen)
{
  const struct snap *offline = NULL;
  for (size_t i = 0; i < o->nsnaps; i++) {
    const struct snap *s = o->snaps[i];
    if (!s->untrusted)
      return true;
    if (atomic_load (&s->state) == SNAP_OFFLINE)
      offline = s;
  }
  if (offline)
    snprintf (err, errlen, "snapshot %u is offline, and with it the chunk "
              "size new snapshots must share: try again once a restart can "
              "read its files", offline->number);
  return !offline;
}

static int
snap_reserve (struct fssnap_origin *o, const struct fssnap_create_opts *opts,
              uint32_t cs, unsigned *nump, uint64_t *seqp, char *err,
              size_t errlen)
{
  int r = -ENOSPC;
  pthread_rwlock_wrlock (&o->snap_lock);
  if (!snap_options_fit_locked (o, opts, err, errlen)) {
    r = -EINVAL;
    goto out;
  }
  if (!snap_geometry_known_locked (o, err, errlen)) {
    r = -EAGAIN;
    goto out;
  }
  if (o->nsnaps > 0 && cs != o->chunksize) {
    char want[32], have[32];
    size_format (cs, want, sizeof want);
    size_format (o->chunksize, have, sizeof have);
    snprintf (err, errlen, "chunk size %s differs from %s, the chunk size "
              "of the existing snapshots of %s", want, have, o->path);
    r = -EINVAL;
    goto out;
  }
  for (unsigned n = 0; n < FSSNAP_MAX_SNAPSHOTS; n++) {
    if (o->number_used[n])
      continue;
    o->number_used[n] = true;
    *nump = n;
    *seqp = o->next_seq++;
    r = 0;
    goto out;
  }
  snprintf (err, errlen, "all %d snapshot numbers are in use",
            FSSNAP_MAX_SNAPSHOTS);
out:
  pthread_rwlock_unlock (&o->snap_lock);
  return r;
}

struct snap *
snap_alloc (struct fssnap_origin *o, uint32_t cs, unsigned num, uint64_t seq)
{
  struct snap *s = calloc (1, sizeof *s);
  if (!s)
    return NULL;
  s->origin = o;
  s->seq = seq;
  s->number = num;
  s->chunksize = cs;
  s->nchunks = (o->size + cs - 1) / cs;
  s->number_held = true;
  atomic_init (&s->state, SNAP_CREATING);
  atomic_init (&s->refs, 1);
  if (bitmap_init (&s->cand, s->nchunks) < 0
      || bitmap_init (&s->pres, s->nchunks) < 0
      || bitmap_init (&s->owner, s->nchunks) < 0
      || bitmap_init (&s->changed, s->nchunks) < 0
      || xtable_init (&s->table, o->max_mem_chunks) < 0) {
    bitmap_free (&s->cand);
    bitmap_free (&s->pres);
    bitmap_free (&s->owner);
    bitmap_free (&s->changed);
    free (s);
    return NULL;
  }
  return s;
}

static struct snap *
snap_new (struct fssnap_origin *o, const struct fssnap_create_opts *opts,
          uint32_t cs, unsigned num, uint64_t seq)
{
  struct snap *s = snap_alloc (o, cs, num, seq);
  if (!s)
    return NULL;
  s->maxsize = opts->maxsize;
  s->create_time = time (NULL);
  snap_make_uuid (s->uuid);
  snprintf (s->group, sizeof s->group, "%s", opts->group ? opts->group : "");
  if (opts->mountpoint && !(s->mountpoint = strdup (opts->mountpoint))) {
    snap_unref (s);
    return NULL;
  }
  return s;
}

/* Fill a metadata header describing s (at creation: the caller owns s). */
static void
snap_fill_header (struct snap *s, struct meta_header *h)
{
  struct fssnap_origin *o = s->origin;
  memset (h, 0, sizeof *h);
  h->seq = s->seq;
  h->number = s->number;
  h->state = META_VALID;
  h->flags = (snap_persistent (s) ? 0 : META_F_TRANSIENT)
    | (s->store && s->store->unlinked ? META_F_UNLINK : 0);
  h->chunksize = s->chunksize;
  h->nchunks = s->nchunks;
  h->origin_size = o->size;
  h->origin_kind = o->origin_kind;
  h->origin_dev = o->origin_dev;
  h->origin_ino = o->origin_ino;
  h->maxsize = s->maxsize;
  h->max_backfile_size = s->max_backfile_size;
  h->create_time = s->create_time;
  memcpy (h->uuid, s->uuid, sizeof h->uuid);
  snprintf (h->origin_path, sizeof h->origin_path, "%s", o->path);
  snprintf (h->store_path, sizeof h->store_path, "%s",
            s->store ? s->store->path : "");
  snprintf (h->mountpoint, sizeof h->mountpoint, "%s",
            s->mountpoint ? s->mountpoint : "");
  snprintf (h->reason, sizeof h->reason, "%s", s->reason);
  memcpy (h->group, s->group, sizeof h->group);
}

char *
snap_state_file (struct fssnap_origin *o, unsigned num, uint64_t seq,
                 const char *ext)
{
  char *path;
  if (asprintf (&path, "%s/%s.snap%u.%llu.%s", o->state_dir, o->basename, num,
                (unsigned long long) seq, ext) < 0)
    return NULL;
  return path;
}

/* Write s's metadata file (as NAME.tmp, renamed once complete) and make
 * its directory entries durable.  Caller holds io_lock exclusive (the
 * candidate map is final).
 */
static int
snap_write_meta (struct fssnap_origin *o, struct snap *s, char *err,
                 size_t errlen)
{
  if (!o->state_dir)
    return 0;
  char *path = snap_state_file (o, s->number, s->seq, "meta");
  char *tmp = snap_state_file (o, s->number, s->seq, "meta.tmp");
  int r = -ENOMEM;
  if (path && tmp) {
    struct meta_header h;
    snap_fill_header (s, &h);
    r = meta_create (o->io, tmp, &h, &s->cand, &o->changed, snap_persistent (s),
                     &s->meta, err, errlen);
  }
  if (r == 0) {
    r = meta_rename (s->meta, path);
    if (r < 0)
      snprintf (err, errlen, "cannot rename %s: %s", tmp, strerror (-r));
  }
  free (path);
  free (tmp);
  if (r == 0)
    r = store_sync (s->store);
  if (r == 0 && snap_persistent (s))
    r = origin_sync_state_dir (o);
  if (r < 0 && !*err)
    snprintf (err, errlen, "cannot make the snapshot's files durable: %s",
              strerror (-r));
  return r;
}

void
store_set_wrap (struct fssnap_origin *o, store_wrap_fn wrap, void *opaque)
{
  o->store_wrap = wrap;
  o->store_wrap_opaque = opaque;
}

/* Make s's store: transient (never synced) for -o transient or unlink,
 * else persistent.  Caller holds create_lock.
 */
static int
snap_open_store (struct fssnap_origin *o, struct snap *s,
                 const struct fssnap_create_opts *opts, char *err,
                 size_t errlen)
{
  const char *location = opts->backing_store ? opts->backing_store
                                             : o->state_dir;
  if (!location) {
    snprintf (err, errlen, "no backing store given (-o backing-store=PATH)");
    return -EINVAL;
  }
  char name[512];
  snprintf (name, sizeof name, "%s.snap%u.%llu.cow", o->basename, s->number,
            (unsigned long long) s->seq);
  struct store_params p = {
    .io = o->io, .location = location, .name = name,
    .chunksize = s->chunksize, .nchunks = s->nchunks, .origin_size = o->size,
    .max_file_size = opts->max_backfile_size, .unlink = opts->unlink,
  };
  const struct store_ops *ops = opts->transient || opts->unlink
                                ? &store_transient_ops : &store_file_ops;
  s->max_backfile_size = opts->max_backfile_size;
  int r = ops->create (&p, &s->store, err, errlen);
  if (r == 0 && o->store_wrap)
    s->store = o->store_wrap (o->store_wrap_opaque, s->store);
  return r;
}

/* Takes snap_lock exclusive. */
static void
snap_release_number (struct fssnap_origin *o, unsigned num)
{
  pthread_rwlock_wrlock (&o->snap_lock);
  o->number_used[num] = false;
  pthread_rwlock_unlock (&o->snap_lock);
}

/* Give up a snap that was never published.  Takes snap_lock exclusive. */
static void
snap_abandon (struct fssnap_origin *o, struct snap *s, bool listed)
{
  pthread_rwlock_wrlock (&o->snap_lock);
  if (listed)
    for (size_t i = 0; i < o->nsnaps; i++)
      if (o->snaps[i] == s)
        snap_list_remove_locked (o, i);
  pthread_rwlock_unlock (&o->snap_lock);
  snap_release_number (o, s->number);
  s->discard = true;            /* remove the store (and meta) it made */
  snap_unref (s);
}

/* Append s to the list.  Takes snap_lock exclusive. */
static int
snap_list_add (struct fssnap_origin *o, struct snap *s)
{
  int r = 0;
  pthread_rwlock_wrlock (&o->snap_lock);
  if (o->nsnaps == o->snaps_alloc) {
    size_t n = o->snaps_alloc ? 2 * o->snaps_alloc : 16;
    struct snap **p = realloc (o->snaps, n * sizeof *p);
    if (!p)
      r = -ENOMEM;
    else {
      o->snaps = p;
      o->snaps_alloc = n;
    }
  }
  if (r == 0)
    o->snaps[o->nsnaps++] = s;
  pthread_rwlock_unlock (&o->snap_lock);
  return r;
}

/* With origin writes quiesced: build C and publish s.
 * Caller holds io_lock exclusive.
 */
static int
snap_fill_and_publish (struct fssnap_origin *o, struct snap *s,
                       const struct fssnap_create_opts *opts, char *err,
                       size_t errlen)
{
  if (s->chunksize != o->chunksize
      && origin_set_chunksize (o, s->chunksize) < 0) {
    snprintf (err, errlen, "out of memory for the change map");
    return -ENOMEM;
  }
  int r;
  /* The snapshot is the origin as acknowledged so far, staged writes
   * included: what it reads from the origin must survive a crash as it
   * is, so make it durable first (and the staging log's marker with it).
   */
  r = staging_wait (o, 0);
  if (r == 0 && snap_persistent (s))
    r = o->io->fsync (o->io->opaque, o->fd);
  if (r == 0 && snap_persistent (s))
    r = staging_sync_marker (o);
  if (r < 0) {
    snprintf (err, errlen, "cannot flush %s before the snapshot: %s",
              o->path, strerror (-r));
    return r;
  }

  struct fssnap_candidates cands = { .origin = o, .map = &s->cand,
                                     .mountpoint = opts->mountpoint };
  if (opts->candidates) {
    r = opts->candidates (opts->candidates_opaque, &cands);
    if (r < 0) {
      snprintf (err, errlen, "building the candidate map failed: %s",
                strerror (-r));
      return r;
    }
  }
  else
    fssnap_candidates_mark_all (&cands);
  s->cand_count = bitmap_count (&s->cand);
  r = snap_write_meta (o, s, err, errlen);
  if (r < 0)
    return r;
  /* With the publish, so that no reap sees X handed over but s unpublished. */
  pthread_rwlock_wrlock (&o->snap_lock);
  changes_hand_over (o, s);
  atomic_store (&s->state, SNAP_VALID);
  atomic_fetch_add (&o->valid_snaps, 1);
  pthread_rwlock_unlock (&o->snap_lock);
  return 0;
}

int
fssnap_snapshot_create (struct fssnap_origin *o,
                        const struct fssnap_create_opts *opts,
                        unsigned *nump, char *errmsg, size_t errlen)
{
  char errbuf[256];
  if (!errmsg || errlen == 0) {
    errmsg = errbuf;
    errlen = sizeof errbuf;
  }
  *errmsg = '\0';
  uint32_t cs = opts->chunksize ? opts->chunksize : o->chunksize;
  if (!chunksize_valid (cs)) {
    snprintf (errmsg, errlen, "chunk size %u is not a power of two from "
              "512 bytes to 1 MiB", cs);
    return -EINVAL;
  }

  unsigned num;
  uint64_t seq;
  bool listed = false;
  pthread_mutex_lock (&o->create_lock);
  int r = snap_reserve (o, opts, cs, &num, &seq, errmsg, errlen);
  if (r < 0)
    goto out;
  struct snap *s = snap_new (o, opts, cs, num, seq);
  if (!s) {
    snap_release_number (o, num);
    snprintf (errmsg, errlen, "out of memory for the snapshot's maps");
    r = -ENOMEM;
    goto out;
  }
  r = snap_open_store (o, s, opts, errmsg, errlen);
  if (r == 0)
    r = snap_list_add (o, s);
  if (r < 0) {
    snap_abandon (o, s, false);
    goto out;
  }

  listed = true;
  pthread_rwlock_wrlock (&o->io_lock);
  r = snap_fill_and_publish (o, s, opts, errmsg, errlen);
  pthread_rwlock_unlock (&o->io_lock);
  if (r < 0) {
    snap_abandon (o, s, true);
    goto out;
  }
  *nump = num;
  engine_log (o, FSSNAP_LOG_INFO,
              "snapshot %u (%s) created: %llu of %llu chunks are candidates, "
              "backing store %s", num, s->uuid,
              (unsigned long long) s->cand_count,
              (unsigned long long) s->nchunks, s->store->path);
out:
  pthread_mutex_unlock (&o->create_lock);
  if (listed)
    snap_reap (o);              /* what a delete left while s was creating */
  return r;
}

const char *
fssnap_candidates_origin_path (const struct fssnap_candidates *c)
{
  return c->origin->path;
}

const char *
fssnap_candidates_mountpoint (const struct fssnap_candidates *c)
{
  return c->mountpoint && *c->mountpoint ? c->mountpoint : NULL;
}

int
fssnap_candidates_origin_fd (const struct fssnap_candidates *c)
{
  return c->origin->io == fssnap_io_posix () ? c->origin->fd : -1;
}

uint64_t
fssnap_candidates_origin_size (const struct fssnap_candidates *c)
{
  return c->origin->size;
}

uint32_t
fssnap_candidates_chunksize (const struct fssnap_candidates *c)
{
  return c->origin->chunksize;
}

void
fssnap_candidates_mark (struct fssnap_candidates *c, uint64_t off,
                        uint64_t len)
{
  struct fssnap_origin *o = c->origin;
  if (len == 0 || off >= o->size)
    return;
  if (len > o->size - off)
    len = o->size - off;
  uint64_t first = off >> o->chunk_shift;
  uint64_t last = (off + len - 1) >> o->chunk_shift;
  bitmap_set_range (c->map, first, last - first + 1);
}

void
fssnap_candidates_mark_all (struct fssnap_candidates *c)
{
  bitmap_set_range (c->map, 0, c->map->nbits);
}

/* ---- Delete, open, close --------------------------------------------- */

/* snap_lock shared is enough to mark s deleted (state_lock orders its
 * state, as for a snapshot disabled by a failed copy), and writers take
 * it shared too: so they go on while the deleted state is made durable
 * (an fsync of the metadata file).  Create, open, close and the reap,
 * which change the list, wait for it.
 */
int
fssnap_snapshot_delete (struct fssnap_origin *o, unsigned num)
{
  int r = 0;
  pthread_rwlock_rdlock (&o->snap_lock);
  struct snap *s = snap_find_locked (o, num);
  if (!s || atomic_load (&s->state) == SNAP_DELETED)
    r = -ENOENT;
  else if (atomic_load (&s->state) == SNAP_CREATING
           || atomic_load (&s->state) == SNAP_OFFLINE)
    r = -EBUSY;
  else
    snap_mark_deleted (s, s->open_count ? "by request (still open: the "
                       "number is released on the last close)"
                       : "by request");
  pthread_rwlock_unlock (&o->snap_lock);
  if (r == 0)
    snap_reap (o);
  return r;
}

int
fssnap_snapshot_open (struct fssnap_origin *o, unsigned num,
                      struct fssnap_snapshot **snapp)
{
  struct fssnap_snapshot *h = malloc (sizeof *h);
  if (!h)
    return -ENOMEM;
  int r = 0;
  pthread_rwlock_wrlock (&o->snap_lock);
  struct snap *s = snap_find_locked (o, num);
  if (!s || atomic_load (&s->state) == SNAP_DELETED
      || atomic_load (&s->state) == SNAP_CREATING)
    r = -ENOENT;
  else if (atomic_load (&s->state) == SNAP_DISABLED)
    r = -EIO;
  else if (atomic_load (&s->state) == SNAP_OFFLINE)
    r = -EAGAIN;
  else {
    s->open_count++;
    snap_ref (s);
  }
  pthread_rwlock_unlock (&o->snap_lock);
  if (r < 0) {
    free (h);
    return r;
  }
  h->origin = o;
  h->snap = s;
  *snapp = h;
  return 0;
}

void
fssnap_snapshot_close (struct fssnap_snapshot *h)
{
  struct fssnap_origin *o = h->origin;
  struct snap *s = h->snap;
  pthread_rwlock_wrlock (&o->snap_lock);
  s->open_count--;
  bool deleted = atomic_load (&s->state) == SNAP_DELETED;
  pthread_rwlock_unlock (&o->snap_lock);
  if (deleted)
    snap_reap (o);
  snap_unref (s);
  free (h);
}

unsigned
fssnap_snapshot_number (const struct fssnap_snapshot *h)
{
  return h->snap->number;
}

uint64_t
fssnap_snapshot_size (const struct fssnap_snapshot *h)
{
  return h->origin->size;
}

/* ---- Reading ---------------------------------------------------------- */

/* Read [skip, skip+len) of copied chunk c of s.  Takes snap_lock shared. */
static int
snap_read_copy (struct fssnap_origin *o, struct snap *s, uint64_t c,
                void *buf, size_t skip, size_t len)
{
  int r;
  pthread_rwlock_rdlock (&o->snap_lock);
  struct snap *owner = cow_owner_of (o, s, c);
  if (!owner) {
    engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: chunk %llu was copied but "
                "no snapshot owns the copy", s->number, (unsigned long long) c);
    r = -EIO;
  }
  else {
    switch (xtable_read (&owner->table, c, buf, skip, len)) {
    case XTABLE_HIT: r = 0; break;
    case XTABLE_FAILED: r = -EIO; break;
    default:
      r = store_read_chunk (owner->store, c, buf, skip, len);
      if (r < 0)
        engine_log (o, FSSNAP_LOG_ERR, "snapshot %u: reading the copy of "
                    "chunk %llu from %s failed: %s", s->number,
                    (unsigned long long) c, owner->store->path,
                    strerror (-r));
      break;
    }
  }
  pthread_rwlock_unlock (&o->snap_lock);
  return r;
}

/* Read part of chunk c of s.  Takes chunk lock c, then snap_lock shared. */
static int
snap_read_chunk (struct fssnap_origin *o, struct snap *s, uint64_t c,
                 void *buf, size_t skip, size_t len)
{
  if (!bitmap_test (&s->cand, c)) {
    memset (buf, 0, len);
    return 0;
  }
  pthread_mutex_t *lock = chunk_lock (o, c);
  pthread_mutex_lock (lock);
  if (!bitmap_test (&s->pres, c)) {
    int r = io_pread_full (o->io, o->fd, buf, len,
                           (c << o->chunk_shift) + skip);
    pthread_mutex_unlock (lock);
    if (r < 0)
      origin_read_failed (o, (c << o->chunk_shift) + skip, len, r);
    return r;
  }
  pthread_mutex_unlock (lock);
  return snap_read_copy (o, s, c, buf, skip, len);
}

int
fssnap_snapshot_read (struct fssnap_snapshot *h, void *buf, size_t len,
                      uint64_t off)
{
  struct fssnap_origin *o = h->origin;
  struct snap *s = h->snap;
  if (off > o->size || len > o->size - off)
    return -EINVAL;
  while (len > 0) {
    if (!snap_is_valid (s))
      return -EIO;
    uint64_t c = off >> o->chunk_shift;
    size_t skip = off & (o->chunksize - 1);
    size_t n = o->chunksize - skip < len ? o->chunksize - skip : len;
    int r = snap_read_chunk (o, s, c, buf, skip, n);
    if (r < 0)
      return r;
    buf = (char *) buf + n;
    off += n;
    len -= n;
  }
  return 0;
}

int
fssnap_snapshot_extents (struct fssnap_snapshot *h, uint64_t off,
                         uint64_t len, fssnap_extent_fn fn, void *opaque)
{
  struct fssnap_origin *o = h->origin;
  struct snap *s = h->snap;
  if (off > o->size || len > o->size - off)
    return -EINVAL;
  if (!snap_is_valid (s))
    return -EIO;
  uint64_t end = off + len;
  while (off < end) {
    uint64_t c = off >> o->chunk_shift;
    bool hole = !bitmap_test (&s->cand, c);
    uint64_t next = bitmap_find (&s->cand, c, hole);
    uint64_t stop = next >= s->nchunks ? end : next << o->chunk_shift;
    if (stop > end)
      stop = end;
    int r = fn (opaque, off, stop - off, hole);
    if (r)
      return r;
    off = stop;
  }
  return 0;
}

/* ---- Information ------------------------------------------------------ */

const char *
fssnap_state_name (enum fssnap_state state)
{
  switch (state) {
  case FSSNAP_STATE_CREATING: return "creating";
  case FSSNAP_STATE_IDLE: return "idle";
  case FSSNAP_STATE_ACTIVE: return "active";
  case FSSNAP_STATE_DISABLED: return "disabled";
  case FSSNAP_STATE_DELETING: return "deleting";
  case FSSNAP_STATE_OFFLINE: return "offline";
  }
  return "unknown";
}

/* Caller holds snap_lock. */
static enum fssnap_state
snap_public_state (const struct snap *s)
{
  switch (atomic_load (&s->state)) {
  case SNAP_CREATING: return FSSNAP_STATE_CREATING;
  case SNAP_DISABLED: return FSSNAP_STATE_DISABLED;
  case SNAP_DELETED: return FSSNAP_STATE_DELETING;
  case SNAP_OFFLINE: return FSSNAP_STATE_OFFLINE;
  default: return s->open_count ? FSSNAP_STATE_ACTIVE : FSSNAP_STATE_IDLE;
  }
}

/* Caller holds snap_lock; takes state_lock. */
static void
snap_fill_info (struct fssnap_origin *o, struct snap *s,
                struct fssnap_snapshot_info *info)
{
  memset (info, 0, sizeof *info);
  info->number = s->number;
  info->seq = s->seq;
  memcpy (info->uuid, s->uuid, sizeof info->uuid);
  info->state = snap_public_state (s);
  pthread_mutex_lock (&o->state_lock);
  snprintf (info->reason, sizeof info->reason, "%s", s->reason);
  pthread_mutex_unlock (&o->state_lock);
  info->chunksize = s->chunksize;
  info->chunks = s->nchunks;
  info->candidate_chunks = s->cand_count;
  info->preserved_chunks = atomic_load (&s->pres_count);
  info->owned_chunks = atomic_load (&s->owned_count);
  info->backing_bytes = info->owned_chunks * s->chunksize;
  info->maxsize = s->maxsize;
  info->max_backfile_size = s->max_backfile_size;
  info->create_time = s->create_time;
  info->open_count = s->open_count;
  info->transient = !snap_persistent (s);
  if (s->store) {               /* an untrusted snapshot may have none */
    info->unlinked = s->store->unlinked;
    info->backing_files = s->store->nfiles;
    snprintf (info->backing_path, sizeof info->backing_path, "%s",
              s->store->path);
  }
  snprintf (info->mountpoint, sizeof info->mountpoint, "%s",
            s->mountpoint ? s->mountpoint : "");
  memcpy (info->group, s->group, sizeof info->group);
}

int
fssnap_snapshot_info (struct fssnap_origin *o, unsigned num,
                      struct fssnap_snapshot_info *info)
{
  int r = -ENOENT;
  pthread_rwlock_rdlock (&o->snap_lock);
  struct snap *s = snap_find_locked (o, num);
  if (s) {
    snap_fill_info (o, s, info);
    r = 0;
  }
  pthread_rwlock_unlock (&o->snap_lock);
  return r;
}

int
fssnap_snapshot_list (struct fssnap_origin *o, unsigned *nums, size_t max)
{
  int n = 0;
  pthread_rwlock_rdlock (&o->snap_lock);
  for (unsigned num = 0; num < FSSNAP_MAX_SNAPSHOTS; num++) {
    if (!o->number_used[num] || !snap_find_locked (o, num))
      continue;
    if ((size_t) n < max)
      nums[n] = num;
    n++;
  }
  pthread_rwlock_unlock (&o->snap_lock);
  return n;
}
