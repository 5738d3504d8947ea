/* SPDX-License-Identifier: MIT */
/*
 * Faults never become wrong answers or lost snapshots.
 *
 * The rule (docs/design.md): a transient fault (EIO that a retry clears,
 * ENOMEM, ENOSPC, EINTR) never changes on-disk state for the worse.  At
 * start-up a snapshot whose files cannot be read is offline (listed with
 * the reason, not served, nothing rewritten) and comes back at a restart
 * that can read them; only proof of damage disables, durably.
 *
 * The first tests pin each fix down on its own; the fault matrix at the end
 * runs every I/O operation the engine performs, times each kind of fault,
 * times each phase, and checks the promises after each cell (the table it
 * prints says what each cell ended as).  A second matrix does the same for
 * a writable clone's files (create, copy-up, flush, checkpoint, reopen).
 */
#include <dirent.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "tests/engine/harness.h"
#include "common/bitmap.h"

/* Out of memory on demand: this binary is linked with
 * -Wl,--wrap=bitmap_init, so every map the engine allocates comes here;
 * call number bitmap_fail_at (counted from bitmap_calls = 0) fails.
 */
int __real_bitmap_init (struct bitmap *bm, uint64_t nbits);
static _Atomic long bitmap_calls, bitmap_fail_at = -1;

int
__wrap_bitmap_init (struct bitmap *bm, uint64_t nbits)
{
  if (atomic_fetch_add (&bitmap_calls, 1) == atomic_load (&bitmap_fail_at)) {
    bm->nbits = nbits;
    bm->words = NULL;
    return -ENOMEM;
  }
  return __real_bitmap_init (bm, nbits);
}

#define KiB 1024u
#define SIZE (256 * KiB)
#define CHUNK (16 * KiB)
#define NSNAPS 2

struct world {
  struct harness *h;
  struct fssnap_origin *o;
  char *img[NSNAPS];            /* what each snapshot must read */
  char *model;                  /* what the volume must read */
};

static void
world_write (struct world *w, uint64_t off, size_t len, char fill)
{
  char *buf = malloc (len);
  memset (buf, fill, len);
  assert_int_equal (fssnap_origin_write (w->o, buf, len, off, 0), 0);
  memcpy (w->model + off, buf, len);
  free (buf);
}

static void
silent_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque, (void) level, (void) msg;
}

/* Open the harness's origin with its state dir; NULL if that fails. */
static struct fssnap_origin *
open_origin (struct harness *h)
{
  struct fssnap_origin_opts oo = {
    .path = h->origin_path, .state_dir = h->dir, .io = &h->io,
    .log = silent_log, .writer_threads = 1,
  };
  struct fssnap_origin *o = NULL;
  int r = fssnap_origin_open (&oo, &o);
  if (r < 0)
    return NULL;
  store_set_wrap (o, store_fault_wrap, h);
  return o;
}

static struct fssnap_origin *
world_open (struct world *w)
{
  return open_origin (w->h);
}

/* Two persistent snapshots with writes between and after them. */
static struct world *
world_new (void)
{
  struct world *w = calloc (1, sizeof *w);
  w->h = harness_new (SIZE);
  w->o = harness_origin (w->h, CHUNK, 0);
  w->model = harness_image (w->h);
  for (int i = 0; i < NSNAPS; i++) {
    w->img[i] = malloc (SIZE);
    memcpy (w->img[i], w->model, SIZE);
    assert_int_equal (harness_snap (w->o, NULL), i);
    world_write (w, (uint64_t) i * 40 * KiB + 777, 50 * KiB, 'a' + i);
  }
  /* Settled: the writes are staged, their copies may still be in flight. */
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  return w;
}

static void
world_reopen (struct world *w)
{
  fssnap_origin_close (w->o);
  w->o = world_open (w);
  assert_non_null (w->o);
}

static void
world_free (struct world *w)
{
  if (w->o)
    fssnap_origin_close (w->o);
  for (int i = 0; i < NSNAPS; i++)
    free (w->img[i]);
  free (w->model);
  harness_free (w->h);
  free (w);
}

static void
assert_state (struct world *w, unsigned num, enum fssnap_state state,
              const char *needle)
{
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (w->o, num, &info), 0);
  if (info.state != state)
    fail_msg ("snapshot %u is %s (%s), not %s", num,
              fssnap_state_name (info.state), info.reason,
              fssnap_state_name (state));
  if (needle && !strstr (info.reason, needle))
    fail_msg ("reason \"%s\" lacks \"%s\"", info.reason, needle);
}

static void
assert_reads (struct world *w, unsigned num, const char *expect)
{
  int r;
  char *got = harness_read_all (w->o, num, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (got, expect, SIZE);
  free (got);
}

/* ---- The state dir as bytes: "nothing rewritten" ------------------- */

struct dir_image {
  int n;
  char *name[32];
  char *data[32];
  size_t size[32];
};

static void
dir_image_take (struct world *w, struct dir_image *d)
{
  memset (d, 0, sizeof *d);
  DIR *dir = opendir (w->h->dir);
  struct dirent *de;
  while ((de = readdir (dir)) != NULL) {
    if (de->d_name[0] == '.' || strcmp (de->d_name, "origin.img") == 0)
      continue;
    char path[512];
    snprintf (path, sizeof path, "%s/%s", w->h->dir, de->d_name);
    FILE *f = fopen (path, "rb");
    assert_non_null (f);
    fseek (f, 0, SEEK_END);
    d->size[d->n] = ftell (f);
    rewind (f);
    d->data[d->n] = malloc (d->size[d->n] + 1);
    assert_int_equal (fread (d->data[d->n], 1, d->size[d->n], f),
                      d->size[d->n]);
    fclose (f);
    d->name[d->n++] = strdup (de->d_name);
  }
  closedir (dir);
}

static void
dir_image_free (struct dir_image *d)
{
  for (int i = 0; i < d->n; i++) {
    free (d->name[i]);
    free (d->data[i]);
  }
}

static void
assert_dir_unchanged (struct world *w, struct dir_image *before)
{
  struct dir_image now;
  dir_image_take (w, &now);
  assert_int_equal (now.n, before->n);
  for (int i = 0; i < now.n; i++) {
    int j = 0;
    while (j < before->n && strcmp (before->name[j], now.name[i]) != 0)
      j++;
    if (j == before->n)
      fail_msg ("%s appeared in the state dir", now.name[i]);
    if (now.size[i] != before->size[j]
        || memcmp (now.data[i], before->data[j], now.size[i]) != 0)
      fail_msg ("%s was rewritten", now.name[i]);
  }
  dir_image_free (&now);
}

static int
ignore_extent (void *opaque, uint64_t off, uint64_t len, bool same)
{
  (void) opaque, (void) off, (void) len, (void) same;
  return 0;
}

/* ---- 1. A fault at start-up keeps snapshots offline ---------------- */

/* Reading the newest snapshot's metadata fails with err at start-up: it
 * is offline, and so is the older one (it may need copies recorded
 * there); nothing is served, deleted or rewritten; the restart after the
 * fault brings both back exact.
 */
static void
check_offline_at_start (int err)
{
  struct world *w = world_new ();
  fssnap_origin_close (w->o);
  w->o = NULL;
  struct dir_image before;
  dir_image_take (w, &before);
  harness_fault (w->h, HOP_READ, "snap1.1.meta", err, -1);
  w->o = world_open (w);
  assert_non_null (w->o);
  assert_state (w, 1, FSSNAP_STATE_OFFLINE, "offline");
  assert_state (w, 0, FSSNAP_STATE_OFFLINE, "snapshot 1, newer than it");
  struct fssnap_snapshot *s;
  assert_int_equal (fssnap_snapshot_open (w->o, 1, &s), -EAGAIN);
  assert_int_equal (fssnap_snapshot_open (w->o, 0, &s), -EAGAIN);
  assert_int_equal (fssnap_snapshot_delete (w->o, 1), -EBUSY);
  char msg[256];
  assert_int_equal (fssnap_changes (w->o, 0, FSSNAP_VOLUME, 0, SIZE,
                                    ignore_extent, NULL, msg, sizeof msg),
                    -EAGAIN);
  assert_non_null (strstr (msg, "offline"));
  fssnap_origin_close (w->o);
  w->o = NULL;
  assert_dir_unchanged (w, &before);
  dir_image_free (&before);

  harness_fault_clear (w->h);
  w->o = world_open (w);
  for (unsigned i = 0; i < NSNAPS; i++) {
    assert_state (w, i, FSSNAP_STATE_IDLE, NULL);
    assert_reads (w, i, w->img[i]);
  }
  int r;
  int64_t missed = harness_changes_missed (w->o, 0, FSSNAP_VOLUME, w->img[0],
                                           w->model, &r);
  assert_int_equal (r, 0);
  assert_int_equal (missed, -1);
  world_free (w);
}

static void
test_offline_on_eio (void **state)
{
  (void) state;
  check_offline_at_start (-EIO);
}

static void
test_offline_on_enomem (void **state)
{
  (void) state;
  check_offline_at_start (-ENOMEM);
}

/* With every snapshot offline, the chunk size they share is unknown: a
 * new snapshot is refused rather than made with another one.
 */
static void
test_create_refused_while_all_offline (void **state)
{
  (void) state;
  struct world *w = world_new ();
  harness_fault (w->h, HOP_READ, ".meta", -EIO, -1);
  fssnap_origin_close (w->o);
  struct fssnap_origin_opts oo = {
    .path = w->h->origin_path, .state_dir = w->h->dir, .io = &w->h->io,
    .chunksize = 4 * CHUNK, .log = silent_log,
  };
  assert_int_equal (fssnap_origin_open (&oo, &w->o), 0);
  assert_state (w, 0, FSSNAP_STATE_OFFLINE, NULL);
  assert_state (w, 1, FSSNAP_STATE_OFFLINE, NULL);
  char msg[256];
  unsigned num;
  struct fssnap_create_opts opts = { 0 };
  assert_int_equal (fssnap_snapshot_create (w->o, &opts, &num, msg,
                                            sizeof msg), -EAGAIN);
  assert_non_null (strstr (msg, "offline"));
  harness_fault_clear (w->h);
  world_reopen (w);
  assert_int_equal (fssnap_origin_chunksize (w->o), CHUNK);
  assert_reads (w, 1, w->img[1]);
  world_free (w);
}

/* A fault that a retry clears costs nothing. */
static void
test_eio_once_at_start (void **state)
{
  (void) state;
  struct world *w = world_new ();
  harness_fault (w->h, HOP_READ, "snap1.1.meta", -EIO, 1);
  world_reopen (w);
  assert_int_equal (atomic_load (&w->h->fault.hits), 1);
  for (unsigned i = 0; i < NSNAPS; i++) {
    assert_state (w, i, FSSNAP_STATE_IDLE, NULL);
    assert_reads (w, i, w->img[i]);
  }
  world_free (w);
}

/* The volume written while snapshots are offline: they missed copies, so
 * the restart that can read them again disables them, with the reason;
 * the volume has the write.
 */
static void
test_write_while_offline (void **state)
{
  (void) state;
  struct world *w = world_new ();
  harness_fault (w->h, HOP_READ, "snap1.1.meta", -EIO, -1);
  world_reopen (w);
  assert_state (w, 1, FSSNAP_STATE_OFFLINE, NULL);
  world_write (w, 3 * CHUNK, CHUNK, 'z');
  world_reopen (w);                     /* still offline */
  assert_state (w, 1, FSSNAP_STATE_OFFLINE, NULL);
  harness_fault_clear (w->h);
  world_reopen (w);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "missed copies");
  assert_state (w, 0, FSSNAP_STATE_DISABLED, "missed copies");
  int r;
  char *vol = harness_read_all (w->o, -1, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (vol, w->model, SIZE);
  free (vol);
  world_reopen (w);                     /* disabled for good */
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "missed copies");
  world_free (w);
}

/* ---- 2. Out of memory anywhere in recovery ------------------------- */

/* Fail each allocation of a map during start-up in turn (the snapshots
 * have a chunk size the origin does not start with): the open fails with
 * -ENOMEM, or it works with the snapshots' chunk size and each snapshot
 * exact or offline; nothing in the state dir is rewritten either way, and
 * the next open brings every snapshot back.
 */
static void
test_enomem_in_recovery (void **state)
{
  (void) state;
  struct world *w = world_new ();
  fssnap_origin_close (w->o);
  w->o = NULL;
  struct dir_image before;
  dir_image_take (w, &before);
  unsigned failed_open = 0, offline = 0;
  long k;
  for (k = 0;; k++) {
    atomic_store (&bitmap_calls, 0);
    atomic_store (&bitmap_fail_at, k);
    w->o = world_open (w);
    atomic_store (&bitmap_fail_at, -1);
    if (atomic_load (&bitmap_calls) <= k) {     /* no call left to fail */
      assert_non_null (w->o);
      break;
    }
    if (!w->o) {
      failed_open++;
      continue;
    }
    assert_int_equal (fssnap_origin_chunksize (w->o), CHUNK);
    for (unsigned i = 0; i < NSNAPS; i++) {
      struct fssnap_snapshot_info info;
      assert_int_equal (fssnap_snapshot_info (w->o, i, &info), 0);
      if (info.state == FSSNAP_STATE_OFFLINE)
        offline++;
      else
        assert_reads (w, i, w->img[i]);
    }
    fssnap_origin_close (w->o);
    w->o = NULL;
    assert_dir_unchanged (w, &before);
  }
  for (unsigned i = 0; i < NSNAPS; i++) {
    assert_state (w, i, FSSNAP_STATE_IDLE, NULL);
    assert_reads (w, i, w->img[i]);
  }
  printf ("out of memory at each of %ld allocations of start-up: %u opens "
          "refused, %u snapshots offline, none wrong\n", k, failed_open,
          offline);
  assert_true (failed_open > 0);
  dir_image_free (&before);
  world_free (w);
}

/* ---- 3. Disabling is durable before anything relies on it --------- */

/* A copy fails (the store is full) and so does recording the snapshot's
 * new state in its metadata file: the write still completes, and a
 * durable record (a directory sync after it) makes the restart disable
 * the snapshot instead of serving it.
 */
static void
test_disable_durable_when_meta_fails (void **state)
{
  (void) state;
  struct world *w = world_new ();
  world_write (w, 8 * CHUNK, CHUNK, 'q');  /* snapshot 1 now owns chunk 8 */
  harness_fault (w->h, HOP_WRITE, "snap1.1.meta", -EIO, -1);
  atomic_store (&w->h->store_errno, ENOSPC);
  atomic_store (&w->h->store_budget, 0);
  unsigned syncs = atomic_load (&w->h->dir_syncs);
  world_write (w, 10 * CHUNK, CHUNK, 'r');
  /* Staged: the copy fails after the write returned; a flush waits. */
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, NULL);
  assert_true (atomic_load (&w->h->fault.hits) > 0);
  assert_true (atomic_load (&w->h->dir_syncs) > syncs);
  harness_fault_clear (w->h);
  atomic_store (&w->h->store_errno, 0);
  world_reopen (w);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "missed copies");
  world_reopen (w);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "missed copies");
  world_free (w);
}

/* ---- 4. A change map that cannot be merged ------------------------- */

/* Deleting the middle one of three snapshots merges its change map into
 * the newest one's; when neither that map nor the record that it is lost
 * can be written, the middle snapshot's files stay, so that after a
 * restart the comparison of the other two is still exact (or refused).
 */
static void
test_lost_change_map_merge (void **state)
{
  (void) state;
  struct world *w = calloc (1, sizeof *w);
  w->h = harness_new (SIZE);
  w->o = harness_origin (w->h, CHUNK, 0);
  w->model = harness_image (w->h);
  w->img[0] = harness_image (w->h);
  assert_int_equal (harness_snap (w->o, NULL), 0);
  world_write (w, 777, 50 * KiB, 'm');  /* copies owned by 0 */
  w->img[1] = harness_image (w->h);
  assert_int_equal (harness_snap (w->o, NULL), 1);
  char *img2 = harness_image (w->h);    /* 1 owns nothing */
  assert_int_equal (harness_snap (w->o, NULL), 2);
  world_write (w, 12 * CHUNK, CHUNK, 'n');
  assert_int_equal (fssnap_origin_flush (w->o), 0);     /* staged: settle */
  harness_fault (w->h, HOP_WRITE, "snap2.2.meta", -EIO, -1);
  assert_int_equal (fssnap_snapshot_delete (w->o, 1), 0);
  assert_true (atomic_load (&w->h->fault.hits) > 0);
  int r;
  int64_t missed = harness_changes_missed (w->o, 0, 2, w->img[0], img2, &r);
  assert_true (r == -ESTALE || (r == 0 && missed == -1));
  harness_fault_clear (w->h);
  world_reopen (w);
  missed = harness_changes_missed (w->o, 0, 2, w->img[0], img2, &r);
  if (!(r == -ESTALE || (r == 0 && missed == -1)))
    fail_msg ("after a restart, the changes from 0 to 2 miss chunk %lld "
              "(error %d)", (long long) missed, r);
  missed = harness_changes_missed (w->o, 0, FSSNAP_VOLUME, w->img[0],
                                   w->model, &r);
  assert_true (r == -ESTALE || (r == 0 && missed == -1));
  free (img2);
  world_free (w);
}

/* A copy that fails for the newer of two snapshots only disables that one;
 * after a restart its store is shorter than its owner map says (the copy
 * is missing), which must not take the older snapshot down with it.
 */
static void
test_failed_copy_spares_older_after_restart (void **state)
{
  (void) state;
  struct world *w = calloc (1, sizeof *w);
  w->h = harness_new (SIZE);
  w->o = harness_origin (w->h, CHUNK, 0);
  w->model = harness_image (w->h);
  w->img[0] = harness_image (w->h);
  assert_int_equal (harness_snap (w->o, NULL), 0);
  world_write (w, 14 * CHUNK, CHUNK, 'p');      /* 0 owns chunk 14 */
  w->img[1] = harness_image (w->h);
  assert_int_equal (harness_snap (w->o, NULL), 1);
  world_write (w, 2 * CHUNK, CHUNK, 'q');       /* 1 owns chunk 2 */
  assert_int_equal (fssnap_origin_flush (w->o), 0);     /* staged: settle */
  atomic_store (&w->h->store_errno, ENOSPC);
  atomic_store (&w->h->store_budget, 0);
  world_write (w, 14 * CHUNK, CHUNK, 'r');      /* only 1 needs it */
  assert_int_equal (fssnap_origin_flush (w->o), 0);     /* staged: settle */
  atomic_store (&w->h->store_errno, 0);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "No space left");
  assert_state (w, 0, FSSNAP_STATE_IDLE, NULL);
  world_reopen (w);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "No space left");
  assert_state (w, 0, FSSNAP_STATE_IDLE, NULL);
  assert_reads (w, 0, w->img[0]);
  world_free (w);
}

/* ---- 5. The end of a file is an error, not zeros -------------------- */

/* A store truncated behind fssnapd's back, or an origin that shrank,
 * read -EIO, never zeros; a truncated metadata file is damage.
 */
static void
test_eof_is_an_error (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s/origin.img.snap1.1.cow", w->h->dir);
  assert_int_equal (truncate (path, 2 * CHUNK), 0);     /* copies at 2..5 */
  struct fssnap_snapshot *s;
  char buf[CHUNK];
  assert_int_equal (fssnap_snapshot_open (w->o, 1, &s), 0);
  assert_int_equal (fssnap_snapshot_read (s, buf, CHUNK, 4 * CHUNK), -EIO);
  fssnap_snapshot_close (s);
  assert_int_equal (truncate (w->h->origin_path, SIZE - CHUNK), 0);
  assert_int_equal (fssnap_origin_read (w->o, buf, CHUNK, SIZE - CHUNK),
                    -EIO);
  assert_int_equal (fssnap_snapshot_open (w->o, 0, &s), 0);
  assert_int_equal (fssnap_snapshot_read (s, buf, CHUNK, SIZE - CHUNK), -EIO);
  fssnap_snapshot_close (s);
  fssnap_origin_close (w->o);
  assert_int_equal (truncate (w->h->origin_path, SIZE), 0);
  snprintf (path, sizeof path, "%s/origin.img.snap0.0.meta", w->h->dir);
  assert_int_equal (truncate (path, 8192 + 512), 0);
  w->o = world_open (w);
  assert_state (w, 0, FSSNAP_STATE_DISABLED, "truncated");
  world_free (w);
}

/* ---- 6. FSSNAP_ZERO_NO_HOLE keeps the range allocated --------------- */

/* An I/O layer whose zero punches a hole (as the contract allows). */
static int
punching_zero (void *opaque, int fd, off_t off, off_t len)
{
  (void) opaque;
  return fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len)
         < 0 ? -errno : 0;
}

static bool
range_has_hole (const char *path, off_t off, off_t len)
{
  int fd = open (path, O_RDONLY);
  off_t hole = lseek (fd, off, SEEK_HOLE);
  close (fd);
  return hole < off + len;
}

static void
test_zero_no_hole (void **state)
{
  (void) state;
  struct world *w = world_new ();
  fssnap_origin_close (w->o);
  w->h->io.zero = punching_zero;
  w->o = world_open (w);
  /* Each zero is flushed: a staged zero reaches the file only then. */
  assert_int_equal (fssnap_origin_zero (w->o, 2 * CHUNK, 8 * CHUNK, 0), 0);
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  if (!range_has_hole (w->h->origin_path, 8 * CHUNK, 2 * CHUNK)) {
    world_free (w);
    skip ();                            /* no holes on this file system */
  }
  assert_int_equal (fssnap_origin_zero (w->o, 2 * CHUNK, 12 * CHUNK,
                                        FSSNAP_ZERO_NO_HOLE), 0);
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  assert_false (range_has_hole (w->h->origin_path, 12 * CHUNK, 2 * CHUNK));
  memset (w->model + 8 * CHUNK, 0, 2 * CHUNK);
  memset (w->model + 12 * CHUNK, 0, 2 * CHUNK);
  int r;
  char *vol = harness_read_all (w->o, -1, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (vol, w->model, SIZE);
  free (vol);
  for (unsigned i = 0; i < NSNAPS; i++)
    assert_reads (w, i, w->img[i]);
  world_free (w);
}

/* ---- The fault matrix ------------------------------------------------ */

enum phase { PH_START, PH_CREATE, PH_COPY, PH_COMMIT, PH_STAGE, PH_DELETE,
             PH_REAP, PH_DIFF, PH_MERGE, PH_N };
static const char *const phase_name[PH_N] = {
  "start-up recovery", "create", "copy", "commit", "staging", "delete",
  "reap", "diff", "change-map merge",
};
static const char *const op_name[HOP_NOPS] = {
  "open", "read", "write", "sync", "dir sync", "rename", "unlink",
};
static const struct { const char *name; int err, times; } fault_kind[] = {
  { "EIO once", -EIO, 1 }, { "EIO always", -EIO, -1 },
  { "ENOSPC", -ENOSPC, -1 }, { "ENOMEM", -ENOMEM, -1 },
  { "short", HARNESS_SHORT, -1 },
};
#define NFAULTS (sizeof fault_kind / sizeof fault_kind[0])
#define MX_SNAPS 4

struct mx_snap {
  char uuid[FSSNAP_UUID_STRLEN];
  unsigned num;
  char *img;
  bool exists;                  /* created (acknowledged), not deleted */
  bool deleted;                 /* delete acknowledged */
  bool was_offline;
};

struct mx {
  struct harness *h;
  struct fssnap_origin *o;
  char *model;                  /* acknowledged writes */
  bool *unsure;                 /* bytes of writes that failed */
  struct mx_snap s[MX_SNAPS];
  int n;
  unsigned exact, offline, disabled, absent;    /* after the restart */
};

static int
mx_write (struct mx *w, uint64_t off, size_t len, char fill)
{
  char *buf = malloc (len);
  memset (buf, fill, len);
  int r = fssnap_origin_write (w->o, buf, len, off, 0);
  if (r == 0)
    memcpy (w->model + off, buf, len);
  else
    memset (w->unsure + off, 1, len);
  free (buf);
  return r;
}

static int
mx_create (struct mx *w)
{
  struct mx_snap *s = &w->s[w->n];
  struct fssnap_create_opts opts = { 0 };
  char err[256];
  s->img = malloc (SIZE);
  memcpy (s->img, w->model, SIZE);
  int r = fssnap_snapshot_create (w->o, &opts, &s->num, err, sizeof err);
  if (r == 0) {
    struct fssnap_snapshot_info info;
    assert_int_equal (fssnap_snapshot_info (w->o, s->num, &info), 0);
    memcpy (s->uuid, info.uuid, sizeof s->uuid);
    s->exists = true;
  }
  w->n++;
  return r;
}

/* S0, a write, S1, S2 (nothing written in between: S1 owns no copy),
 * a write: S0 owns chunks 0-3, S2 chunks 2-5.
 */
static struct mx *
mx_new (void)
{
  struct mx *w = calloc (1, sizeof *w);
  w->h = harness_new (SIZE);
  w->h->skip_syncs = true;
  w->o = open_origin (w->h);
  w->model = harness_image (w->h);
  w->unsure = calloc (SIZE, 1);
  assert_int_equal (mx_create (w), 0);
  assert_int_equal (mx_write (w, 777, 50 * KiB, 'a'), 0);
  assert_int_equal (mx_create (w), 0);
  assert_int_equal (mx_create (w), 0);
  assert_int_equal (mx_write (w, 40 * KiB + 777, 50 * KiB, 'b'), 0);
  /* Settled: the phase meets no copy or staged write still in flight. */
  assert_int_equal (fssnap_origin_flush (w->o), 0);
  return w;
}

static void
mx_free (struct mx *w)
{
  if (w->o)
    fssnap_origin_close (w->o);
  for (int i = 0; i < w->n; i++)
    free (w->s[i].img);
  free (w->model);
  free (w->unsure);
  harness_free (w->h);
  free (w);
}

static int
mx_delete (struct mx *w, int i)
{
  int r = fssnap_snapshot_delete (w->o, w->s[i].num);
  if (r == 0) {
    w->s[i].exists = false;
    w->s[i].deleted = true;
  }
  return r;
}

/* Run phase p with the fault armed (from harness_fault). */
static int
mx_run_phase (struct mx *w, enum phase p, enum harness_op op, int k)
{
  const char *match = p == PH_COPY ? ".cow" : p == PH_COMMIT ? ".meta"
                    : p == PH_START ? ".snap" : p == PH_STAGE ? ".staging"
                    : "";
  int r = 0;
  if (p == PH_STAGE) {          /* the log is made afresh by the write */
    fssnap_origin_close (w->o);
    w->o = open_origin (w->h);
    assert_non_null (w->o);
  }
  if (p == PH_START) {
    fssnap_origin_close (w->o);
    w->o = NULL;
  }
  harness_fault (w->h, op, match, fault_kind[k].err, fault_kind[k].times);
  switch (p) {
  case PH_START:
    w->o = open_origin (w->h);
    r = w->o ? 0 : -EIO;
    break;
  case PH_CREATE: r = mx_create (w); break;
  case PH_COPY:                 /* a write, then a flush: the write is */
  case PH_COMMIT:               /* staged, its copy and commit follow */
  case PH_STAGE:
    r = mx_write (w, 8 * CHUNK + 100, CHUNK, 'c');
    if (r == 0)
      r = fssnap_origin_flush (w->o);
    break;
  case PH_DELETE: r = mx_delete (w, 2); break;   /* retained: S0 reads it */
  case PH_REAP: r = mx_delete (w, 0); break;     /* the oldest: freed */
  case PH_DIFF: {
    char err[256];
    r = fssnap_changes (w->o, 0, FSSNAP_VOLUME, 0, SIZE, ignore_extent, NULL,
                        err, sizeof err);
    break;
  }
  case PH_MERGE: r = mx_delete (w, 1); break;    /* D merges into S2 */
  default: break;
  }
  harness_fault_clear (w->h);
  return r;
}

static struct mx_snap *
mx_find (struct mx *w, const struct fssnap_snapshot_info *info)
{
  for (int i = 0; i < w->n; i++)
    if (strcmp (w->s[i].uuid, info->uuid) == 0)
      return &w->s[i];
  for (int i = 0; i < w->n; i++)          /* offline: its UUID is unknown */
    if (w->s[i].exists && w->s[i].num == info->number
        && info->state == FSSNAP_STATE_OFFLINE)
      return &w->s[i];
  return NULL;
}

/* Check the promises; states[i] gets what snapshot i is: x exact,
 * o offline, d disabled, - not there.  after: this is after a restart
 * with the fault gone.
 */
static void
mx_check (struct mx *w, char *states, bool after, const char *cell)
{
  int r;
  char *vol = harness_read_all (w->o, -1, &r);
  assert_int_equal (r, 0);
  for (size_t i = 0; i < SIZE; i++)
    if (!w->unsure[i] && vol[i] != w->model[i])
      fail_msg ("%s: the volume lost an acknowledged write at %zu", cell, i);
  for (int i = 0; i < w->n; i++)
    states[i] = '-';
  states[w->n] = '\0';
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  int n = fssnap_snapshot_list (w->o, nums, FSSNAP_MAX_SNAPSHOTS);
  for (int j = 0; j < n; j++) {
    struct fssnap_snapshot_info info;
    assert_int_equal (fssnap_snapshot_info (w->o, nums[j], &info), 0);
    struct mx_snap *s = mx_find (w, &info);
    if (!s)
      fail_msg ("%s: unknown snapshot %u is listed", cell, nums[j]);
    char *st = &states[s - w->s];
    switch (info.state) {
    case FSSNAP_STATE_IDLE:
      if (s->deleted)
        fail_msg ("%s: deleted snapshot %u is back", cell, s->num);
      {
        char *got = harness_read_all (w->o, nums[j], &r);
        if (r != 0 || memcmp (got, s->img, SIZE) != 0)
          fail_msg ("%s: snapshot %u is wrong (read %d)", cell, s->num, r);
        free (got);
        int64_t missed = harness_changes_missed (w->o, nums[j], FSSNAP_VOLUME,
                                                 s->img, vol, &r);
        if (!(r == -ESTALE || r == -EAGAIN || (r == 0 && missed < 0)))
          fail_msg ("%s: diff %u/volume missed chunk %lld (error %d)", cell,
                    s->num, (long long) missed, r);
      }
      *st = 'x';
      break;
    case FSSNAP_STATE_OFFLINE:
    case FSSNAP_STATE_DISABLED:
    case FSSNAP_STATE_DELETING:
      if (!info.reason[0] && info.state != FSSNAP_STATE_DELETING)
        fail_msg ("%s: snapshot %u is %s without a reason", cell, s->num,
                  fssnap_state_name (info.state));
      *st = info.state == FSSNAP_STATE_OFFLINE ? 'o'
          : info.state == FSSNAP_STATE_DISABLED ? 'd' : '-';
      break;
    default:
      fail_msg ("%s: snapshot %u is %s", cell, s->num,
                fssnap_state_name (info.state));
    }
    if (*st == 'o' && after)
      fail_msg ("%s: snapshot %u still offline with the fault gone", cell,
                s->num);
    if (*st == 'o')
      s->was_offline = true;
    else if (after && s->was_offline && *st != 'x')
      fail_msg ("%s: snapshot %u, only offline, came back %c", cell, s->num,
                *st);
  }
  for (int i = 0; i < w->n; i++)
    if (w->s[i].exists && states[i] == '-')
      fail_msg ("%s: snapshot %u was lost", cell, w->s[i].num);
  free (vol);
}

/* One cell: returns its line in the table. */
static void
mx_cell (enum phase p, enum harness_op op, int k, char *out, size_t len,
         unsigned totals[4])
{
  char cell[128], before[8], after[8];
  snprintf (cell, sizeof cell, "%s / %s / %s", phase_name[p], op_name[op],
            fault_kind[k].name);
  struct mx *w = mx_new ();
  int r = mx_run_phase (w, p, op, k);
  unsigned hits = atomic_load (&w->h->fault.hits);
  if (!w->o) {                          /* start-up refused: nothing to see */
    snprintf (before, sizeof before, "(none)");
    w->o = open_origin (w->h);
    assert_non_null (w->o);
  }
  else
    mx_check (w, before, false, cell);
  fssnap_origin_close (w->o);
  w->o = open_origin (w->h);
  assert_non_null (w->o);
  mx_check (w, after, true, cell);
  for (int i = 0; after[i]; i++)
    totals[after[i] == 'x' ? 0 : after[i] == 'd' ? 1 : after[i] == 'o' ? 2
                                                                       : 3]++;
  if (!hits)
    snprintf (out, len, "%-17s", "-");
  else
    snprintf (out, len, "%-4s %-5s>%-5s", r == 0 ? "ok" : r == -ENOSPC ? "NOSP"
              : r == -ENOMEM ? "NMEM" : r == -EIO ? "EIO" : "err", before,
              after);
  mx_free (w);
}

/* Every I/O operation x each fault x each phase: after each, the volume
 * has every acknowledged write, each snapshot is exact, offline or
 * disabled with a reason (never wrong), diff is exact or refuses, and a
 * restart with the fault gone brings back every snapshot that was only
 * offline.  Prints what each cell ended as.
 */
static void
test_fault_matrix (void **state)
{
  (void) state;
  unsigned totals[4] = { 0 }, cells = 0, hit = 0;
  printf ("fault matrix: %d phases x %d operations x %zu faults = %zu cells\n"
          "cell: what the phase returned, then each snapshot S0..S3 right "
          "after and after a restart\nwith the fault gone (x exact, o "
          "offline, d disabled, - deleted or never created);\n\"-\": the "
          "phase does no such operation; n/a: it has no short form\n", PH_N, HOP_NOPS, NFAULTS,
          (size_t) PH_N * HOP_NOPS * NFAULTS);
  for (int p = 0; p < PH_N; p++) {
    printf ("\n%-17s", phase_name[p]);
    for (size_t k = 0; k < NFAULTS; k++)
      printf (" %-17s", fault_kind[k].name);
    printf ("\n");
    for (int op = 0; op < HOP_NOPS; op++) {
      printf ("  %-15s", op_name[op]);
      for (size_t k = 0; k < NFAULTS; k++) {
        char out[64];
        cells++;
        if (fault_kind[k].err == HARNESS_SHORT && op != HOP_READ
            && op != HOP_WRITE) {
          printf (" %-17s", "n/a");
          continue;
        }
        mx_cell (p, op, k, out, sizeof out, totals);
        hit += out[0] != '-';
        printf (" %s", out);
      }
      printf ("\n");
    }
  }
  printf ("\n%u cells, %u with the operation in the phase; snapshots after "
          "the restarts: %u exact, %u disabled with a reason, %u offline, "
          "%u gone (deleted or not created); none wrong\n", cells, hit,
          totals[0], totals[1], totals[2], totals[3]);
}

/* ---- The clone fault matrix --------------------------------------------- */

enum cphase { CP_CREATE, CP_WRITE, CP_FLUSH, CP_CHECKPOINT, CP_REOPEN, CP_N };
static const char *const cphase_name[CP_N] = {
  "create", "copy-up write", "flush", "checkpoint", "reopen",
};

struct cx {
  struct harness *h;
  struct fssnap_origin *o;
  struct fssnap_clones *set;
  char *base;                   /* snapshot 0 */
  char *model;                  /* the clone: acknowledged writes */
  bool *unsure;                 /* bytes of writes that failed */
  bool exists;                  /* its create was acknowledged */
};

static int
cx_write (struct cx *w, uint64_t off, size_t len, char fill)
{
  struct fssnap_clone *c;
  char *buf = malloc (len);
  int r = fssnap_clone_get (w->set, 0, &c);
  memset (buf, fill, len);
  if (r == 0) {
    r = fssnap_clone_write (c, buf, len, off, 0);
    fssnap_clone_put (c);
  }
  if (r == 0)
    memcpy (w->model + off, buf, len);
  else
    memset (w->unsure + off, 1, len);
  free (buf);
  return r;
}

static int
cx_flush (struct cx *w)
{
  struct fssnap_clone *c;
  int r = fssnap_clone_get (w->set, 0, &c);
  if (r == 0) {
    r = fssnap_clone_flush (c);
    fssnap_clone_put (c);
  }
  return r;
}

static int
cx_create (struct cx *w)
{
  char err[256];
  unsigned k;
  int r = fssnap_clones_create (w->set, 0, &k, err, sizeof err);
  if (r == 0) {
    assert_int_equal (k, 0);
    w->exists = true;
  }
  return r;
}

static void
cx_reopen (struct cx *w)
{
  fssnap_clones_close (w->set);
  assert_int_equal (fssnap_clones_open (w->o, w->h->dir, harness_quiet_log,
                                        NULL, &w->set), 0);
}

/* Snapshot 0 of the origin; for every phase but create, clone 0 of it
 * with two flushed chunks.
 */
static struct cx *
cx_new (enum cphase p)
{
  struct cx *w = calloc (1, sizeof *w);
  struct fssnap_create_opts opts = { .chunksize = CHUNK };
  char err[256];
  unsigned num;
  int r;
  w->h = harness_new (SIZE);
  w->h->skip_syncs = true;
  w->o = open_origin (w->h);
  assert_int_equal (fssnap_snapshot_create (w->o, &opts, &num, err,
                                            sizeof err), 0);
  w->base = harness_read_all (w->o, 0, &r);
  assert_int_equal (r, 0);
  w->model = malloc (SIZE);
  memcpy (w->model, w->base, SIZE);
  w->unsure = calloc (SIZE, 1);
  assert_int_equal (fssnap_clones_open (w->o, w->h->dir, harness_quiet_log,
                                        NULL, &w->set), 0);
  if (p != CP_CREATE) {
    assert_int_equal (cx_create (w), 0);
    assert_int_equal (cx_write (w, 100, 2 * CHUNK, 'a'), 0);
    assert_int_equal (cx_flush (w), 0);
  }
  return w;
}

static int
cx_run_phase (struct cx *w, enum cphase p, enum harness_op op, int k)
{
  int r = 0;
  if (p == CP_FLUSH)                   /* one new chunk: a commit */
    assert_int_equal (cx_write (w, 5 * CHUNK + 7, 100, 'b'), 0);
  if (p == CP_CHECKPOINT)              /* the journal outgrows the map */
    assert_int_equal (cx_write (w, 4 * CHUNK + 1, 10 * CHUNK, 'c'), 0);
  if (p == CP_REOPEN)
    fssnap_clones_close (w->set);
  harness_fault (w->h, op, ".clone", fault_kind[k].err, fault_kind[k].times);
  switch (p) {
  case CP_CREATE: r = cx_create (w); break;
  case CP_WRITE: r = cx_write (w, 9 * CHUNK + 5, CHUNK, 'd'); break;
  case CP_FLUSH:
  case CP_CHECKPOINT: r = cx_flush (w); break;
  case CP_REOPEN:
    r = fssnap_clones_open (w->o, w->h->dir, harness_quiet_log, NULL,
                            &w->set);
    break;
  default: break;
  }
  harness_fault_clear (w->h);
  return r;
}

/* The promises with the fault gone, after a close and reopen of the set:
 * a clone whose create was acknowledged is there and reads as its
 * acknowledged writes; the snapshot is unchanged.  'x' or '-' (no clone).
 */
static char
cx_check (struct cx *w, const char *cell)
{
  struct fssnap_clone *c;
  int r;
  cx_reopen (w);
  char *snap = harness_read_all (w->o, 0, &r);
  if (r != 0 || memcmp (snap, w->base, SIZE) != 0)
    fail_msg ("%s: the base snapshot changed (read %d)", cell, r);
  free (snap);
  if (fssnap_clone_get (w->set, 0, &c) < 0) {
    if (w->exists)
      fail_msg ("%s: the clone was lost", cell);
    return '-';
  }
  char *got = malloc (SIZE);
  assert_int_equal (fssnap_clone_read (c, got, SIZE, 0), 0);
  fssnap_clone_put (c);
  for (size_t i = 0; i < SIZE; i++)
    if (!w->unsure[i] && got[i] != w->model[i])
      fail_msg ("%s: clone byte %zu lost an acknowledged write", cell, i);
  free (got);
  return 'x';
}

static void
test_clone_fault_matrix (void **state)
{
  (void) state;
  unsigned cells = 0, hit = 0;
  printf ("clone fault matrix: cell: what the phase returned, then the "
          "clone after a reopen with the fault gone (x exact, - none)\n");
  for (int p = 0; p < CP_N; p++) {
    printf ("\n%-17s", cphase_name[p]);
    for (size_t k = 0; k < NFAULTS; k++)
      printf (" %-10s", fault_kind[k].name);
    printf ("\n");
    for (int op = 0; op < HOP_NOPS; op++) {
      printf ("  %-15s", op_name[op]);
      for (size_t k = 0; k < NFAULTS; k++) {
        char cell[128];
        cells++;
        if (fault_kind[k].err == HARNESS_SHORT && op != HOP_READ
            && op != HOP_WRITE) {
          printf (" %-10s", "n/a");
          continue;
        }
        snprintf (cell, sizeof cell, "clone %s / %s / %s", cphase_name[p],
                  op_name[op], fault_kind[k].name);
        struct cx *w = cx_new (p);
        int r = cx_run_phase (w, p, op, k);
        unsigned hits = atomic_load (&w->h->fault.hits);
        char st = cx_check (w, cell);
        if (hits) {
          hit++;
          printf (" %-4s>%c    ", r == 0 ? "ok" : r == -ENOSPC ? "NOSP"
                  : r == -ENOMEM ? "NMEM" : r == -EIO ? "EIO" : "err", st);
        }
        else
          printf (" %-10s", "-");
        fssnap_clones_close (w->set);
        fssnap_origin_close (w->o);
        free (w->base);
        free (w->model);
        free (w->unsure);
        harness_free (w->h);
        free (w);
      }
      printf ("\n");
    }
  }
  printf ("\n%u cells, %u with the operation in the phase; no clone lost "
          "or wrong\n", cells, hit);
}

/* Proof of damage still disables (a bad checksum in a map block). */
static void
test_damage_still_disables (void **state)
{
  (void) state;
  struct world *w = world_new ();
  fssnap_origin_close (w->o);
  char path[512];
  snprintf (path, sizeof path, "%s/origin.img.snap1.1.meta", w->h->dir);
  int fd = open (path, O_RDWR);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, "XX", 2, 8192 + 100), 2);
  close (fd);
  w->o = world_open (w);
  assert_state (w, 1, FSSNAP_STATE_DISABLED, "bad checksum");
  assert_state (w, 0, FSSNAP_STATE_DISABLED, "cannot be trusted");
  world_free (w);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_offline_on_eio),
    cmocka_unit_test (test_offline_on_enomem),
    cmocka_unit_test (test_create_refused_while_all_offline),
    cmocka_unit_test (test_eio_once_at_start),
    cmocka_unit_test (test_write_while_offline),
    cmocka_unit_test (test_enomem_in_recovery),
    cmocka_unit_test (test_disable_durable_when_meta_fails),
    cmocka_unit_test (test_lost_change_map_merge),
    cmocka_unit_test (test_failed_copy_spares_older_after_restart),
    cmocka_unit_test (test_eof_is_an_error),
    cmocka_unit_test (test_zero_no_hole),
    cmocka_unit_test (test_damage_still_disables),
    cmocka_unit_test (test_fault_matrix),
    cmocka_unit_test (test_clone_fault_matrix),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
