/* SPDX-License-Identifier: MIT */
/*
 * Backing stores: where a snapshot keeps the old copies of the chunks it
 * owns.  As dm-snapshot's exception store, a store is an interface: the
 * engine never knows how a store keeps its copies or whether they survive
 * a restart; it calls these operations.  Implementations:
 *
 *   store_file.c       persistent: copies appended to files in slots, with
 *                      an index of the chunk each slot holds (split over
 *                      several files when asked), written with O_DIRECT,
 *                      fsync'd by sync, reopened after a restart;
 *   store_transient.c  transient: the same files, never synced, gone at
 *                      restart (fssnap's behaviour, for speed);
 *   tests/engine/store_fault.h  wraps another store and fails, slows down
 *                      or counts its operations on demand (tests only).
 *
 * Whether a snapshot's copies must be durable before the origin may change
 * is the store's 'persistent' property: the engine asks it, never a flag
 * of its own.
 */
#ifndef FSSNAP_STORE_H
#define FSSNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libfssnap.h"

struct store;
struct fssnap_origin;

/* What a store is made from (at creation) or reopened from (at start). */
struct store_params {
  const struct fssnap_io *io;
  const char *location;         /* an existing directory, or a file */
  const char *name;             /* file name to use inside a directory */
  uint32_t chunksize;
  uint64_t nchunks;
  uint64_t origin_size;         /* the last chunk may be short */
  uint64_t max_file_size;       /* 0: one file */
  bool unlink;                  /* unlink the files once open */
};

/* A copy to write: the old contents of a chunk. */
struct store_copy {
  uint64_t chunk;
  const void *buf;
  size_t len;                   /* the chunk size; less for the last chunk */
};
#define STORE_BATCH_MAX 16      /* copies in one write */

/* Buffers for copies: aligned to STORE_BUF_ALIGN and zero-padded to a
 * multiple of it, so that a store may write them with O_DIRECT (any other
 * buffer goes through the page cache).  Freed with free().
 */
#define STORE_BUF_ALIGN 4096u
void *store_buf_alloc (size_t len);

struct store_ops {
  const char *kind;             /* "persistent", "transient": for logs */
  /* Copies survive a restart (the engine orders syncs for them). */
  bool persistent;
  /* create: at snapshot creation, before it is published, with only
   * create_lock held.  Make an empty store; on error a negative errno and
   * a message in err.
   */
  int (*create) (const struct store_params *p, struct store **stp,
                 char *err, size_t errlen);
  /* open: at start-up (recovery, one thread, no lock).  Reopen the store
   * of an existing snapshot; files that are not there count as never
   * created (check says whether a copy is missing).
   */
  int (*open) (const struct store_params *p, struct store **stp, char *err,
               size_t errlen);
  /* check: at start-up, after open.  Whether the store holds the copy of
   * chunk c: 0; -EBADMSG if it does not (proof, the reason in why); any
   * other error is a fault that proves nothing.
   */
  int (*check) (struct store *st, uint64_t c, char *why, size_t len);
  /* write: from a store writer thread, with n copies (1 to
   * STORE_BATCH_MAX, in one call so that the store may write them
   * together), each a whole chunk (the last chunk of the device may be
   * short) copied once, in buffers from store_buf_alloc where the caller
   * can; no engine lock held.  Concurrent calls for different chunks.
   * 0 once all are in the store; on error none may be read.
   */
  int (*write) (struct store *st, const struct store_copy *copies, size_t n);
  /* read: from any reader thread holding snap_lock shared, for a chunk
   * whose write has completed successfully; part of the chunk.
   */
  int (*read) (struct store *st, uint64_t c, void *buf, size_t skip,
               size_t len);
  /* sync: from the committer (no lock) or from create: make every write
   * that has returned durable, with the directory entries of files
   * created since the last sync.  A store that is not persistent does
   * nothing.
   */
  int (*sync) (struct store *st);
  /* usage: bytes of copies the store holds (written, or found by check).
   * Any thread, no lock.
   */
  uint64_t (*usage) (struct store *st);
  /* drop: once, when nothing refers to the snapshot any more (its last
   * reference goes, no lock held): close, and with 'remove' delete what
   * the store created.
   */
  void (*drop) (struct store *st, bool remove);
};

struct store {
  const struct store_ops *ops;
  char *path;                   /* the first file, as shown to users */
  unsigned nfiles;              /* files the store may use */
  bool unlinked;
};

extern const struct store_ops store_file_ops;
extern const struct store_ops store_transient_ops;

/* The persistent store's create and open (store_file_ops). */
int store_file_create (const struct store_params *p, struct store **stp,
                       char *errmsg, size_t errlen);
int store_file_open (const struct store_params *p, struct store **stp,
                     char *errmsg, size_t errlen);
/* Write a file store's index blocks, not synced (the transient store's
 * sync: after a kill -9 the page cache still has them).
 */
int store_file_write_index (struct store *st);
/* Which file of a file store holds the copy of chunk c, and where:
 * -ENOENT if it holds none.  For the tests.
 */
int store_file_locate (const struct store *st, uint64_t chunk,
                       unsigned *filep, uint64_t *offp);

/* Tests only: every store the origin creates from now on is passed to
 * wrap (which returns it, or a store wrapping it).  No lock: call it
 * before the first snapshot is created.
 */
typedef struct store *(*store_wrap_fn) (void *opaque, struct store *inner);
void store_set_wrap (struct fssnap_origin *o, store_wrap_fn wrap,
                     void *opaque);

static inline int
store_write_copies (struct store *st, const struct store_copy *copies,
                    size_t n)
{
  return st->ops->write (st, copies, n);
}

static inline int
store_write_chunk (struct store *st, uint64_t c, const void *buf, size_t len)
{
  struct store_copy copy = { c, buf, len };
  return st->ops->write (st, &copy, 1);
}

static inline int
store_read_chunk (struct store *st, uint64_t c, void *buf, size_t skip,
                  size_t len)
{
  return st->ops->read (st, c, buf, skip, len);
}

static inline int
store_check (struct store *st, uint64_t c, char *why, size_t len)
{
  return st->ops->check (st, c, why, len);
}

static inline int
store_sync (struct store *st)
{
  return st->ops->sync (st);
}

static inline uint64_t
store_usage (struct store *st)
{
  return st->ops->usage (st);
}

static inline bool
store_persistent (const struct store *st)
{
  return st && st->ops->persistent;
}

static inline void
store_destroy (struct store *st, bool remove)
{
  if (st)
    st->ops->drop (st, remove);
}

#endif /* FSSNAP_STORE_H */
