/* SPDX-License-Identifier: MIT */
/*
 * The persistent backing store: sparse files, fsync'd.
 *
 * The old copy of chunk c lives at byte c * chunksize of the store, so the
 * store needs no index: whether a chunk is there is the owner bitmap's
 * business.  With max_file_size set, the store is split into files of at
 * most that many bytes (rounded down to whole chunks, at least one):
 * chunk c lives in file c / chunks_per_file at offset
 * (c % chunks_per_file) * chunksize.  File 0 is PATH, file i is PATH.i; the
 * files after the first are created on their first write, so a store never
 * holds more files than it has data for.  All files are sparse.
 *
 * Durability: each file remembers whether it was written since the last
 * sync, and the store whether it created a file since then (the directory
 * entry must be synced too), so a sync touches only what changed.
 *
 * Usage counts the chunks written (and, after a restart, found by check),
 * each written once: a copy has one owner.
 *
 * Locks: file_lock (a leaf) guards the lazily opened descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/stat.h>

#include "engine/internal.h"
#include "engine/store.h"

struct store_file {
  struct store base;
  const struct fssnap_io *io;
  uint32_t chunksize;
  uint64_t origin_size;
  _Atomic uint64_t held;        /* chunks held */
  uint64_t chunks_per_file;
  pthread_mutex_t file_lock;
  int *fds;                     /* -1: not created yet */
  _Atomic bool *written;        /* file written since the last sync */
  _Atomic bool dir_changed;     /* a file was created since the last sync */
  bool unlink;
};

static struct store_file *
sf (struct store *st)
{
  return (struct store_file *) st;
}

void
store_file_locate (const struct store *st, uint64_t chunk, unsigned *filep,
                   uint64_t *offp)
{
  const struct store_file *f = (const struct store_file *) st;
  *filep = chunk / f->chunks_per_file;
  *offp = (chunk % f->chunks_per_file) * f->chunksize;
}

static char *
store_file_name (const struct store_file *f, unsigned i)
{
  char *name;
  int r = i == 0 ? asprintf (&name, "%s", f->base.path)
                 : asprintf (&name, "%s.%u", f->base.path, i);
  return r < 0 ? NULL : name;
}

/* Open (creating it) file i.  Caller holds file_lock. */
static int
store_file_open_locked (struct store_file *f, unsigned i)
{
  char *name = store_file_name (f, i);
  if (!name)
    return -ENOMEM;
  int fd = f->io->open (f->io->opaque, name,
                        O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0 && f->unlink)
    f->io->unlink (f->io->opaque, name);
  free (name);
  if (fd < 0)
    return fd;
  f->fds[i] = fd;
  atomic_store (&f->dir_changed, true);
  return 0;
}

/* The descriptor of file i, created if 'create'.  Takes file_lock. */
static int
store_file_fd (struct store_file *f, unsigned i, bool create)
{
  pthread_mutex_lock (&f->file_lock);
  int r = f->fds[i];
  if (r < 0 && create) {
    r = store_file_open_locked (f, i);
    if (r == 0)
      r = f->fds[i];
  }
  else if (r < 0)
    r = -EIO;                   /* read of a chunk never written */
  pthread_mutex_unlock (&f->file_lock);
  return r;
}

static int
store_file_write_chunk (struct store *st, uint64_t chunk, const void *buf,
                        size_t len)
{
  struct store_file *f = sf (st);
  unsigned i;
  uint64_t off;
  store_file_locate (st, chunk, &i, &off);
  int fd = store_file_fd (f, i, true);
  if (fd < 0)
    return fd;
  int r = io_pwrite_full (f->io, fd, buf, len, off);
  if (r == 0) {
    atomic_store (&f->written[i], true);
    atomic_fetch_add (&f->held, 1);
  }
  return r;
}

static int
store_file_read_chunk (struct store *st, uint64_t chunk, void *buf,
                       size_t skip, size_t len)
{
  struct store_file *f = sf (st);
  unsigned i;
  uint64_t off;
  store_file_locate (st, chunk, &i, &off);
  int fd = store_file_fd (f, i, false);
  if (fd < 0)
    return fd;
  return io_pread_full (f->io, fd, buf, len, off + skip);
}

/* fsync the directory holding the store's files. */
static int
store_file_sync_dir (struct store_file *f)
{
  char *copy = strdup (f->base.path);
  if (!copy)
    return -ENOMEM;
  int r = io_sync_dir (f->io, dirname (copy));
  free (copy);
  return r;
}

/* Takes file_lock while reading the descriptors. */
static int
store_file_sync (struct store *st)
{
  struct store_file *f = sf (st);
  int r = 0;
  for (unsigned i = 0; r == 0 && i < st->nfiles; i++) {
    if (!atomic_exchange (&f->written[i], false))
      continue;
    pthread_mutex_lock (&f->file_lock);
    int fd = f->fds[i];
    pthread_mutex_unlock (&f->file_lock);
    r = f->io->fsync (f->io->opaque, fd);
    if (r < 0)
      atomic_store (&f->written[i], true);
  }
  if (r == 0 && !f->unlink && atomic_exchange (&f->dir_changed, false)) {
    r = store_file_sync_dir (f);
    if (r < 0)
      atomic_store (&f->dir_changed, true);
  }
  return r;
}

/* Size of file i, or -ENOENT if it does not exist. */
static int64_t
store_file_size (struct store_file *f, unsigned i)
{
  uint64_t size;
  if (f->fds[i] < 0)
    return -ENOENT;
  int r = f->io->getsize (f->io->opaque, f->fds[i], &size);
  return r < 0 ? r : (int64_t) size;
}

/* The copy of c is there if its file is long enough (a hole in a sparse
 * file is a copy of zeros: nothing tells it from a lost one, and the file
 * system does not lose blocks inside a file without an error).
 */
static int
store_file_check (struct store *st, uint64_t c, char *why, size_t len)
{
  struct store_file *f = sf (st);
  unsigned file;
  uint64_t off;
  store_file_locate (st, c, &file, &off);
  uint64_t start = c * f->chunksize;
  uint64_t need = off + (f->origin_size - start < f->chunksize
                         ? f->origin_size - start : f->chunksize);
  int64_t size = store_file_size (f, file);
  if (size == -ENOENT) {
    snprintf (why, len, "backing store file %u of %.160s is missing", file,
              st->path);
    return -EBADMSG;
  }
  if (size < 0) {
    snprintf (why, len, "cannot read the size of backing store file %u of "
              "%.160s: %s", file, st->path, strerror ((int) -size));
    return (int) size;
  }
  if (size < (int64_t) need) {
    snprintf (why, len, "backing store file %u of %.160s is truncated (%"
              PRId64 " bytes, copies need %" PRIu64 ")", file, st->path, size,
              need);
    return -EBADMSG;
  }
  atomic_fetch_add (&f->held, 1);
  return 0;
}

static uint64_t
store_file_usage (struct store *st)
{
  struct store_file *f = sf (st);
  return atomic_load (&f->held) * f->chunksize;
}

static void
store_file_destroy (struct store *st, bool remove)
{
  struct store_file *f = sf (st);
  for (unsigned i = 0; i < st->nfiles; i++) {
    if (f->fds[i] < 0)
      continue;
    f->io->close (f->io->opaque, f->fds[i]);
    if (remove && !f->unlink) {
      char *name = store_file_name (f, i);
      if (name)
        f->io->unlink (f->io->opaque, name);
      free (name);
    }
  }
  pthread_mutex_destroy (&f->file_lock);
  free (f->fds);
  free ((void *) f->written);
  free (st->path);
  free (f);
}

const struct store_ops store_file_ops = {
  .kind = "persistent",
  .persistent = true,
  .create = store_file_create,
  .open = store_file_open,
  .check = store_file_check,
  .write = store_file_write_chunk,
  .read = store_file_read_chunk,
  .sync = store_file_sync,
  .usage = store_file_usage,
  .drop = store_file_destroy,
};

static char *
store_file_path (const struct store_params *p)
{
  struct stat st;
  char *path;
  if (p->name && stat (p->location, &st) == 0 && S_ISDIR (st.st_mode)) {
    if (asprintf (&path, "%s/%s", p->location, p->name) < 0)
      return NULL;
    return path;
  }
  return strdup (p->location);
}

/* Allocate the store's state; no file is opened yet. */
static struct store_file *
store_file_alloc (const struct store_params *p)
{
  struct store_file *f = calloc (1, sizeof *f);
  if (!f)
    return NULL;
  f->base.ops = &store_file_ops;
  f->io = p->io;
  f->chunksize = p->chunksize;
  f->origin_size = p->origin_size;
  f->unlink = p->unlink;
  f->base.unlinked = p->unlink;
  f->chunks_per_file = p->nchunks ? p->nchunks : 1;
  if (p->max_file_size) {
    uint64_t per = p->max_file_size / p->chunksize;
    if (per == 0)
      per = 1;
    if (per < f->chunks_per_file)
      f->chunks_per_file = per;
  }
  f->base.nfiles = p->nchunks ? (p->nchunks + f->chunks_per_file - 1)
                                / f->chunks_per_file : 1;
  f->base.path = store_file_path (p);
  f->fds = malloc (f->base.nfiles * sizeof *f->fds);
  f->written = calloc (f->base.nfiles, sizeof *f->written);
  if (!f->base.path || !f->fds || !f->written) {
    free (f->base.path);
    free (f->fds);
    free ((void *) f->written);
    free (f);
    return NULL;
  }
  for (unsigned i = 0; i < f->base.nfiles; i++)
    f->fds[i] = -1;
  pthread_mutex_init (&f->file_lock, NULL);
  return f;
}

int
store_file_create (const struct store_params *p, struct store **stp,
                   char *errmsg, size_t errlen)
{
  struct store_file *f = store_file_alloc (p);
  if (!f)
    return -ENOMEM;
  int r = store_file_open_locked (f, 0);
  if (r < 0) {
    snprintf (errmsg, errlen, "cannot create backing store %s: %s",
              f->base.path, strerror (-r));
    store_file_destroy (&f->base, false);
    return r;
  }
  *stp = &f->base;
  return 0;
}

int
store_file_open (const struct store_params *p, struct store **stp,
                 char *errmsg, size_t errlen)
{
  struct store_file *f = store_file_alloc (p);
  if (!f)
    return -ENOMEM;
  for (unsigned i = 0; i < f->base.nfiles; i++) {
    char *name = store_file_name (f, i);
    if (!name) {
      store_file_destroy (&f->base, false);
      return -ENOMEM;
    }
    int fd = f->io->open (f->io->opaque, name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0 && fd != -ENOENT) {
      snprintf (errmsg, errlen, "cannot open backing store %s: %s", name,
                strerror (-fd));
      free (name);
      store_file_destroy (&f->base, false);
      return fd;
    }
    free (name);
    f->fds[i] = fd < 0 ? -1 : fd;
  }
  *stp = &f->base;
  return 0;
}
