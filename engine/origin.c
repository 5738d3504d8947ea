/* SPDX-License-Identifier: MIT */
/*
 * The origin: the live volume.  Reads pass straight through.  Writes, write
 * zeroes and trims hold io_lock shared (create quiesces them by taking it
 * exclusive), run the copy-on-write path over the chunks they touch
 * (cow.c), and only then change the origin.
 *
 * Opening an origin with a state dir reopens the snapshots recorded there
 * (recover.c); closing it commits what is pending and keeps their files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/internal.h"

#define WRITER_THREADS_DEFAULT 8
#define ZERO_BUF_SIZE (1u << 20)

static void origin_release_snaps (struct fssnap_origin *o);

static bool
origin_range_ok (const struct fssnap_origin *o, uint64_t off, uint64_t len)
{
  return off <= o->size && len <= o->size - off;
}

static void
origin_init_locks (struct fssnap_origin *o)
{
  pthread_mutex_init (&o->create_lock, NULL);
  pthread_mutex_init (&o->reap_lock, NULL);
  pthread_rwlock_init (&o->io_lock, NULL);
  for (unsigned i = 0; i < CHUNK_LOCKS; i++)
    pthread_mutex_init (&o->chunk_locks[i], NULL);
  pthread_rwlock_init (&o->snap_lock, NULL);
  pthread_mutex_init (&o->state_lock, NULL);
  pthread_mutex_init (&o->throttle_lock, NULL);
  pthread_mutex_init (&o->copybuf_lock, NULL);
  pthread_cond_init (&o->throttle_cond, NULL);
  pthread_mutex_init (&o->queue_lock, NULL);
  pthread_cond_init (&o->queue_cond, NULL);
  pthread_cond_init (&o->idle_cond, NULL);
  pthread_mutex_init (&o->commit_lock, NULL);
  pthread_cond_init (&o->commit_cond, NULL);
  pthread_cond_init (&o->commit_done, NULL);
}

static void
origin_destroy_locks (struct fssnap_origin *o)
{
  pthread_mutex_destroy (&o->create_lock);
  pthread_mutex_destroy (&o->reap_lock);
  pthread_rwlock_destroy (&o->io_lock);
  for (unsigned i = 0; i < CHUNK_LOCKS; i++)
    pthread_mutex_destroy (&o->chunk_locks[i]);
  pthread_rwlock_destroy (&o->snap_lock);
  pthread_mutex_destroy (&o->state_lock);
  pthread_mutex_destroy (&o->throttle_lock);
  pthread_mutex_destroy (&o->copybuf_lock);
  pthread_cond_destroy (&o->throttle_cond);
  pthread_mutex_destroy (&o->queue_lock);
  pthread_cond_destroy (&o->queue_cond);
  pthread_cond_destroy (&o->idle_cond);
  pthread_mutex_destroy (&o->commit_lock);
  pthread_cond_destroy (&o->commit_cond);
  pthread_cond_destroy (&o->commit_done);
}

static void
origin_free (struct fssnap_origin *o)
{
  if (o->fd >= 0)
    o->io->close (o->io->opaque, o->fd);
  if (o->direct_fd >= 0)
    o->io->close (o->io->opaque, o->direct_fd);
  origin_destroy_locks (o);
  staging_free (o);
  copybuf_free_all (o);
  bitmap_free (&o->changed);
  free (o->snaps);
  free (o->path);
  free (o->basename);
  free (o->state_dir);
  free (o);
}

int
origin_sync_state_dir (struct fssnap_origin *o)
{
  int fd = o->io->open (o->io->opaque, o->state_dir,
                        O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0)
    return fd;
  int r = o->io->fsync (o->io->opaque, fd);
  o->io->close (o->io->opaque, fd);
  return r;
}

/* The O_DIRECT twin of the origin's descriptor, for fssnap_origin_read_direct;
 * without it, those reads go through the page cache.  An image file handed
 * over as a descriptor gets none: its owner may hold a lease on it, which a
 * second open of the file would break (or deny).  A block device is held
 * with O_EXCL instead, and a plain open beside it is fine; the twin must be
 * the same device.
 */
static void
origin_open_direct (struct fssnap_origin *o, bool given_fd)
{
  struct stat st, twin;
  bool blockdev = fstat (o->fd, &st) == 0 && S_ISBLK (st.st_mode);
  if (given_fd && !blockdev)
    return;
  int fd = o->io->open (o->io->opaque, o->path, O_RDONLY | O_DIRECT, 0);
  if (fd < 0)
    return;
  if (blockdev && (fstat (fd, &twin) < 0 || twin.st_rdev != st.st_rdev)) {
    o->io->close (o->io->opaque, fd);
    return;
  }
  o->direct_fd = fd;
}

/* What metadata files remember of the origin, to notice another one. */
static void
origin_identify (struct fssnap_origin *o)
{
  struct stat st;
  const char *slash = strrchr (o->path, '/');
  o->basename = strdup (slash ? slash + 1 : o->path);
  if (stat (o->path, &st) == 0 && S_ISBLK (st.st_mode))
    o->origin_kind = META_ORIGIN_BLOCKDEV;
  else if (stat (o->path, &st) == 0) {
    o->origin_kind = META_ORIGIN_FILE;
    o->origin_dev = st.st_dev;
    o->origin_ino = st.st_ino;
  }
}

int
origin_set_chunksize (struct fssnap_origin *o, uint32_t cs)
{
  struct bitmap changed;
  if (bitmap_init (&changed, (o->size + cs - 1) / cs) < 0)
    return -ENOMEM;
  bitmap_free (&o->changed);
  o->changed = changed;
  o->changed_lost = false;
  o->chunksize = cs;
  o->chunk_shift = __builtin_ctz (cs);
  o->nchunks = (o->size + cs - 1) / cs;
  o->max_mem_chunks = o->max_mem / cs ? o->max_mem / cs : 1;
  return 0;
}

int
fssnap_origin_open (const struct fssnap_origin_opts *opts,
                    struct fssnap_origin **originp)
{
  bool bad = !opts->path
    || (opts->chunksize && !chunksize_valid (opts->chunksize))
    || (opts->use_fd && (opts->fd < 0
                         || (opts->io && opts->io != fssnap_io_posix ())));
  struct fssnap_origin *o = bad ? NULL : calloc (1, sizeof *o);
  if (!o) {
    if (opts->use_fd && opts->fd >= 0)
      close (opts->fd);
    return bad ? -EINVAL : -ENOMEM;
  }
  o->fd = opts->use_fd ? opts->fd : -1;
  o->direct_fd = -1;
  o->io = opts->io ? opts->io : fssnap_io_posix ();
  o->log = opts->log;
  o->log_opaque = opts->log_opaque;
  o->max_mem = opts->max_mem ? opts->max_mem : FSSNAP_MEM_DEFAULT;
  origin_init_locks (o);
  o->path = strdup (opts->path);
  o->state_dir = opts->state_dir ? strdup (opts->state_dir) : NULL;
  int r = -ENOMEM;
  if (!o->path || (opts->state_dir && !o->state_dir)
      || staging_init (o) < 0)
    goto fail;

  if (!opts->use_fd)
    r = o->fd = o->io->open (o->io->opaque, o->path, O_RDWR, 0);
  if (o->fd < 0)
    goto fail;
  origin_open_direct (o, opts->use_fd);
  origin_identify (o);
  r = -ENOMEM;
  if (!o->basename)
    goto fail;
  r = o->io->getsize (o->io->opaque, o->fd, &o->size);
  if (r == 0 && o->size == 0)
    r = -EINVAL;
  if (r < 0)
    goto fail;

  r = origin_set_chunksize (o, opts->chunksize ? opts->chunksize
                                                : FSSNAP_CHUNKSIZE_DEFAULT);
  if (r < 0)
    goto fail;

  if (o->state_dir && (r = recover_snapshots (o)) < 0)
    goto fail;
  r = writer_start (o, opts->writer_threads ? opts->writer_threads
                                            : WRITER_THREADS_DEFAULT);
  if (r == 0)
    r = commit_start (o);
  if (r == 0)
    r = staging_start (o);      /* replays what a crash left staged */
  if (r < 0)
    goto fail;
  *originp = o;
  return 0;

fail:
  staging_stop (o);
  writer_stop (o);
  commit_stop (o);
  origin_release_snaps (o);
  origin_free (o);
  return r;
}

/* Free every snap; files stay for the next start, but for stores without
 * metadata, which nothing could find again.
 */
static void
origin_release_snaps (struct fssnap_origin *o)
{
  for (size_t i = 0; i < o->nsnaps; i++) {
    o->snaps[i]->discard = !o->snaps[i]->meta;
    snap_unref (o->snaps[i]);
  }
  o->nsnaps = 0;
}

void
fssnap_origin_close (struct fssnap_origin *o)
{
  staging_stop (o);
  writer_drain (o);
  writer_stop (o);
  commit_stop (o);
  origin_release_snaps (o);
  origin_free (o);
}

void
origin_read_failed (struct fssnap_origin *o, uint64_t off, uint64_t len,
                    int err)
{
  uint64_t now;
  if (o->io->getsize (o->io->opaque, o->fd, &now) == 0 && now < off + len)
    engine_log (o, FSSNAP_LOG_ERR, "reading %s at %llu failed: it is now "
                "%llu bytes, shorter than the %llu it had when opened",
                o->path, (unsigned long long) off, (unsigned long long) now,
                (unsigned long long) o->size);
  else
    engine_log (o, FSSNAP_LOG_ERR, "reading %s at %llu failed: %s", o->path,
                (unsigned long long) off, strerror (-err));
}

uint64_t
fssnap_origin_size (const struct fssnap_origin *o)
{
  return o->size;
}

uint32_t
fssnap_origin_chunksize (const struct fssnap_origin *o)
{
  return o->chunksize;
}

const char *
fssnap_origin_path (const struct fssnap_origin *o)
{
  return o->path;
}

/* The volume: the origin with staged changes laid over it. */
int
fssnap_origin_read (struct fssnap_origin *o, void *buf, size_t len,
                    uint64_t off)
{
  if (!origin_range_ok (o, off, len))
    return -EINVAL;
  return staging_read (o, o->fd, buf, len, off);
}

static bool
origin_direct_ok (const struct fssnap_origin *o, const void *buf, size_t len,
                  uint64_t off)
{
  return o->direct_fd >= 0 && !atomic_load (&o->direct_off)
    && (uintptr_t) buf % FSSNAP_DIRECT_ALIGN == 0
    && len % FSSNAP_DIRECT_ALIGN == 0 && off % FSSNAP_DIRECT_ALIGN == 0;
}

/* The volume, read past the page cache where alignment allows; a refusal
 * (EINVAL: the device's logical blocks are larger) turns it off and the
 * read goes through the cache.
 */
int
fssnap_origin_read_direct (struct fssnap_origin *o, void *buf, size_t len,
                           uint64_t off)
{
  if (!origin_range_ok (o, off, len))
    return -EINVAL;
  if (!origin_direct_ok (o, buf, len, off))
    return staging_read (o, o->fd, buf, len, off);
  int r = staging_read (o, o->direct_fd, buf, len, off);
  if (r != -EINVAL)
    return r;
  atomic_store (&o->direct_off, true);
  return staging_read (o, o->fd, buf, len, off);
}

/* Write zeros over the range: it stays allocated, whatever the device. */
static int
origin_apply_zero_alloc (struct fssnap_origin *o, size_t len, uint64_t off)
{
  size_t n = len < ZERO_BUF_SIZE ? len : ZERO_BUF_SIZE;
  void *zeros = calloc (1, n ? n : 1);
  if (!zeros)
    return -ENOMEM;
  int r = 0;
  while (r == 0 && len > 0) {
    size_t k = len < n ? len : n;
    r = io_pwrite_full (o->io, o->fd, zeros, k, off);
    off += k;
    len -= k;
  }
  free (zeros);
  return r;
}

/* Zero the range (the I/O layer may leave a hole); where the device
 * cannot, write zeros.
 */
static int
origin_apply_zero (struct fssnap_origin *o, size_t len, uint64_t off)
{
  int r = o->io->zero (o->io->opaque, o->fd, off, len);
  if (r != -EOPNOTSUPP && r != -ENOTTY)
    return r;
  return origin_apply_zero_alloc (o, len, off);
}

static int
origin_apply_discard (struct fssnap_origin *o, size_t len, uint64_t off)
{
  int r = o->io->discard (o->io->opaque, o->fd, off, len);
  return r == -EOPNOTSUPP || r == -ENOTTY ? 0 : r;   /* only advice */
}

int
origin_apply_change (struct fssnap_origin *o, enum staging_kind kind,
                     const void *buf, size_t len, uint64_t off)
{
  switch (kind) {
  case STAGING_WRITE:
    return io_pwrite_full (o->io, o->fd, buf, len, off);
  case STAGING_ZERO:
    return origin_apply_zero (o, len, off);
  case STAGING_ZERO_ALLOC:
    return origin_apply_zero_alloc (o, len, off);
  case STAGING_TRIM:
    return origin_apply_discard (o, len, off);
  }
  return -EINVAL;
}

/* FUA: the origin and the staging log's marker, durable. */
static int
origin_sync (struct fssnap_origin *o)
{
  int r = o->io->fsync (o->io->opaque, o->fd);
  return r < 0 ? r : staging_sync_marker (o);
}

/* Write-back: stage the change (it reaches the origin once its epoch has
 * committed, after the changes staged before it); for FUA wait for it and
 * make it durable.  Returns 1 if it could not be staged.  Caller holds
 * io_lock shared.
 */
static int
origin_stage (struct fssnap_origin *o, enum staging_kind kind,
              const void *buf, size_t len, uint64_t off, uint64_t epoch,
              unsigned flags)
{
  if (!staging_fits (o, kind, len))
    return 1;
  int64_t seq = staging_add (o, kind, buf, len, off, epoch);
  if (seq < 0)
    return 1;                   /* logged; the caller waits instead */
  if (!(flags & FSSNAP_FUA))
    return 0;
  int r = staging_wait (o, seq);
  return r < 0 ? r : origin_sync (o);
}

/* Check the range, run the copy-on-write path over it, then stage the
 * change or apply it (after what is staged and its commit epoch); sync it
 * for FUA.  A change that waits for a commit is staged, and so is one
 * that made a copy even when nothing waits (transient snapshots): the
 * first write into a chunk is the slow one, and staging takes its origin
 * write off the writer's path.  Takes io_lock shared.
 */
static int
origin_modify (struct fssnap_origin *o, enum staging_kind kind,
               const void *buf, size_t len, uint64_t off, unsigned flags,
               bool may_stage)
{
  if (!origin_range_ok (o, off, len))
    return -EINVAL;
  uint64_t epoch = 0;
  bool copied = false;
  pthread_rwlock_rdlock (&o->io_lock);
  int r = snap_mark_missed (o);
  if (r == 0)
    r = cow_range (o, off, len, &epoch);
  if (r == 1) {
    copied = true;
    r = 0;
  }
  if (r == 0 && len > 0 && may_stage
      && (copied || staging_needed (o, epoch)))
    r = origin_stage (o, kind, buf, len, off, epoch, flags);
  else if (r == 0)
    r = 1;
  if (r == 1) {                 /* apply it here, after what is staged */
    r = staging_wait (o, 0);
    if (r == 0)
      commit_wait (o, epoch);   /* holding only io_lock */
    if (r == 0 && len > 0)
      r = origin_apply_change (o, kind, buf, len, off);
    if (r == 0 && (flags & FSSNAP_FUA))
      r = origin_sync (o);
  }
  pthread_rwlock_unlock (&o->io_lock);
  return r;
}

int
origin_change_now (struct fssnap_origin *o, enum staging_kind kind,
                   const void *buf, size_t len, uint64_t off)
{
  return origin_modify (o, kind, buf, len, off, 0, false);
}

int
fssnap_origin_write (struct fssnap_origin *o, const void *buf, size_t len,
                     uint64_t off, unsigned flags)
{
  return origin_modify (o, STAGING_WRITE, buf, len, off, flags, true);
}

int
fssnap_origin_zero (struct fssnap_origin *o, size_t len, uint64_t off,
                    unsigned flags)
{
  return origin_modify (o, flags & FSSNAP_ZERO_NO_HOLE ? STAGING_ZERO_ALLOC
                                                    : STAGING_ZERO,
                        NULL, len, off, flags, true);
}

int
fssnap_origin_trim (struct fssnap_origin *o, size_t len, uint64_t off,
                    unsigned flags)
{
  return origin_modify (o, STAGING_TRIM, NULL, len, off, flags, true);
}

/* Everything acknowledged so far, staged or not, on the origin and
 * durable; fails while a staged change cannot be applied (it stays
 * staged, in memory and in the log, and is retried).
 */
int
fssnap_origin_flush (struct fssnap_origin *o)
{
  int r = staging_wait (o, 0);
  return r < 0 ? r : origin_sync (o);
}

void
fssnap_origin_note_opened_elsewhere (struct fssnap_origin *o)
{
  atomic_fetch_add (&o->opened_elsewhere, 1);
}

/* Takes snap_lock shared, then throttle_lock. */
void
fssnap_origin_stats (struct fssnap_origin *o, struct fssnap_stats *st)
{
  memset (st, 0, sizeof *st);
  st->size = o->size;
  st->highest_number = -1;
  pthread_rwlock_rdlock (&o->snap_lock);
  st->chunksize = o->chunksize;
  for (size_t i = 0; i < o->nsnaps; i++) {
    struct snap *s = o->snaps[i];
    if (!s->number_held) {
      st->retained++;
      continue;
    }
    st->snapshots++;
    if ((int) s->number > st->highest_number)
      st->highest_number = s->number;
  }
  pthread_rwlock_unlock (&o->snap_lock);
  pthread_mutex_lock (&o->throttle_lock);
  st->mem_chunks = o->mem_chunks;
  st->mem_chunks_peak = o->mem_chunks_peak;
  st->max_mem_chunks = o->max_mem_chunks;
  pthread_mutex_unlock (&o->throttle_lock);
  st->chunks_copied = atomic_load (&o->chunks_copied);
  st->bytes_copied = atomic_load (&o->bytes_copied);
  st->throttle_waits = atomic_load (&o->throttle_waits);
  st->store_errors = atomic_load (&o->store_errors);
  st->opened_elsewhere = atomic_load (&o->opened_elsewhere);
  staging_stats (o, st);
}
