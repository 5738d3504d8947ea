/* SPDX-License-Identifier: MIT */
/*
 * Engine internals shared by the engine's files.
 *
 * Objects.  An origin holds a list of snapshot objects ("snaps") ordered by
 * creation sequence, oldest first.  A snap is either visible (it holds a
 * user-visible number) or retained: deleted, but kept because an older
 * snapshot still reads copies it owns (see cow.c for the owner rule).
 *
 * Locks, in the order they may be taken (never take an earlier one while
 * holding a later one):
 *
 *   1. origin->create_lock   serialises create against create.
 *   2. origin->io_lock       rwlock.  Origin writes (and trims, zeroes) hold
 *                            it shared for their whole duration; create
 *                            holds it exclusive to quiesce them while the
 *                            candidate map is built and the snapshot is
 *                            published.
 *   3. chunk lock            one of origin->chunk_locks[], by hash of the
 *                            chunk number.  Held while deciding and making a
 *                            copy of that chunk, and while a snapshot reads
 *                            that chunk from the origin.  Never two at once.
 *   3b. origin->reap_lock    serialises reaps (snapshot.c), so that a
 *                            merge's write can run under snap_lock shared.
 *   4. origin->snap_lock     rwlock over the list of snaps, the numbers in
 *                            use, open counts and reasons.  Shared by the
 *                            copy path, snapshot reads and a delete's
 *                            marking (state_lock orders that); exclusive
 *                            for create's publish, open, close, reap.
 *   5. origin->state_lock    snapshot state transitions and reasons.
 *   6. meta->lock            a snapshot's metadata file (header writes
 *                            against bitmap flushes).
 *   7. xtable.lock, the store's file_lock, origin->throttle_lock,
 *      origin->copybuf_lock,
 *      origin->queue_lock, origin->commit_lock, staging->lock:
 *                            leaves; nothing is taken while holding them.
 *
 * Waiting: the copy path waits for a throttle slot holding only io_lock
 * (shared).  Store writers take snap_lock shared (to disable snapshots after
 * a failed write) and the leaves, never io_lock or a chunk lock, and nobody
 * waits for a writer while holding snap_lock, so a full throttle always
 * drains and delete never waits for it.
 */
#ifndef FSSNAP_ENGINE_INTERNAL_H
#define FSSNAP_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libfssnap.h"
#include "common/bitmap.h"
#include "engine/meta.h"
#include "engine/staging.h"
#include "engine/store.h"
#include "engine/xtable.h"

#define CHUNK_LOCKS 1024

enum snap_state {               /* internal; see fssnap_state for users */
  SNAP_CREATING,
  SNAP_VALID,
  SNAP_DISABLED,
  SNAP_DELETED,
  SNAP_OFFLINE,                 /* its files cannot be read now: not served,
                                   nothing written, back at a restart */
};

struct snap {
  struct fssnap_origin *origin;
  uint64_t seq;                 /* creation order, never repeats */
  unsigned number;
  char uuid[FSSNAP_UUID_STRLEN];
  uint32_t chunksize;
  uint64_t nchunks;
  uint64_t maxsize;
  uint64_t max_backfile_size;
  int64_t create_time;
  char *mountpoint;
  char group[FSSNAP_UUID_STRLEN];       /* "" when not in a group */

  _Atomic int state;            /* enum snap_state; changes under state_lock */
  bool number_held;             /* snap_lock */
  unsigned open_count;          /* snap_lock */
  char reason[256];             /* state_lock; why disabled or deleted */
  _Atomic bool removed;         /* out of the list: writers skip its I/O */
  _Atomic unsigned refs;        /* list membership + queued copies + handles */

  struct bitmap changed;        /* D: written between the previous snapshot
                                   and this one; merged into the next one
                                   when this one is freed (snap_lock) */
  bool changed_lost;            /* D cannot be trusted (snap_lock) */
  struct bitmap cand;           /* C: immutable once published */
  struct bitmap pres;           /* H: bit c changes under chunk lock c */
  struct bitmap owner;          /* O: bit c changes under chunk lock c */
  uint64_t cand_count;          /* immutable once published */
  _Atomic uint64_t pres_count;
  _Atomic uint64_t owned_count;

  struct store *store;
  struct xtable table;          /* copies owned here, not yet in the store */
  struct meta *meta;            /* NULL without a state dir */
  bool discard;                 /* remove its files when freed */
  bool untrusted;               /* recovered from a file that failed a check,
                                   or could not be read (offline): its maps
                                   are empty, not what it had */
  bool missed_marked;           /* offline, and its .missed marker is durable
                                   (state_lock) */
  uint64_t synced_round, flushed_round;  /* committer only */
};

/* Group commit (commit.c): the bits of one epoch's copies. */
struct commit_rec {
  struct snap *s;
  uint64_t chunk;
  enum meta_map map;            /* O (owner) or A (changed since s) */
};

struct commit_log {
  struct commit_rec *recs;
  size_t n, alloc;
  uint64_t pending;             /* store writes not done yet */
  bool failed;                  /* a record could not be logged */
};

struct fssnap_origin {
  char *path;
  char *basename;               /* names the files in the state dir */
  int fd;
  int direct_fd;                /* fd's O_DIRECT twin for reads, or -1 */
  _Atomic bool direct_off;      /* the origin refused an O_DIRECT read */
  uint64_t size;
  uint32_t origin_kind;         /* META_ORIGIN_*, with dev and ino: the */
  uint64_t origin_dev, origin_ino;  /* identity metadata files check */
  const struct fssnap_io *io;
  fssnap_log_fn log;
  void *log_opaque;
  char *state_dir;

  /* Chunk geometry: changes only under io_lock (exclusive) and snap_lock
   * (exclusive) while no snap exists.
   */
  uint32_t chunksize;
  unsigned chunk_shift;
  uint64_t nchunks;

  pthread_mutex_t create_lock;
  pthread_mutex_t reap_lock;
  pthread_rwlock_t io_lock;
  pthread_mutex_t chunk_locks[CHUNK_LOCKS];
  pthread_rwlock_t snap_lock;
  pthread_mutex_t state_lock;

  /* snap_lock */
  struct snap **snaps;          /* oldest first */
  size_t nsnaps, snaps_alloc;
  uint64_t next_seq;
  bool number_used[FSSNAP_MAX_SNAPSHOTS];
  _Atomic unsigned valid_snaps; /* fast path: zero means nothing to copy */
  /* Changed-block tracking: chunks written since the newest published
   * snapshot (X).  Bits are set by writers under snap_lock shared; the map
   * is reset by create (io_lock exclusive) and merged into by reap
   * (snap_lock exclusive).  Durable as map A of the newest snapshot.
   */
  struct bitmap changed;
  bool changed_lost;            /* X cannot be trusted (snap_lock) */
  _Atomic unsigned offline_unmarked;  /* offline snaps whose .missed marker
                                         is not durable yet */

  /* Throttle on copies held in memory (throttle_lock). */
  pthread_mutex_t throttle_lock;
  pthread_cond_t throttle_cond;
  bool throttle_full;           /* no slot until the batch is free */
  uint64_t mem_chunks, mem_chunks_peak, max_mem_chunks;
  uint64_t max_mem;

  /* Free copy buffers (copybuf_lock). */
  pthread_mutex_t copybuf_lock;
  void **copybufs;
  size_t ncopybufs, copybufs_max;
  uint32_t copybuf_chunksize;   /* the geometry they were made for */

  /* Store writers (queue_lock). */
  pthread_mutex_t queue_lock;
  pthread_cond_t queue_cond;    /* work arrived, or stop */
  pthread_cond_t idle_cond;     /* queue drained */
  struct xentry *queue_head, *queue_tail;
  uint64_t queued;              /* queued or being written */
  bool stopping;
  pthread_t *writers;
  unsigned nwriters;

  /* Group commit (commit_lock). */
  pthread_mutex_t commit_lock;
  pthread_cond_t commit_cond;   /* records or finished store writes */
  pthread_cond_t commit_done;   /* an epoch was committed */
  uint64_t open_epoch;
  _Atomic uint64_t committed_epoch;  /* written under commit_lock */
  struct commit_log logs[2];    /* by epoch parity */
  bool commit_stopping;
  pthread_t committer;
  bool committer_running;
  uint64_t commit_round;        /* committer only */
  /* The newest epoch of a copy made under each chunk lock: a write to a
   * chunk whose copy another write made must wait for the same epoch
   * (written and read under that chunk lock).
   */
  uint64_t copy_epoch[CHUNK_LOCKS];

  struct staging *staging;      /* write-back staging (staging.c) */

  _Atomic uint64_t chunks_copied, bytes_copied, throttle_waits, store_errors;
  _Atomic uint64_t opened_elsewhere;

  /* Tests: wraps every store created (store_set_wrap); set before the
   * first create, read by create (create_lock).
   */
  store_wrap_fn store_wrap;
  void *store_wrap_opaque;
};

/* Whether s's copies survive a restart (its store says so), so that they
 * must be durable before the origin changes.  No lock.
 */
static inline bool
snap_persistent (const struct snap *s)
{
  return store_persistent (s->store);
}

/* log.c */
void engine_log (struct fssnap_origin *o, enum fssnap_log_level level,
                 const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

/* io.c: full reads and writes through the I/O layer.  A file that ends
 * before the range does is an error, -EIO: every file the engine reads
 * (origin, stores, metadata) is at least as long as what it reads, so a
 * shorter one was truncated behind its back; io_pread_upto returns the
 * bytes there are, for a caller that tells the reason.  EINTR is retried,
 * and EIO once (a read or write at an offset may be repeated; an fsync
 * never is: after a failed one the kernel may have dropped the data).
 */
ssize_t io_pread_upto (const struct fssnap_io *io, int fd, void *buf,
                       size_t len, uint64_t off);
int io_pread_full (const struct fssnap_io *io, int fd, void *buf, size_t len,
                   uint64_t off);
int io_pwrite_full (const struct fssnap_io *io, int fd, const void *buf,
                    size_t len, uint64_t off);
/* The same for n buffers written one after the other from off. */
int io_pwritev_full (const struct fssnap_io *io, int fd,
                     const struct iovec *iov, int n, uint64_t off);
/* fsync directory dir (after a create, rename or unlink in it). */
int io_sync_dir (const struct fssnap_io *io, const char *dir);
/* Make path hold buf durably: a temporary file PATH.tmp written and
 * fsynced, renamed over path, its directory fsynced.  On failure path is
 * as it was.
 */
int io_replace_file (const struct fssnap_io *io, const char *path,
                     const void *buf, size_t len);

/* Bytes of chunk c that lie inside the device (the last may be short). */
static inline size_t
chunk_bytes (const struct fssnap_origin *o, uint64_t c)
{
  uint64_t start = c << o->chunk_shift;
  return o->size - start < o->chunksize ? o->size - start : o->chunksize;
}

static inline unsigned
chunk_lock_index (uint64_t c)
{
  return (c * UINT64_C (0x9E3779B97F4A7C15)) >> 54;
}

static inline pthread_mutex_t *
chunk_lock (struct fssnap_origin *o, uint64_t c)
{
  return &o->chunk_locks[chunk_lock_index (c)];
}

static inline bool
chunksize_valid (uint64_t cs)
{
  return cs >= FSSNAP_CHUNKSIZE_MIN && cs <= FSSNAP_CHUNKSIZE_MAX
    && (cs & (cs - 1)) == 0;
}

/* origin.c: set the chunk geometry (and the throttle bound and change map
 * that depend on it); -ENOMEM leaves the origin as it was.  Caller holds io_lock exclusive, or owns the origin alone, and no
 * snap exists but the one being created.
 */
int origin_set_chunksize (struct fssnap_origin *o, uint32_t cs);
/* Log why reading [off, off+len) of the origin failed with err (a shrunk
 * origin says so).  No lock needed.
 */
void origin_read_failed (struct fssnap_origin *o, uint64_t off,
                         uint64_t len, int err);
/* fsync the state dir (new or removed files).  No lock needed. */
int origin_sync_state_dir (struct fssnap_origin *o);
/* Apply a change to the origin now, whatever waits for it (the applier of
 * staged changes).  No lock needed.
 */
int origin_apply_change (struct fssnap_origin *o, enum staging_kind kind,
                         const void *buf, size_t len, uint64_t off);
/* A change through the copy-on-write path, waiting for its commit (no
 * staging): the replay of a staging log.  Takes io_lock shared.
 */
int origin_change_now (struct fssnap_origin *o, enum staging_kind kind,
                       const void *buf, size_t len, uint64_t off);

/* cow.c: the copy-on-write path and the owner rule.  cow_range makes the
 * copies [off, off+len) needs and sets *epochp to the commit epoch the
 * change must wait for before it reaches the origin (0: none); returns 1
 * if it copied a chunk, 0 if none needed a copy, or a negative errno.
 * Caller holds io_lock shared.
 */
int cow_range (struct fssnap_origin *o, uint64_t off, uint64_t len,
               uint64_t *epochp);
struct snap *cow_owner_of (struct fssnap_origin *o, struct snap *s,
                           uint64_t c);

/* commit.c: group commit of copies persistent snapshots need.
 * commit_add_copy: log e's bits (caller holds chunk lock and snap_lock
 * shared); returns the epoch to wait for, or 0 if no persistent snapshot
 * needs the copy.
 */
uint64_t commit_add_copy (struct fssnap_origin *o, struct xentry *e,
                          struct snap **set, size_t n);
/* Log bit c of map A of s (the newest snapshot); returns the epoch to wait
 * for, or 0 if s is not persistent.  Caller holds snap_lock shared.
 */
uint64_t commit_add_change (struct fssnap_origin *o, struct snap *s,
                            uint64_t c);
void commit_store_done (struct fssnap_origin *o, uint64_t epoch);
void commit_wait (struct fssnap_origin *o, uint64_t epoch);
int commit_start (struct fssnap_origin *o);
void commit_stop (struct fssnap_origin *o);

/* changes.c: changed-block tracking. */
/* Note the chunks of [off, off+len) as written since the newest snapshot;
 * returns the commit epoch to wait for (0: none).  Caller holds io_lock
 * shared; takes snap_lock shared.
 */
uint64_t changes_track (struct fssnap_origin *o, uint64_t off, uint64_t len);
/* A new snapshot s takes the volume's changes as its D and the volume
 * starts afresh.  Caller holds io_lock and snap_lock exclusive.
 */
void changes_hand_over (struct fssnap_origin *o, struct snap *s);
/* snaps[i] is being freed: its D merges into the next snapshot's, or
 * into the volume's changes if it is the newest, durably.  An error
 * (-EAGAIN: the snapshot that would take the merge is offline; or neither
 * the map nor its loss could be written) means s must stay.
 * changes_merge_next_locked: the next snapshot to merge into, or NULL
 * (then the merge is into the volume's, below);
 * changes_merge_write, holding snap_lock shared and reap_lock, writes
 * next's D with s's OR'ed in, and its trust (*lostp), durably;
 * changes_merge_apply_locked, under snap_lock exclusive as s leaves the
 * list, sets them in memory.
 * Into the volume's: changes_volume_absorb_locked (exclusive, no I/O)
 * ORs s's D into X and sets *intop to the snapshot before s, whose map A
 * X becomes (NULL: none, and X starts afresh; nothing more to do);
 * changes_volume_write (snap_lock shared and reap_lock) writes X as its
 * A, durably, keeping in 'written' what it wrote, and returns the error;
 * changes_volume_catch_up_locked (exclusive, as s leaves the list) takes
 * that error (wr: then X is marked lost, durably; an error from that means
 * s stays), or else logs the bits writers added to X since as A bits of
 * into, setting *epochp to the epoch s's files must wait for.
 */
int changes_volume_absorb_locked (struct fssnap_origin *o, size_t i,
                                  struct snap **intop);
int changes_volume_write (struct fssnap_origin *o, struct snap *into,
                          struct bitmap *written);
int changes_volume_catch_up_locked (struct fssnap_origin *o, struct snap *into,
                                    const struct bitmap *written, int wr,
                                    uint64_t *epochp);
struct snap *changes_merge_next_locked (struct fssnap_origin *o, size_t i);
int changes_merge_write (struct fssnap_origin *o, struct snap *s,
                         struct snap *next, bool *lostp);
void changes_merge_apply_locked (struct snap *s, struct snap *next,
                                 bool lost);
/* Record D's and A's trust in s's metadata header.  Caller holds
 * snap_lock (exclusive, or owns the origin alone).
 */
int changes_persist_flags (struct fssnap_origin *o, struct snap *s);

/* recover.c: reopen the snapshots found in the state dir (at open). */
int recover_snapshots (struct fssnap_origin *o);

/* copybuf.c: buffers for copies, reused (a leaf lock). */
void *copybuf_get (struct fssnap_origin *o, size_t len);
void copybuf_put (struct fssnap_origin *o, void *buf);
void copybuf_free_all (struct fssnap_origin *o);

/* throttle.c */
void throttle_acquire (struct fssnap_origin *o);
bool throttle_try_acquire (struct fssnap_origin *o);
void throttle_release (struct fssnap_origin *o);

/* writer.c: the pool that moves copies from memory to the stores. */
int writer_start (struct fssnap_origin *o, unsigned nthreads);
void writer_queue (struct fssnap_origin *o, struct xentry *e);
void writer_drain (struct fssnap_origin *o);
void writer_stop (struct fssnap_origin *o);

/* snapshot.c */
/* Allocate a snap in state CREATING with empty maps of nchunks. */
struct snap *snap_alloc (struct fssnap_origin *o, uint32_t cs, unsigned num,
                         uint64_t seq);
void snap_ref (struct snap *s);
void snap_unref (struct snap *s);
bool snap_is_valid (const struct snap *s);
/* Disable s with a logged reason (no-op unless valid); returns 0 once that
 * is durable (its metadata file, or a .missed marker, or the file's
 * removal, each made durable), else the error.  Takes state_lock.
 */
int snap_disable (struct snap *s, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* Disable owner and every snapshot that reads its copy of chunk c: a copy
 * that may not be durable.  Takes snap_lock shared, then state_lock.
 */
void snap_disable_readers (struct fssnap_origin *o, struct snap *owner,
                           uint64_t c, const char *why);
/* Mark s deleted (it stops taking copies) with a logged reason; the number
 * and the data go when snap_reap finds them unused.  Takes state_lock.
 */
void snap_mark_deleted (struct snap *s, const char *why);
/* Before the first write to the volume while a snapshot is offline: make
 * its marker ORIGIN.snapN.SEQ.missed durable, so that the restart that can
 * read it again knows it missed copies.  Returns the error that stops the
 * write.  Caller holds io_lock shared; takes snap_lock shared and
 * state_lock.
 */
int snap_mark_missed (struct fssnap_origin *o);
/* The path of a file of snapshot (num, seq) in the state dir:
 * STATE_DIR/BASE.snapN.SEQ.EXT (NULL: out of memory).  No lock.
 */
char *snap_state_file (struct fssnap_origin *o, unsigned num, uint64_t seq,
                       const char *ext);
/* Release numbers of deleted unopened snaps and free what nothing older
 * needs.  Takes snap_lock exclusive.
 */
void snap_reap (struct fssnap_origin *o);

#endif /* FSSNAP_ENGINE_INTERNAL_H */
