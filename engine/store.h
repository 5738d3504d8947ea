/* SPDX-License-Identifier: MIT */
/*
 * Backing stores: where a snapshot keeps the old copies of the chunks it
 * owns.  The engine never knows how a store keeps them; it calls these
 * operations, each with a note on when it is called:
 *
 *   write_chunk   from a store writer thread, once per copied chunk, with
 *                 the whole chunk (the last chunk of the device may be
 *                 short).  Concurrent calls for different chunks.
 *   read_chunk    from any reader thread, for a chunk whose write_chunk has
 *                 completed successfully; part of the chunk.
 *   sync          from the committer: make every write_chunk that has
 *                 returned durable (files and the directory entries of
 *                 files created since the last sync).
 *   destroy       once, when nothing refers to the snapshot any more:
 *                 close, and with 'remove' delete what the store created.
 *
 * store_file.c is the store of sparse files (the old copy of chunk c at
 * offset c * chunksize, split over several files when asked).
 */
#ifndef FSSNAP_STORE_H
#define FSSNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libfssnap.h"

struct store;

struct store_ops {
  int (*write_chunk) (struct store *st, uint64_t chunk, const void *buf,
                      size_t len);
  int (*read_chunk) (struct store *st, uint64_t chunk, void *buf,
                     size_t skip, size_t len);
  int (*sync) (struct store *st);
  void (*destroy) (struct store *st, bool remove);
};

struct store {
  const struct store_ops *ops;
  char *path;                   /* the first file, as shown to users */
  unsigned nfiles;              /* files the store may use */
  bool unlinked;
};

struct store_file_params {
  const struct fssnap_io *io;
  const char *location;         /* an existing directory, or a new file */
  const char *name;             /* file name to use inside a directory */
  uint32_t chunksize;
  uint64_t nchunks;
  uint64_t max_file_size;       /* 0: one file */
  bool unlink;
};

/* Create the store's first file (the others as they are needed).  On error
 * returns a negative errno and a message in errmsg.
 */
int store_file_create (const struct store_file_params *p, struct store **stp,
                       char *errmsg, size_t errlen);

/* Reopen the files of an existing store (after a restart).  Files not
 * there are taken as never created; the caller checks that they hold what
 * the owner map says (store_file_size).
 */
int store_file_open (const struct store_file_params *p, struct store **stp,
                     char *errmsg, size_t errlen);
/* Size of file i, or -ENOENT if it does not exist. */
int64_t store_file_size (struct store *st, unsigned i);

/* Which file chunk c lives in and where: exposed for the tests. */
void store_file_locate (const struct store *st, uint64_t chunk,
                        unsigned *filep, uint64_t *offp);

static inline int
store_write_chunk (struct store *st, uint64_t c, const void *buf, size_t len)
{
  return st->ops->write_chunk (st, c, buf, len);
}

static inline int
store_read_chunk (struct store *st, uint64_t c, void *buf, size_t skip,
                  size_t len)
{
  return st->ops->read_chunk (st, c, buf, skip, len);
}

static inline int
store_sync (struct store *st)
{
  return st->ops->sync (st);
}

static inline void
store_destroy (struct store *st, bool remove)
{
  if (st)
    st->ops->destroy (st, remove);
}

#endif /* FSSNAP_STORE_H */
