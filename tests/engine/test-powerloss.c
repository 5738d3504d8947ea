/* SPDX-License-Identifier: MIT */
/*
 * Power loss, simulated.
 *
 * The engine runs over a recording I/O layer: every write, zero and discard
 * of every file is passed to the real file and also remembered as pending
 * for that file; an fsync makes the file's pending writes durable (in the
 * record: the real fsync is skipped, which makes the test fast).  Names
 * are durable only after an fsync of their directory, as POSIX has it: a
 * file created, renamed or unlinked since the last one may be found under
 * its old name (or not at all, or still there) after the cut, each choice
 * made at random.
 *
 * A timer thread (cut_timer) cuts at a random moment while a random
 * workload runs (writes, zeroes, flushes, creates and deletes of
 * snapshots).  After the cut nothing more is recorded; the engine is closed, and every file is
 * rebuilt in place as the disk could hold it after a power loss at the cut:
 * what was durable, plus a random subset of the pending writes.  Files
 * created after the cut are removed.  Then the engine opens the rebuilt
 * state and the test checks the two promises:
 *   - every snapshot that comes back is valid and reads exactly the image
 *     it had at creation; every snapshot created (and not being deleted)
 *     before the cut comes back; none deleted before the cut does;
 *   - the volume holds every byte as of the last flush acknowledged before
 *     the cut, except bytes written after that flush, and every byte of a
 *     FUA write acknowledged before the cut, unless written again since.
 * Writes are staged (engine/staging.c) while the copies they need are not
 * durable, so the cut also lands inside the staging path: one crash
 * point in three cuts right after the n-th write to the staging log, one
 * in three right after the n-th write to the origin (whichever comes
 * first, that or the timed cut).
 * The same for a writable clone (engine/clone.c, over the same recorder):
 * random writes, zeroes and flushes into a clone of a snapshot, a cut, the
 * files rebuilt, the clone reopened as in another boot (the kernel's
 * boot_id differs, FSSNAP_TEST_BOOT_ID): it comes back, holds every byte
 * as of its last acknowledged flush except bytes written after it, and
 * its base snapshot is unchanged.
 * And for a rollback (engine/rollback.c) to the older of two snapshots,
 * cut at random (or after the n-th write to the staging log or the
 * origin): both snapshots come back exact; with the intent on disk, the
 * rollback run again ends with the volume as its target; without it,
 * the volume is as before (never begun) or, with the record of a
 * finished rollback, as the target.
 * FSSNAP_CRASH_POINTS sets how many cuts of each (default 300).
 * FSSNAP_POWERLOSS_TRACE=DIR logs every open, write, fsync, rename, unlink
 * and close the engine made, the cut, and what the rebuild applied, to
 * DIR/trace-SEED.txt; the file is kept only for a crash point that fails.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define SIZE (256 * 1024)
#define CHUNK 4096
#define MAX_FILES 512
#define MAX_SNAPS 64

struct pending {
  uint64_t off;
  size_t len;
  unsigned char *data;          /* NULL: zeros */
  struct pending *next;
};

struct rfile {
  char *path;                   /* its name now */
  char *durable_path;           /* its name as of the last directory sync
                                   (NULL: none) */
  unsigned char *durable;
  size_t size;
  struct pending *head, *tail;
  bool unlinked;
};

struct recorder {
  struct fssnap_io io;
  pthread_mutex_t lock;
  bool recording;
  /* Crash points inside the staging path: cut right after the n-th write
   * to the staging log, or to the origin (0: no such cut).
   */
  unsigned cut_at_log_write, cut_at_origin_write;
  struct rfile files[MAX_FILES];
  int nfiles;
  int fd_file[HARNESS_MAX_FD];  /* -1: not recorded */
  char *fd_dir[HARNESS_MAX_FD]; /* directories open for a sync */
  FILE *trace;                  /* FSSNAP_POWERLOSS_TRACE: event log */
};

#define TRACE(r, ...) \
  do { if ((r)->trace) fprintf ((r)->trace, __VA_ARGS__); } while (0)

static struct rfile *
rec_file (struct recorder *r, int fd)
{
  if (fd < 0 || fd >= HARNESS_MAX_FD || r->fd_file[fd] < 0)
    return NULL;
  return &r->files[r->fd_file[fd]];
}

static int
rec_register (struct recorder *r, const char *path, const void *content,
              size_t size)
{
  if (r->nfiles == MAX_FILES)
    abort ();
  struct rfile *f = &r->files[r->nfiles];
  memset (f, 0, sizeof *f);
  f->path = strdup (path);
  f->durable_path = NULL;       /* until its directory is synced */
  f->durable = malloc (size ? size : 1);
  memcpy (f->durable, content, size);
  f->size = size;
  return r->nfiles++;
}

static int
rec_find (struct recorder *r, const char *path)
{
  for (int i = r->nfiles - 1; i >= 0; i--)
    if (!r->files[i].unlinked && strcmp (r->files[i].path, path) == 0)
      return i;
  return -1;
}

static void
rec_add_pending (struct rfile *f, uint64_t off, size_t len, const void *data)
{
  struct pending *p = calloc (1, sizeof *p);
  p->off = off;
  p->len = len;
  if (data) {
    p->data = malloc (len);
    memcpy (p->data, data, len);
  }
  if (f->tail)
    f->tail->next = p;
  else
    f->head = p;
  f->tail = p;
}

static void
rfile_apply (unsigned char **buf, size_t *size, const struct pending *p)
{
  if (p->off + p->len > *size) {
    *buf = realloc (*buf, p->off + p->len);
    memset (*buf + *size, 0, p->off + p->len - *size);
    *size = p->off + p->len;
  }
  if (p->data)
    memcpy (*buf + p->off, p->data, p->len);
  else
    memset (*buf + p->off, 0, p->len);
}

static void
rfile_free_pending (struct rfile *f)
{
  struct pending *p = f->head, *next;
  for (; p; p = next) {
    next = p->next;
    free (p->data);
    free (p);
  }
  f->head = f->tail = NULL;
}

static int
rec_open (void *opaque, const char *path, int flags, mode_t mode)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  int fd = fssnap_io_posix ()->open (NULL, path, flags, mode);
  if (fd >= 0 && fd < HARNESS_MAX_FD) {
    r->fd_file[fd] = -1;
    free (r->fd_dir[fd]);
    r->fd_dir[fd] = flags & O_DIRECTORY ? strdup (path) : NULL;
    if (r->recording && !(flags & O_DIRECTORY)) {
      int i = rec_find (r, path);
      if (i < 0 && (flags & O_CREAT))
        i = rec_register (r, path, "", 0);
      r->fd_file[fd] = i;
    }
    TRACE (r, "open %s flags %#x fd %d file %d rec %d\n", path, flags, fd,
           r->fd_file[fd], r->recording);
  }
  pthread_mutex_unlock (&r->lock);
  return fd;
}

static int
rec_close (void *opaque, int fd)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  if (fd >= 0 && fd < HARNESS_MAX_FD) {
    TRACE (r, "close fd %d file %d\n", fd, r->fd_file[fd]);
    r->fd_file[fd] = -1;
  }
  int ret = fssnap_io_posix ()->close (NULL, fd);
  pthread_mutex_unlock (&r->lock);
  return ret;
}

static ssize_t
rec_pwrite (void *opaque, int fd, const void *buf, size_t len, off_t off)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  ssize_t n = fssnap_io_posix ()->pwrite (NULL, fd, buf, len, off);
  struct rfile *f = rec_file (r, fd);
  TRACE (r, "pwrite fd %d file %d off %lld len %zd rec %d\n", fd,
         fd >= 0 && fd < HARNESS_MAX_FD ? r->fd_file[fd] : -1,
         (long long) off, n, r->recording);
  if (n > 0 && f && r->recording) {
    rec_add_pending (f, off, n, buf);
    unsigned *cut = f == &r->files[0] ? &r->cut_at_origin_write
      : strstr (f->path, ".staging") ? &r->cut_at_log_write : NULL;
    if (cut && *cut && --*cut == 0) {
      r->recording = false;
      TRACE (r, "cut after write\n");
    }
  }
  pthread_mutex_unlock (&r->lock);
  return n;
}

/* Whether path names an entry of directory dir. */
static bool
rec_in_dir (const char *path, const char *dir)
{
  size_t n = strlen (dir);
  while (n > 1 && dir[n - 1] == '/')
    n--;
  return strncmp (path, dir, n) == 0 && path[n] == '/'
    && !strchr (path + n + 1, '/');
}

/* A sync of directory dir: the names of its entries are durable. */
static void
rec_sync_dir (struct recorder *r, const char *dir)
{
  for (int i = 0; i < r->nfiles; i++) {
    struct rfile *f = &r->files[i];
    if (!rec_in_dir (f->path, dir))
      continue;
    free (f->durable_path);
    f->durable_path = f->unlinked ? NULL : strdup (f->path);
  }
}

static int
rec_fsync (void *opaque, int fd)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  if (fd >= 0 && fd < HARNESS_MAX_FD && r->fd_dir[fd] && r->recording)
    rec_sync_dir (r, r->fd_dir[fd]);
  struct rfile *f = rec_file (r, fd);
  if (f && r->recording) {
    for (struct pending *p = f->head; p; p = p->next)
      rfile_apply (&f->durable, &f->size, p);
    rfile_free_pending (f);
  }
  TRACE (r, "fsync fd %d file %d size %zd rec %d\n", fd,
         fd >= 0 && fd < HARNESS_MAX_FD ? r->fd_file[fd] : -1,
         f ? f->size : 0, r->recording);
  pthread_mutex_unlock (&r->lock);
  return 0;
}

static int
rec_zeroing (struct recorder *r, int fd, off_t off, off_t len, bool discard)
{
  pthread_mutex_lock (&r->lock);
  const struct fssnap_io *px = fssnap_io_posix ();
  int ret = discard ? px->discard (NULL, fd, off, len)
                    : px->zero (NULL, fd, off, len);
  struct rfile *f = rec_file (r, fd);
  if (ret == 0 && f && r->recording)
    rec_add_pending (f, off, len, NULL);
  pthread_mutex_unlock (&r->lock);
  return ret;
}

static int
rec_zero (void *opaque, int fd, off_t off, off_t len)
{
  return rec_zeroing (opaque, fd, off, len, false);
}

static int
rec_discard (void *opaque, int fd, off_t off, off_t len)
{
  return rec_zeroing (opaque, fd, off, len, true);
}

static int
rec_unlink (void *opaque, const char *path)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  int ret = fssnap_io_posix ()->unlink (NULL, path);
  int i = rec_find (r, path);
  if (ret == 0 && i >= 0 && r->recording)
    r->files[i].unlinked = true;
  TRACE (r, "unlink %s file %d rec %d\n", path, i, r->recording);
  pthread_mutex_unlock (&r->lock);
  return ret;
}

static int
rec_rename (void *opaque, const char *from, const char *to)
{
  struct recorder *r = opaque;
  pthread_mutex_lock (&r->lock);
  int ret = fssnap_io_posix ()->rename (NULL, from, to);
  int i = rec_find (r, from);
  TRACE (r, "rename %s -> %s file %d (target file %d) rec %d\n", from, to, i,
         rec_find (r, to), r->recording);
  if (ret == 0 && i >= 0 && r->recording) {
    free (r->files[i].path);
    r->files[i].path = strdup (to);
  }
  pthread_mutex_unlock (&r->lock);
  return ret;
}

static bool
rec_still_recording (struct recorder *r)
{
  pthread_mutex_lock (&r->lock);
  bool on = r->recording;
  pthread_mutex_unlock (&r->lock);
  return on;
}

static void
rec_cut (struct recorder *r)
{
  pthread_mutex_lock (&r->lock);
  if (r->recording)
    TRACE (r, "timed cut\n");
  r->recording = false;
  pthread_mutex_unlock (&r->lock);
}

/* A timed cut: rec stops recording us microseconds after the start, from
 * its own thread, while the test's workload runs.
 */
struct cut_timer {
  struct recorder *rec;
  unsigned us;
  pthread_t thread;
};

static void *
cut_timer_run (void *arg)
{
  struct cut_timer *t = arg;
  struct timespec ts = { t->us / 1000000, (long) (t->us % 1000000) * 1000 };
  nanosleep (&ts, NULL);
  rec_cut (t->rec);
  return NULL;
}

static void
cut_timer_start (struct cut_timer *t, struct recorder *rec, unsigned us)
{
  t->rec = rec;
  t->us = us;
  pthread_create (&t->thread, NULL, cut_timer_run, t);
}

static void
cut_timer_join (struct cut_timer *t)
{
  pthread_join (t->thread, NULL);
}

static struct recorder *
rec_new (struct harness *h)
{
  struct recorder *r = calloc (1, sizeof *r);
  r->io = *fssnap_io_posix ();
  r->io.opaque = r;
  r->io.open = rec_open;
  r->io.close = rec_close;
  r->io.pwrite = rec_pwrite;
  r->io.fsync = rec_fsync;
  r->io.zero = rec_zero;
  r->io.discard = rec_discard;
  r->io.unlink = rec_unlink;
  r->io.rename = rec_rename;
  /* Not recorded: a preallocation changes no data, and the store takes it
   * as advice, so without it the store appends into holes, which the
   * recorder models byte for byte.
   */
  r->io.allocate = NULL;
  r->io.pwritev = NULL;         /* every write through rec_pwrite */
  pthread_mutex_init (&r->lock, NULL);
  r->recording = true;
  for (int i = 0; i < HARNESS_MAX_FD; i++)
    r->fd_file[i] = -1;
  char *img = harness_image (h);
  int i = rec_register (r, h->origin_path, img, h->size);
  r->files[i].durable_path = strdup (h->origin_path);
  free (img);
  return r;
}

static void
rec_free (struct recorder *r)
{
  for (int i = 0; i < r->nfiles; i++) {
    rfile_free_pending (&r->files[i]);
    free (r->files[i].durable);
    free (r->files[i].path);
    free (r->files[i].durable_path);
  }
  for (int fd = 0; fd < HARNESS_MAX_FD; fd++)
    free (r->fd_dir[fd]);
  pthread_mutex_destroy (&r->lock);
  free (r);
}

/* The name file f has after the cut (NULL: none): its name now or its
 * durable one, at random where they differ.
 */
static const char *
rfile_name_after_cut (const struct rfile *f, uint64_t *rng)
{
  const char *now = f->unlinked ? NULL : f->path;
  const char *durable = f->durable_path;
  bool same = now && durable ? strcmp (now, durable) == 0 : now == durable;
  return same || rng_bit (rng) ? now : durable;
}

/* Write every file as a power loss at the cut could have left it: under
 * the name it has after the cut (rewritten in place, so the origin keeps
 * its inode), with its durable data plus a random subset of its pending
 * writes; every other file of the dir is removed.
 */
static void
rec_rebuild (struct recorder *r, const char *dir, uint64_t *rng)
{
  const char *names[MAX_FILES];
  for (int i = 0; i < r->nfiles; i++)
    names[i] = rfile_name_after_cut (&r->files[i], rng);
  DIR *d = opendir (dir);
  struct dirent *de;
  while ((de = readdir (d)) != NULL) {
    char path[512];
    snprintf (path, sizeof path, "%s/%s", dir, de->d_name);
    bool keep = de->d_name[0] == '.';
    for (int i = 0; !keep && i < r->nfiles; i++)
      keep = names[i] && strcmp (names[i], path) == 0;
    if (!keep)
      unlink (path);
  }
  closedir (d);
  for (int i = 0; i < r->nfiles; i++) {
    struct rfile *f = &r->files[i];
    if (!names[i])
      continue;
    size_t size = f->size;
    unsigned char *img = malloc (size ? size : 1);
    memcpy (img, f->durable, size);
    TRACE (r, "rebuild file %d %s durable %zu\n", i, f->path, size);
    for (struct pending *p = f->head; p; p = p->next)
      if (rng_bit (rng)) {
        rfile_apply (&img, &size, p);
        TRACE (r, "  apply off %llu len %zu\n", (unsigned long long) p->off,
               p->len);
      }
    TRACE (r, "  final size %zu\n", size);
    int fd = open (names[i], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || pwrite (fd, img, size, 0) != (ssize_t) size)
      abort ();
    close (fd);
    free (img);
  }
}

/* ---- The workload and its model --------------------------------------- */

struct msnap {
  char uuid[FSSNAP_UUID_STRLEN];
  unsigned num;
  char *image;
  bool create_acked, delete_issued, delete_acked;
};

struct run {
  uint64_t rng;
  struct recorder *rec;
  struct fssnap_origin *o;
  unsigned char model[SIZE];
  unsigned char flushed[SIZE];          /* as of the last acked flush */
  bool dirty[SIZE];                     /* written since that flush */
  struct msnap snaps[MAX_SNAPS];
  int nsnaps;
  unsigned max_cut_us;
  unsigned cut_us;                      /* chosen before the cut timer starts */
};

/* A write (or write-zeroes), with FUA or not. */
static void
run_write (struct run *w, bool zero, bool fua)
{
  uint64_t off = rng_next (&w->rng) % SIZE;
  uint64_t len = 1 + rng_next (&w->rng) % (3 * CHUNK);
  if (len > SIZE - off)
    len = SIZE - off;
  unsigned char buf[3 * CHUNK];
  for (uint64_t i = 0; i < len; i++)
    buf[i] = zero ? 0 : (unsigned char) rng_next (&w->rng);
  memset (w->dirty + off, 1, len);      /* before: it may land at any time */
  unsigned flags = fua ? FSSNAP_FUA : 0;
  int r = zero ? fssnap_origin_zero (w->o, len, off, flags)
               : fssnap_origin_write (w->o, buf, len, off, flags);
  assert_int_equal (r, 0);
  memcpy (w->model + off, buf, len);
  if (fua && rec_still_recording (w->rec)) {    /* durable now */
    memcpy (w->flushed + off, buf, len);
    memset (w->dirty + off, 0, len);
  }
}

static void
run_flush (struct run *w)
{
  unsigned char copy[SIZE];
  memcpy (copy, w->model, SIZE);
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  if (rec_still_recording (w->rec)) {
    memcpy (w->flushed, copy, SIZE);
    memset (w->dirty, 0, SIZE);
  }
}

static void
run_create (struct run *w)
{
  int live = 0;
  for (int i = 0; i < w->nsnaps; i++)
    live += !w->snaps[i].delete_issued;
  if (live >= 5 || w->nsnaps == MAX_SNAPS)
    return;
  struct msnap *s = &w->snaps[w->nsnaps++];
  s->image = malloc (SIZE);
  memcpy (s->image, w->model, SIZE);
  struct fssnap_create_opts opts = { 0 };
  char err[256];
  assert_int_equal (fssnap_snapshot_create (w->o, &opts, &s->num, err,
                                            sizeof err), 0);
  s->create_acked = rec_still_recording (w->rec);
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (w->o, s->num, &info), 0);
  memcpy (s->uuid, info.uuid, sizeof s->uuid);
}

static void
run_delete (struct run *w)
{
  int i = w->nsnaps ? (int) (rng_next (&w->rng) % w->nsnaps) : -1;
  if (i < 0 || w->snaps[i].delete_issued)
    return;
  w->snaps[i].delete_issued = true;
  assert_int_equal (fssnap_snapshot_delete (w->o, w->snaps[i].num), 0);
  w->snaps[i].delete_acked = rec_still_recording (w->rec);
}

static void
run_workload (struct run *w)
{
  struct cut_timer t;
  w->cut_us = rng_next (&w->rng) % w->max_cut_us;
  cut_timer_start (&t, w->rec, w->cut_us);
  while (rec_still_recording (w->rec)) {
    unsigned p = rng_next (&w->rng) % 100;
    if (p < 56) run_write (w, false, false);
    else if (p < 60) run_write (w, false, true);
    else if (p < 65) run_write (w, true, p == 64);
    else if (p < 78) run_flush (w);
    else if (p < 92) run_create (w);
    else run_delete (w);
  }
  cut_timer_join (&t);
}

/* ---- Checking the state after the crash ------------------------------- */

static struct msnap *
model_by_uuid (struct run *w, const char *uuid)
{
  for (int i = 0; i < w->nsnaps; i++)
    if (strcmp (w->snaps[i].uuid, uuid) == 0)
      return &w->snaps[i];
  return NULL;
}

static void
check_after_crash (struct run *w, struct fssnap_origin *o, uint64_t seed)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  int n = fssnap_snapshot_list (o, nums, FSSNAP_MAX_SNAPSHOTS);
  bool seen[MAX_SNAPS] = { false };
  for (int i = 0; i < n; i++) {
    struct fssnap_snapshot_info info;
    assert_int_equal (fssnap_snapshot_info (o, nums[i], &info), 0);
    struct msnap *s = model_by_uuid (w, info.uuid);
    if (!s)
      fail_msg ("seed %llu: unknown snapshot %u came back",
                (unsigned long long) seed, nums[i]);
    if (info.state != FSSNAP_STATE_IDLE)
      fail_msg ("seed %llu: snapshot %u came back %s: %s",
                (unsigned long long) seed, nums[i],
                fssnap_state_name (info.state), info.reason);
    if (s->delete_acked)
      fail_msg ("seed %llu: deleted snapshot %u came back",
                (unsigned long long) seed, nums[i]);
    seen[s - w->snaps] = true;
    int r;
    char *got = harness_read_all (o, nums[i], &r);
    assert_int_equal (r, 0);
    if (memcmp (got, s->image, SIZE) != 0)
      fail_msg ("seed %llu: snapshot %u differs from its creation image",
                (unsigned long long) seed, nums[i]);
    free (got);
  }
  for (int i = 0; i < w->nsnaps; i++)
    if (w->snaps[i].create_acked && !w->snaps[i].delete_issued && !seen[i])
      fail_msg ("seed %llu: snapshot %u was lost", (unsigned long long) seed,
                w->snaps[i].num);
  unsigned char *img = malloc (SIZE);
  assert_int_equal (fssnap_origin_read (o, img, SIZE, 0), 0);
  for (size_t i = 0; i < SIZE; i++)
    if (!w->dirty[i] && img[i] != w->flushed[i])
      fail_msg ("seed %llu: volume byte %zu lost a flushed write",
                (unsigned long long) seed, i);
  /* changed-block tracking survived too: every chunk that differs between
   * a snapshot and the volume, or two snapshots, is reported */
  for (int i = 0; i < n; i++) {
    struct fssnap_snapshot_info ia, ib;
    fssnap_snapshot_info (o, nums[i], &ia);
    for (int j = i; j <= n; j++) {
      const char *other = (const char *) img;
      int b = FSSNAP_VOLUME;
      if (j < n) {
        fssnap_snapshot_info (o, nums[j], &ib);
        other = model_by_uuid (w, ib.uuid)->image;
        b = nums[j];
      }
      int r;
      int64_t missed = harness_changes_missed (
        o, nums[i], b, model_by_uuid (w, ia.uuid)->image, other, &r);
      if (r != 0 || missed >= 0)
        fail_msg ("seed %llu: changes between %u and %d: error %d, chunk "
                  "%lld missed", (unsigned long long) seed, nums[i], b, r,
                  (long long) missed);
    }
  }
  free (img);
}

/* The recorder itself: a file created (its data synced) but whose
 * directory was not synced may be missing after the cut; once the
 * directory is synced it is always there.
 */
static void
test_recorder_names_need_dir_sync (void **state)
{
  (void) state;
  unsigned missing[2] = { 0, 0 };
  for (int synced = 0; synced < 2; synced++)
    for (uint64_t seed = 1; seed <= 32; seed++) {
      struct harness *h = harness_new (4096);
      struct recorder *r = rec_new (h);
      char path[256];
      snprintf (path, sizeof path, "%s/new.file", h->dir);
      int fd = r->io.open (r, path, O_RDWR | O_CREAT | O_EXCL, 0600);
      assert_true (fd >= 0);
      assert_int_equal (r->io.pwrite (r, fd, "data", 4, 0), 4);
      assert_int_equal (r->io.fsync (r, fd), 0);
      r->io.close (r, fd);
      if (synced) {
        int dfd = r->io.open (r, h->dir, O_RDONLY | O_DIRECTORY, 0);
        assert_int_equal (r->io.fsync (r, dfd), 0);
        r->io.close (r, dfd);
      }
      rec_cut (r);
      uint64_t rng = seed * 0x9E3779B97F4A7C15ull | 1;
      rec_rebuild (r, h->dir, &rng);
      missing[synced] += access (path, F_OK) != 0;
      rec_free (r);
      harness_free (h);
    }
  assert_true (missing[0] > 0);
  assert_int_equal (missing[1], 0);
}

static unsigned
crash_points (void)
{
  const char *s = getenv ("FSSNAP_CRASH_POINTS");
  return s ? (unsigned) strtoul (s, NULL, 10) : 300;
}

static void
test_power_loss (void **state)
{
  (void) state;
  unsigned points = crash_points ();
  unsigned long long recovered_snaps = 0, staged = 0;
  for (unsigned k = 0; k < points; k++) {
    uint64_t seed = 1000 + k;
    struct harness *h = harness_new (SIZE);
    struct run *w = calloc (1, sizeof *w);
    w->rng = seed * 0x9E3779B97F4A7C15ull | 1;
    w->max_cut_us = 2000 + k % 40 * 500;   /* early cuts and later ones */
    w->rec = rec_new (h);
    const char *tdir = getenv ("FSSNAP_POWERLOSS_TRACE");
    char tpath[256];
    snprintf (tpath, sizeof tpath, "%s/trace-%llu.txt", tdir ? tdir : "",
              (unsigned long long) seed);
    static char tbuf[1 << 25];  /* written out only at the end: no syscalls */
    if (tdir && (w->rec->trace = fopen (tpath, "w")) != NULL)
      setvbuf (w->rec->trace, tbuf, _IOFBF, sizeof tbuf);
    if (k % 3 == 1)             /* a cut inside the staging path */
      w->rec->cut_at_log_write = 1 + rng_next (&w->rng) % 60;
    else if (k % 3 == 2)
      w->rec->cut_at_origin_write = 1 + rng_next (&w->rng) % 200;
    memcpy (w->model, w->rec->files[0].durable, SIZE);
    memcpy (w->flushed, w->model, SIZE);
    struct fssnap_origin_opts oo = {
      .path = h->origin_path, .state_dir = h->dir, .chunksize = CHUNK,
      .max_mem = 8 * CHUNK, .io = &w->rec->io, .log = harness_quiet_log,
    };
    assert_int_equal (fssnap_origin_open (&oo, &w->o), 0);
    run_workload (w);
    struct fssnap_stats st;
    fssnap_origin_stats (w->o, &st);
    staged += st.staged_writes;
    fssnap_origin_close (w->o);
    rec_rebuild (w->rec, h->dir, &w->rng);
    if (w->rec->trace)
      fflush (w->rec->trace);

    oo.io = NULL;
    struct fssnap_origin *o;
    assert_int_equal (fssnap_origin_open (&oo, &o), 0);
    check_after_crash (w, o, seed);
    if (w->rec->trace) {
      fclose (w->rec->trace);
      unlink (tpath);
    }
    recovered_snaps += fssnap_snapshot_list (o, NULL, 0);
    fssnap_origin_close (o);

    for (int i = 0; i < w->nsnaps; i++)
      free (w->snaps[i].image);
    rec_free (w->rec);
    free (w);
    harness_free (h);
  }
  printf ("power loss: %u crash points checked, %llu snapshots recovered "
          "and verified, %llu writes staged\n", points, recovered_snaps,
          staged);
}

/* ---- Clones ------------------------------------------------------------- */

struct crun {
  uint64_t rng;
  struct recorder *rec;
  struct fssnap_clone *c;
  unsigned char model[SIZE];
  unsigned char flushed[SIZE];          /* as of the last acked flush */
  bool dirty[SIZE];                     /* written since that flush */
  unsigned cut_us;
};

static void
crun_write (struct crun *w, bool zero)
{
  uint64_t off = rng_next (&w->rng) % SIZE;
  uint64_t len = 1 + rng_next (&w->rng) % (3 * CHUNK);
  if (len > SIZE - off)
    len = SIZE - off;
  unsigned char buf[3 * CHUNK];
  for (uint64_t i = 0; i < len; i++)
    buf[i] = zero ? 0 : (unsigned char) rng_next (&w->rng);
  memset (w->dirty + off, 1, len);      /* before: it may land at any time */
  int r = zero ? fssnap_clone_zero (w->c, len, off, 0)
               : fssnap_clone_write (w->c, buf, len, off, 0);
  assert_int_equal (r, 0);
  memcpy (w->model + off, buf, len);
}

static void
crun_flush (struct crun *w)
{
  unsigned char copy[SIZE];
  memcpy (copy, w->model, SIZE);
  assert_int_equal (fssnap_clone_flush (w->c), 0);
  if (rec_still_recording (w->rec)) {
    memcpy (w->flushed, copy, SIZE);
    memset (w->dirty, 0, SIZE);
  }
}

/* Clone 0 of the rebuilt state against the model. */
static void
check_clone_after_crash (struct crun *w, struct fssnap_origin *o,
                         const char *dir, const char *base, uint64_t seed)
{
  struct fssnap_clones *set;
  struct fssnap_clone *c;
  int r;

  setenv ("FSSNAP_TEST_BOOT_ID", "0123456789abcdef", 1);
  assert_int_equal (fssnap_clones_open (o, dir, harness_quiet_log,
                                        NULL, &set), 0);
  unsetenv ("FSSNAP_TEST_BOOT_ID");
  if (fssnap_clone_get (set, 0, &c) < 0)
    fail_msg ("seed %llu: the clone was lost", (unsigned long long) seed);
  unsigned char *img = malloc (SIZE);
  assert_int_equal (fssnap_clone_read (c, img, SIZE, 0), 0);
  for (size_t i = 0; i < SIZE; i++)
    if (!w->dirty[i] && img[i] != w->flushed[i])
      fail_msg ("seed %llu: clone byte %zu lost a flushed write (or reads "
                "what was never written)", (unsigned long long) seed, i);
  char *snap = harness_read_all (o, 0, &r);
  assert_int_equal (r, 0);
  if (memcmp (snap, base, SIZE) != 0)
    fail_msg ("seed %llu: the clone's base snapshot changed",
              (unsigned long long) seed);
  free (snap);
  free (img);
  fssnap_clone_put (c);
  fssnap_clones_close (set);
}

static void
test_clone_power_loss (void **state)
{
  (void) state;
  unsigned points = crash_points ();
  for (unsigned k = 0; k < points; k++) {
    uint64_t seed = 50000 + k;
    struct harness *h = harness_new (SIZE);
    struct crun *w = calloc (1, sizeof *w);
    struct fssnap_clones *set;
    struct fssnap_origin *o;
    unsigned snap, num;
    char err[256];
    int r;
    w->rng = seed * 0x9E3779B97F4A7C15ull | 1;
    w->rec = rec_new (h);
    struct fssnap_origin_opts oo = {
      .path = h->origin_path, .state_dir = h->dir, .chunksize = CHUNK,
      .max_mem = 8 * CHUNK, .io = &w->rec->io, .log = harness_quiet_log,
    };
    assert_int_equal (fssnap_origin_open (&oo, &o), 0);
    struct fssnap_create_opts co = { 0 };
    assert_int_equal (fssnap_snapshot_create (o, &co, &snap, err,
                                              sizeof err), 0);
    char *base = harness_read_all (o, (int) snap, &r);
    assert_int_equal (r, 0);
    memcpy (w->model, base, SIZE);
    memcpy (w->flushed, base, SIZE);
    assert_int_equal (fssnap_clones_open (o, h->dir, harness_quiet_log, NULL,
                                          &set), 0);
    assert_int_equal (fssnap_clones_create (set, snap, &num, err,
                                            sizeof err), 0);
    assert_int_equal (fssnap_clone_get (set, num, &w->c), 0);
    w->cut_us = rng_next (&w->rng) % (2000 + k % 40 * 500);
    struct cut_timer t;
    cut_timer_start (&t, w->rec, w->cut_us);
    while (rec_still_recording (w->rec)) {
      unsigned p = rng_next (&w->rng) % 100;
      if (p < 70) crun_write (w, false);
      else if (p < 80) crun_write (w, true);
      else crun_flush (w);
    }
    cut_timer_join (&t);
    fssnap_clone_put (w->c);
    fssnap_clones_close (set);
    fssnap_origin_close (o);
    rec_rebuild (w->rec, h->dir, &w->rng);

    oo.io = NULL;
    assert_int_equal (fssnap_origin_open (&oo, &o), 0);
    check_clone_after_crash (w, o, h->dir, base, seed);
    fssnap_origin_close (o);
    free (base);
    rec_free (w->rec);
    free (w);
    harness_free (h);
  }
  printf ("clone power loss: %u crash points checked\n", points);
}

/* ---- Rollback ----------------------------------------------------------- */

struct rbrun {
  uint64_t rng;
  struct recorder *rec;
  struct fssnap_origin *o;
  unsigned char model[SIZE];
  unsigned nums[2];                     /* A (the target), then B */
  char uuids[2][FSSNAP_UUID_STRLEN];
  char *images[2];
  unsigned cut_us;
};

/* A few random writes over the volume, kept in the model. */
static void
rbrun_scribble (struct rbrun *w, int writes)
{
  unsigned char buf[3 * CHUNK];
  for (int k = 0; k < writes; k++) {
    uint64_t off = rng_next (&w->rng) % SIZE;
    uint64_t len = 1 + rng_next (&w->rng) % (3 * CHUNK);
    if (len > SIZE - off)
      len = SIZE - off;
    bool zero = rng_next (&w->rng) % 5 == 0;
    for (uint64_t i = 0; i < len; i++)
      buf[i] = zero ? 0 : (unsigned char) rng_next (&w->rng);
    int r = zero ? fssnap_origin_zero (w->o, len, off, 0)
                 : fssnap_origin_write (w->o, buf, len, off, 0);
    assert_int_equal (r, 0);
    memcpy (w->model + off, buf, len);
  }
}

/* Snapshot i of the run, from the model as it is now. */
static void
rbrun_snapshot (struct rbrun *w, int i)
{
  struct fssnap_create_opts opts = { 0 };
  struct fssnap_snapshot_info info;
  char err[256];
  assert_int_equal (fssnap_snapshot_create (w->o, &opts, &w->nums[i], err,
                                            sizeof err), 0);
  assert_int_equal (fssnap_snapshot_info (w->o, w->nums[i], &info), 0);
  memcpy (w->uuids[i], info.uuid, sizeof w->uuids[i]);
  w->images[i] = malloc (SIZE);
  memcpy (w->images[i], w->model, SIZE);
}

/* Both snapshots back, idle, and exact; the volume reads as want (NULL:
 * not checked).
 */
static void
rbrun_check (struct rbrun *w, struct fssnap_origin *o, const char *want,
             const char *what, uint64_t seed)
{
  for (int i = 0; i < 2; i++) {
    struct fssnap_snapshot_info info;
    int r;
    if (fssnap_snapshot_info (o, w->nums[i], &info) < 0
        || strcmp (info.uuid, w->uuids[i]) != 0)
      fail_msg ("seed %llu: %s: snapshot %u was lost",
                (unsigned long long) seed, what, w->nums[i]);
    if (info.state != FSSNAP_STATE_IDLE)
      fail_msg ("seed %llu: %s: snapshot %u is %s: %s",
                (unsigned long long) seed, what, w->nums[i],
                fssnap_state_name (info.state), info.reason);
    char *got = harness_read_all (o, (int) w->nums[i], &r);
    assert_int_equal (r, 0);
    if (memcmp (got, w->images[i], SIZE) != 0)
      fail_msg ("seed %llu: %s: snapshot %u differs from its creation image",
                (unsigned long long) seed, what, w->nums[i]);
    free (got);
  }
  if (!want)
    return;
  unsigned char *img = malloc (SIZE);
  assert_int_equal (fssnap_origin_read (o, img, SIZE, 0), 0);
  if (memcmp (img, want, SIZE) != 0)
    fail_msg ("seed %llu: %s: the volume is neither as before the rollback "
              "nor as its target", (unsigned long long) seed, what);
  free (img);
}

/* After the cut: with the intent recorded, running the rollback again
 * ends it; without it, the volume is as before the rollback (it never
 * began) or, with the record of a finished one, as the target.  Returns
 * which of these it was.
 */
enum rb_outcome { RB_NOT_BEGUN, RB_RESUMED, RB_FINISHED };

static enum rb_outcome
rbrun_check_after_crash (struct rbrun *w, struct fssnap_origin *o,
                         const char *dir, const char *before, uint64_t seed)
{
  unsigned num;
  char uuid[FSSNAP_UUID_STRLEN], err[256];
  int pending = fssnap_rollback_pending (o, dir, &num, uuid);
  if (pending < 0)
    fail_msg ("seed %llu: the rollback's intent cannot be read: %s",
              (unsigned long long) seed, strerror (-pending));
  if (pending == 1) {
    if (num != w->nums[0] || strcmp (uuid, w->uuids[0]) != 0)
      fail_msg ("seed %llu: the intent names snapshot %u, not %u",
                (unsigned long long) seed, num, w->nums[0]);
    rbrun_check (w, o, NULL, "mid-way", seed);
    int r = fssnap_rollback (o, dir, num, NULL, NULL, NULL, err, sizeof err);
    if (r < 0)
      fail_msg ("seed %llu: resuming the rollback failed: %s",
                (unsigned long long) seed, err);
    rbrun_check (w, o, w->images[0], "resumed", seed);
    return RB_RESUMED;
  }
  int done = fssnap_rollback_last (o, dir, &num, uuid);
  if (done == 1 && (num != w->nums[0] || strcmp (uuid, w->uuids[0]) != 0))
    fail_msg ("seed %llu: the finished rollback names snapshot %u",
              (unsigned long long) seed, num);
  rbrun_check (w, o, done == 1 ? w->images[0] : before,
               done == 1 ? "finished" : "not begun", seed);
  return done == 1 ? RB_FINISHED : RB_NOT_BEGUN;
}

static void
test_rollback_power_loss (void **state)
{
  (void) state;
  unsigned points = crash_points (), outcomes[3] = { 0, 0, 0 };
  for (unsigned k = 0; k < points; k++) {
    uint64_t seed = 90000 + k;
    struct harness *h = harness_new (SIZE);
    struct rbrun *w = calloc (1, sizeof *w);
    char err[256];
    w->rng = seed * 0x9E3779B97F4A7C15ull | 1;
    w->rec = rec_new (h);
    memcpy (w->model, w->rec->files[0].durable, SIZE);
    struct fssnap_origin_opts oo = {
      .path = h->origin_path, .state_dir = h->dir, .chunksize = CHUNK,
      .max_mem = 8 * CHUNK, .io = &w->rec->io, .log = harness_quiet_log,
    };
    assert_int_equal (fssnap_origin_open (&oo, &w->o), 0);
    rbrun_scribble (w, 20);
    rbrun_snapshot (w, 0);
    rbrun_scribble (w, 40);
    rbrun_snapshot (w, 1);
    rbrun_scribble (w, 40);
    assert_int_equal (fssnap_origin_flush (w->o), 0);
    char *before = malloc (SIZE);
    memcpy (before, w->model, SIZE);
    if (k % 3 == 1)             /* a cut inside the rollback's writes */
      w->rec->cut_at_log_write = 1 + rng_next (&w->rng) % 60;
    else if (k % 3 == 2)
      w->rec->cut_at_origin_write = 1 + rng_next (&w->rng) % 60;
    /* the cut: early (before the intent is durable) and later */
    w->cut_us = rng_next (&w->rng) % (k % 4 ? 500 + k % 20 * 1000 : 50);
    struct cut_timer t;
    cut_timer_start (&t, w->rec, w->cut_us);
    int r = fssnap_rollback (w->o, h->dir, w->nums[0], NULL, NULL, NULL, err,
                             sizeof err);
    if (r < 0)
      fail_msg ("seed %llu: rollback: %s", (unsigned long long) seed, err);
    cut_timer_join (&t);
    fssnap_origin_close (w->o);
    rec_rebuild (w->rec, h->dir, &w->rng);

    oo.io = NULL;
    struct fssnap_origin *o;
    assert_int_equal (fssnap_origin_open (&oo, &o), 0);
    outcomes[rbrun_check_after_crash (w, o, h->dir, before, seed)]++;
    fssnap_origin_close (o);
    free (before);
    for (int i = 0; i < 2; i++)
      free (w->images[i]);
    rec_free (w->rec);
    free (w);
    harness_free (h);
  }
  printf ("rollback power loss: %u crash points checked: %u rollbacks not "
          "begun, %u resumed from their intent, %u finished\n", points,
          outcomes[RB_NOT_BEGUN], outcomes[RB_RESUMED], outcomes[RB_FINISHED]);
  assert_true (outcomes[RB_RESUMED] > 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_recorder_names_need_dir_sync),
    cmocka_unit_test (test_power_loss),
    cmocka_unit_test (test_clone_power_loss),
    cmocka_unit_test (test_rollback_power_loss),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
