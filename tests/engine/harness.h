/* SPDX-License-Identifier: MIT */
/*
 * Test harness for the engine tests: a scratch directory with an origin
 * image; a fault-injecting store (store_fault.h) that wraps every store the
 * engine creates, to slow down or fail its writes on demand; and an I/O
 * layer that wraps the real one to fail any one kind of operation (open, read, write, sync, directory sync, rename, unlink) on
 * the files whose path contains a string (harness_fault): with an errno,
 * once, n times or for ever, or as a short transfer.  Header-only: each
 * test program includes it once.
 */
#ifndef FSSNAP_TEST_HARNESS_H
#define FSSNAP_TEST_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libfssnap.h"
#include "tests/engine/store_fault.h"

#define HARNESS_MAX_FD 4096

enum harness_op { HOP_OPEN, HOP_READ, HOP_WRITE, HOP_SYNC, HOP_DIRSYNC,
                  HOP_RENAME, HOP_UNLINK, HOP_NOPS };
#define HARNESS_SHORT 1                 /* fault: a short transfer */
#define HARNESS_HOLD 2                  /* fault (fsync): wait for
                                           harness_release, then sync */

struct harness_fault {
  _Atomic int op;                       /* enum harness_op; -1: none */
  char match[128];                      /* path substring ("" matches all) */
  int err;                              /* -errno, or HARNESS_SHORT */
  _Atomic int times;                    /* faults left; < 0: for ever */
  _Atomic unsigned hits;
};

struct harness {
  char dir[64];
  char origin_path[128];
  uint64_t size;
  struct fssnap_io io;
  _Atomic int store_errno;              /* fail store writes with this */
  _Atomic long long store_budget;       /* bytes before failing; <0: never */
  _Atomic unsigned store_delay_us;      /* sleep in each store write */
  _Atomic unsigned long long store_writes;
  struct harness_fault fault;
  _Atomic unsigned dir_syncs;           /* directory fsyncs that worked */
  bool skip_syncs;                      /* fsync succeeds without syncing:
                                           for tests without power loss */
  pthread_mutex_t hold_lock;            /* HARNESS_HOLD */
  pthread_cond_t hold_cond;
  bool released;
  pthread_mutex_t fd_lock;
  char *fd_path[HARNESS_MAX_FD];        /* what each descriptor is open on */
  bool fd_dir[HARNESS_MAX_FD];
};

/* Arm one fault: operation op on paths containing match fails with err
 * (-errno or HARNESS_SHORT) 'times' times (< 0: until disarmed).
 */
static inline void
harness_fault (struct harness *h, enum harness_op op, const char *match,
               int err, int times)
{
  atomic_store (&h->fault.op, -1);
  snprintf (h->fault.match, sizeof h->fault.match, "%s", match);
  h->fault.err = err;
  atomic_store (&h->fault.times, times);
  atomic_store (&h->fault.hits, 0);
  atomic_store (&h->fault.op, (int) op);
}

static inline void
harness_fault_clear (struct harness *h)
{
  atomic_store (&h->fault.op, -1);
}

/* The fault for op on path, or 0. */
static inline int
harness_fault_hit (struct harness *h, enum harness_op op, const char *path)
{
  if (atomic_load (&h->fault.op) != (int) op || !path
      || !strstr (path, h->fault.match))
    return 0;
  int left = atomic_load (&h->fault.times);
  while (left != 0 && !atomic_compare_exchange_weak (&h->fault.times, &left,
                                                      left < 0 ? left
                                                               : left - 1))
    ;
  if (left == 0)
    return 0;
  atomic_fetch_add (&h->fault.hits, 1);
  return h->fault.err;
}

/* The fault for op on descriptor fd, or 0. */
static inline int
harness_fault_fd (struct harness *h, enum harness_op op, int fd)
{
  if (atomic_load (&h->fault.op) != (int) op || fd < 0 || fd >= HARNESS_MAX_FD)
    return 0;
  pthread_mutex_lock (&h->fd_lock);
  int r = h->fd_path[fd] ? harness_fault_hit (h, op, h->fd_path[fd]) : 0;
  pthread_mutex_unlock (&h->fd_lock);
  return r;
}


/* xorshift64*: small, fast, reproducible from a seed. */
static inline uint64_t
rng_next (uint64_t *s)
{
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * UINT64_C (2685821657736338717);
}

static inline bool
rng_bit (uint64_t *s)
{
  return rng_next (s) >> 63;
}

/* A log callback that keeps only errors (tests that expect none). */
static inline void
harness_quiet_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  if (level == FSSNAP_LOG_ERR)
    fprintf (stderr, "libfssnap: error: %s\n", msg);
}

static int
harness_open (void *opaque, const char *path, int flags, mode_t mode)
{
  struct harness *h = opaque;
  int f = harness_fault_hit (h, HOP_OPEN, path);
  if (f < 0)
    return f;
  int fd = fssnap_io_posix ()->open (NULL, path, flags, mode);
  if (fd >= 0 && fd < HARNESS_MAX_FD) {
    pthread_mutex_lock (&h->fd_lock);
    free (h->fd_path[fd]);
    h->fd_path[fd] = strdup (path);
    h->fd_dir[fd] = flags & O_DIRECTORY;
    pthread_mutex_unlock (&h->fd_lock);
  }
  return fd;
}

static int
harness_close (void *opaque, int fd)
{
  struct harness *h = opaque;
  if (fd >= 0 && fd < HARNESS_MAX_FD) {
    pthread_mutex_lock (&h->fd_lock);
    free (h->fd_path[fd]);
    h->fd_path[fd] = NULL;
    pthread_mutex_unlock (&h->fd_lock);
  }
  return fssnap_io_posix ()->close (NULL, fd);
}

static ssize_t
harness_pread (void *opaque, int fd, void *buf, size_t len, off_t off)
{
  int f = harness_fault_fd (opaque, HOP_READ, fd);
  if (f < 0)
    return f;
  if (f == HARNESS_SHORT && len > 1)
    len /= 2;
  return fssnap_io_posix ()->pread (NULL, fd, buf, len, off);
}

/* Let the fsyncs HARNESS_HOLD stopped go on. */
static inline void
harness_release (struct harness *h)
{
  pthread_mutex_lock (&h->hold_lock);
  h->released = true;
  pthread_cond_broadcast (&h->hold_cond);
  pthread_mutex_unlock (&h->hold_lock);
}

static void
harness_hold (struct harness *h)
{
  pthread_mutex_lock (&h->hold_lock);
  while (!h->released)
    pthread_cond_wait (&h->hold_cond, &h->hold_lock);
  pthread_mutex_unlock (&h->hold_lock);
}

static int
harness_fsync (void *opaque, int fd)
{
  struct harness *h = opaque;
  bool dir = false;
  if (fd >= 0 && fd < HARNESS_MAX_FD) {
    pthread_mutex_lock (&h->fd_lock);
    dir = h->fd_dir[fd];
    pthread_mutex_unlock (&h->fd_lock);
  }
  int f = harness_fault_fd (h, dir ? HOP_DIRSYNC : HOP_SYNC, fd);
  if (f < 0)
    return f;
  if (f == HARNESS_HOLD)
    harness_hold (h);
  int r = h->skip_syncs ? 0 : fssnap_io_posix ()->fsync (NULL, fd);
  if (r == 0 && dir)
    atomic_fetch_add (&h->dir_syncs, 1);
  return r;
}

static int
harness_rename (void *opaque, const char *from, const char *to)
{
  int f = harness_fault_hit (opaque, HOP_RENAME, from);
  if (f < 0)
    return f;
  return fssnap_io_posix ()->rename (NULL, from, to);
}

static int
harness_unlink (void *opaque, const char *path)
{
  int f = harness_fault_hit (opaque, HOP_UNLINK, path);
  if (f < 0)
    return f;
  return fssnap_io_posix ()->unlink (NULL, path);
}

static ssize_t
harness_pwrite (void *opaque, int fd, const void *buf, size_t len, off_t off)
{
  struct harness *h = opaque;
  int f = harness_fault_fd (h, HOP_WRITE, fd);
  if (f < 0)
    return f;
  if (f == HARNESS_SHORT && len > 1)
    len /= 2;
  return fssnap_io_posix ()->pwrite (NULL, fd, buf, len, off);
}

/* For the fault-injecting store: count a chunk write of len bytes, delay
 * it, and say whether it fails (with *err).
 */
static bool
store_fault_should_fail (struct harness *h, size_t len, int *err)
{
  atomic_fetch_add (&h->store_writes, 1);
  unsigned delay = atomic_load (&h->store_delay_us);
  if (delay) {
    struct timespec ts = { 0, (long) delay * 1000 };
    nanosleep (&ts, NULL);
  }
  *err = atomic_load (&h->store_errno);
  return *err && atomic_fetch_sub (&h->store_budget, (long long) len)
                 < (long long) len;
}

/* Make a scratch dir and an origin of 'size' bytes filled with a pattern
 * that differs in every 512-byte sector.
 */
static inline struct harness *
harness_new (uint64_t size)
{
  struct harness *h = calloc (1, sizeof *h);
  strcpy (h->dir, "/tmp/fssnap-engine.XXXXXX");
  if (!mkdtemp (h->dir))
    abort ();
  snprintf (h->origin_path, sizeof h->origin_path, "%s/origin.img", h->dir);
  h->size = size;
  int fd = open (h->origin_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  char *buf = malloc (size);
  for (uint64_t i = 0; i < size; i++)
    buf[i] = (char) (i * 7 + i / 512 * 13 + 1);
  if (fd < 0 || pwrite (fd, buf, size, 0) != (ssize_t) size)
    abort ();
  close (fd);
  free (buf);
  h->io = *fssnap_io_posix ();
  h->io.opaque = h;
  h->io.open = harness_open;
  h->io.close = harness_close;
  h->io.pread = harness_pread;
  h->io.pwrite = harness_pwrite;
  h->io.fsync = harness_fsync;
  h->io.rename = harness_rename;
  h->io.unlink = harness_unlink;
  h->io.pwritev = NULL;         /* every write through harness_pwrite */
  atomic_store (&h->store_budget, -1);
  atomic_store (&h->fault.op, -1);
  pthread_mutex_init (&h->fd_lock, NULL);
  pthread_mutex_init (&h->hold_lock, NULL);
  pthread_cond_init (&h->hold_cond, NULL);
  return h;
}

static inline void
harness_free (struct harness *h)
{
  char cmd[128];
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", h->dir);
  if (system (cmd) != 0)
    fprintf (stderr, "could not remove %s\n", h->dir);
  for (int fd = 0; fd < HARNESS_MAX_FD; fd++)
    free (h->fd_path[fd]);
  pthread_mutex_destroy (&h->fd_lock);
  pthread_mutex_destroy (&h->hold_lock);
  pthread_cond_destroy (&h->hold_cond);
  free (h);
}

static inline struct fssnap_origin *
harness_origin (struct harness *h, uint32_t chunksize, uint64_t max_mem)
{
  struct fssnap_origin_opts oo = {
    .path = h->origin_path, .state_dir = h->dir, .chunksize = chunksize,
    .max_mem = max_mem, .io = &h->io,
  };
  struct fssnap_origin *o = NULL;
  int r = fssnap_origin_open (&oo, &o);
  if (r < 0) {
    fprintf (stderr, "fssnap_origin_open: %s\n", strerror (-r));
    abort ();
  }
  store_set_wrap (o, store_fault_wrap, h);
  return o;
}

/* Create a snapshot with every chunk a candidate; returns its number. */
static inline unsigned
harness_snap (struct fssnap_origin *o, const struct fssnap_create_opts *opts)
{
  struct fssnap_create_opts def = { 0 };
  unsigned num = 0;
  char err[256];
  int r = fssnap_snapshot_create (o, opts ? opts : &def, &num, err, sizeof err);
  if (r < 0) {
    fprintf (stderr, "fssnap_snapshot_create: %s\n", err);
    abort ();
  }
  return num;
}

/* Read the whole snapshot (or the origin with num < 0) into a new buffer. */
static inline char *
harness_read_all (struct fssnap_origin *o, int num, int *errp)
{
  uint64_t size = fssnap_origin_size (o);
  char *buf = malloc (size);
  int r;
  if (num < 0)
    r = fssnap_origin_read (o, buf, size, 0);
  else {
    struct fssnap_snapshot *s;
    r = fssnap_snapshot_open (o, num, &s);
    if (r == 0) {
      r = fssnap_snapshot_read (s, buf, size, 0);
      fssnap_snapshot_close (s);
    }
  }
  *errp = r;
  return buf;
}

static inline char *
harness_image (struct harness *h)
{
  char *buf = malloc (h->size);
  int fd = open (h->origin_path, O_RDONLY);
  if (fd < 0 || pread (fd, buf, h->size, 0) != (ssize_t) h->size)
    abort ();
  close (fd);
  return buf;
}

/* Changed-block tracking: chunks reported as possibly changed. */
struct harness_changes {
  uint32_t chunksize;
  bool *changed;                        /* per chunk */
};

static inline int
harness_changes_cb (void *opaque, uint64_t off, uint64_t len, bool same)
{
  struct harness_changes *hc = opaque;
  if (!same)
    for (uint64_t c = off / hc->chunksize; c <= (off + len - 1) / hc->chunksize;
         c++)
      hc->changed[c] = true;
  return 0;
}

/* Check that fssnap_changes (a, b) reports every chunk whose bytes differ
 * between images ia and ib; returns the chunk that is missed, or -1.
 */
static inline int64_t
harness_changes_missed (struct fssnap_origin *o, int a, int b, const char *ia,
                        const char *ib, int *errp)
{
  uint64_t size = fssnap_origin_size (o);
  uint32_t cs = fssnap_origin_chunksize (o);
  uint64_t nchunks = (size + cs - 1) / cs;
  struct harness_changes hc = { cs, calloc (nchunks, sizeof (bool)) };
  char err[256];
  *errp = fssnap_changes (o, a, b, 0, size, harness_changes_cb, &hc, err,
                          sizeof err);
  int64_t missed = -1;
  for (uint64_t c = 0; *errp == 0 && c < nchunks && missed < 0; c++) {
    uint64_t n = size - c * cs < cs ? size - c * cs : cs;
    if (!hc.changed[c] && memcmp (ia + c * cs, ib + c * cs, n) != 0)
      missed = c;
  }
  free (hc.changed);
  return missed;
}

#endif /* FSSNAP_TEST_HARNESS_H */
