/* SPDX-License-Identifier: MIT */
/*
 * Persistence: snapshots come back after the origin is closed and opened
 * again, with their numbers, contents and counters; transient ones do not;
 * a damaged metadata file, a truncated or missing store, or an origin of
 * another size disables exactly the snapshots concerned, with a reason,
 * and the others and the volume keep working.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define KiB 1024u

struct world {
  struct harness *h;
  struct fssnap_origin *o;
  char *img[3];                 /* what snapshots 0, 1, 2 must read */
  char *model;
};

static void
write_pattern (struct world *w, uint64_t off, size_t len, char fill)
{
  char *buf = malloc (len);
  memset (buf, fill, len);
  assert_int_equal (fssnap_origin_write (w->o, buf, len, off, 0), 0);
  memcpy (w->model + off, buf, len);
  free (buf);
}

/* Three snapshots with writes between them; snapshot 1 is transient. */
static struct world *
world_new (void)
{
  struct world *w = calloc (1, sizeof *w);
  w->h = harness_new (512 * KiB);
  w->o = harness_origin (w->h, 16 * KiB, 0);
  w->model = harness_image (w->h);
  struct fssnap_create_opts transient = { .transient = true };
  for (int i = 0; i < 3; i++) {
    w->img[i] = malloc (w->h->size);    /* the volume as acknowledged */
    memcpy (w->img[i], w->model, w->h->size);
    assert_int_equal (harness_snap (w->o, i == 1 ? &transient : NULL), i);
    write_pattern (w, (uint64_t) i * 100 * KiB + 777, 150 * KiB, 'a' + i);
  }
  return w;
}

static void
world_reopen (struct world *w)
{
  fssnap_origin_close (w->o);
  w->o = harness_origin (w->h, 0, 0);
}

/* Close the origin and free what w holds (not w). */
static void
world_release (struct world *w)
{
  fssnap_origin_close (w->o);
  for (int i = 0; i < 3; i++)
    free (w->img[i]);
  free (w->model);
  harness_free (w->h);
}

static void
world_free (struct world *w)
{
  world_release (w);
  free (w);
}

static void
assert_reads (struct world *w, unsigned num, const char *expect)
{
  int r;
  char *got = harness_read_all (w->o, num, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (got, expect, w->h->size);
  free (got);
}

static void
assert_disabled (struct world *w, unsigned num, const char *needle)
{
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (w->o, num, &info), 0);
  assert_int_equal (info.state, FSSNAP_STATE_DISABLED);
  if (!strstr (info.reason, needle))
    fail_msg ("reason \"%s\" lacks \"%s\"", info.reason, needle);
  struct fssnap_snapshot *s;
  assert_int_equal (fssnap_snapshot_open (w->o, num, &s), -EIO);
}

static char *
state_file (struct world *w, unsigned num, const char *ext)
{
  struct fssnap_snapshot_info info;
  static char path[512];
  assert_int_equal (fssnap_snapshot_info (w->o, num, &info), 0);
  snprintf (path, sizeof path, "%s/origin.img.snap%u.%llu.%s", w->h->dir, num,
            (unsigned long long) info.seq, ext);
  return path;
}

static void
test_restart_keeps_snapshots (void **state)
{
  (void) state;
  struct world *w = world_new ();
  struct fssnap_snapshot_info before[3], after;
  for (int i = 0; i < 3; i++)
    assert_int_equal (fssnap_snapshot_info (w->o, i, &before[i]), 0);
  world_reopen (w);
  /* the chunk size comes back from the snapshots, not the default */
  assert_int_equal (fssnap_origin_chunksize (w->o), 16 * KiB);
  unsigned nums[4];
  assert_int_equal (fssnap_snapshot_list (w->o, nums, 4), 2);
  assert_true (nums[0] == 0 && nums[1] == 2);   /* transient 1 is gone */
  for (int i = 0; i < 3; i += 2) {
    assert_reads (w, i, w->img[i]);
    assert_int_equal (fssnap_snapshot_info (w->o, i, &after), 0);
    assert_string_equal (after.uuid, before[i].uuid);
    assert_int_equal (after.seq, before[i].seq);
    assert_int_equal (after.create_time, before[i].create_time);
    assert_int_equal (after.candidate_chunks, before[i].candidate_chunks);
    assert_int_equal (after.preserved_chunks, before[i].preserved_chunks);
    assert_int_equal (after.owned_chunks, before[i].owned_chunks);
    assert_string_equal (after.backing_path, before[i].backing_path);
    assert_int_equal (after.state, FSSNAP_STATE_IDLE);
  }
  /* snapshot 0 still reads copies the transient one owned: it is kept */
  struct fssnap_stats st;
  fssnap_origin_stats (w->o, &st);
  assert_int_equal (st.retained, 1);
  /* copy-on-write goes on after the restart, with new numbers reused */
  write_pattern (w, 0, 512 * KiB, 'z');
  assert_reads (w, 0, w->img[0]);
  assert_reads (w, 2, w->img[2]);
  char *now = malloc (w->h->size);      /* the volume as acknowledged */
  memcpy (now, w->model, w->h->size);
  assert_int_equal (harness_snap (w->o, NULL), 1);
  write_pattern (w, 5, 100, 'y');
  assert_reads (w, 1, now);
  world_reopen (w);
  assert_reads (w, 0, w->img[0]);
  assert_reads (w, 1, now);
  assert_reads (w, 2, w->img[2]);
  free (now);
  world_free (w);
}

static void
test_delete_survives_restart (void **state)
{
  (void) state;
  struct world *w = world_new ();
  assert_int_equal (fssnap_snapshot_delete (w->o, 2), 0);
  world_reopen (w);
  assert_int_equal (fssnap_snapshot_list (w->o, NULL, 0), 1);
  assert_reads (w, 0, w->img[0]);
  assert_int_equal (fssnap_snapshot_delete (w->o, 0), 0);
  world_reopen (w);
  assert_int_equal (fssnap_snapshot_list (w->o, NULL, 0), 0);
  struct fssnap_stats st;
  fssnap_origin_stats (w->o, &st);
  assert_int_equal (st.retained, 0);
  /* every file is gone: only the origin is left */
  char cmd[200];
  snprintf (cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", w->h->dir);
  assert_int_equal (system (cmd), 0);
  world_free (w);
}

static void
flip_byte (const char *path, off_t off)
{
  int fd = open (path, O_RDWR);
  unsigned char b;
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, &b, 1, off), 1);
  b ^= 0x10;
  assert_int_equal (pwrite (fd, &b, 1, off), 1);
  close (fd);
}

static void
test_damaged_bitmap_disables_one (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 0, "meta"));
  world_reopen (w);                     /* 1 is gone; 0 and 2 are back */
  fssnap_origin_close (w->o);
  flip_byte (path, 8192 + 1 * 512 + 100);   /* map O, block 0 */
  w->o = harness_origin (w->h, 0, 0);
  /* 0 is the oldest: nothing reads its copies, so only it is disabled */
  assert_disabled (w, 0, "block 0 of map O damaged");
  assert_reads (w, 2, w->img[2]);
  write_pattern (w, 1000, 300 * KiB, 'q');
  assert_reads (w, 2, w->img[2]);
  assert_int_equal (fssnap_origin_flush (w->o), 0);  /* staged: to the file */
  char *img = harness_image (w->h);
  assert_memory_equal (img, w->model, w->h->size);
  free (img);
  /* a disabled snapshot can be deleted, files and all */
  assert_int_equal (fssnap_snapshot_delete (w->o, 0), 0);
  struct stat st;
  assert_int_equal (stat (path, &st), -1);
  world_free (w);
}

static void
test_damaged_owner_disables_dependents (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 2, "meta"));
  fssnap_origin_close (w->o);
  flip_byte (path, 8192 + 1 * 512 + 200);   /* map O, block 0 */
  w->o = harness_origin (w->h, 0, 0);
  assert_disabled (w, 2, "block 0 of map O damaged");
  /* 0 reads copies 2 owns (the writes after 2 copied once for both) */
  assert_disabled (w, 0, "snapshot 2, newer than it, cannot be trusted");
  world_free (w);
}

static void
test_damaged_header_disables (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 0, "meta"));
  fssnap_origin_close (w->o);
  flip_byte (path, 4096 + 40);          /* slot 1: the only header */
  w->o = harness_origin (w->h, 0, 0);
  assert_disabled (w, 0, "header damaged");
  /* 2 is newer: it never needs 0's copies */
  assert_reads (w, 2, w->img[2]);
  world_free (w);
}

static void
test_truncated_store_disables_dependents (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 2, "cow"));
  fssnap_origin_close (w->o);
  assert_int_equal (truncate (path, 16 * KiB), 0);
  w->o = harness_origin (w->h, 0, 0);
  assert_disabled (w, 2, "truncated");
  /* 0 read copies owned by 2 (made after 2 was taken): it cannot be
   * trusted either, and says why */
  assert_disabled (w, 0, "newer than it, cannot be trusted");
  char *img = harness_image (w->h);
  assert_memory_equal (img, w->model, w->h->size);
  free (img);
  world_free (w);
}

/* A store without this version's header (fssnap 0.1 kept chunk 0's copy
 * at offset 0) cannot be read: its snapshot is offline with the reason,
 * and so is the older one that reads its copies; nothing is rewritten.
 */
static void
test_old_store_layout_offline (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 2, "cow"));
  fssnap_origin_close (w->o);
  flip_byte (path, 0);                  /* the magic */
  struct stat before, after;
  assert_int_equal (stat (path, &before), 0);
  w->o = harness_origin (w->h, 0, 0);
  struct fssnap_snapshot_info info;
  for (unsigned num = 0; num <= 2; num += 2) {
    assert_int_equal (fssnap_snapshot_info (w->o, num, &info), 0);
    assert_int_equal (info.state, FSSNAP_STATE_OFFLINE);
  }
  assert_int_equal (fssnap_snapshot_info (w->o, 2, &info), 0);
  assert_non_null (strstr (info.reason, "sparse layout"));
  assert_int_equal (stat (path, &after), 0);
  assert_true (before.st_size == after.st_size
               && before.st_mtim.tv_sec == after.st_mtim.tv_sec
               && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
  world_free (w);
}

static void
test_missing_store (void **state)
{
  (void) state;
  struct world *w = world_new ();
  char path[512];
  snprintf (path, sizeof path, "%s", state_file (w, 0, "cow"));
  fssnap_origin_close (w->o);
  assert_int_equal (unlink (path), 0);
  w->o = harness_origin (w->h, 0, 0);
  assert_disabled (w, 0, "missing");
  assert_reads (w, 2, w->img[2]);
  world_free (w);
}

static void
test_origin_size_changed (void **state)
{
  (void) state;
  struct world *w = world_new ();
  fssnap_origin_close (w->o);
  assert_int_equal (truncate (w->h->origin_path, w->h->size + 4096), 0);
  w->o = harness_origin (w->h, 0, 0);
  assert_disabled (w, 0, "size changed");
  assert_disabled (w, 2, "size changed");
  /* the volume still works, and a new snapshot takes a free number */
  char buf[10] = "volume ok";
  assert_int_equal (fssnap_origin_write (w->o, buf, 10, w->h->size, 0), 0);
  assert_int_equal (harness_snap (w->o, NULL), 1);
  world_free (w);
}

static void
test_needs_state_dir_or_transient (void **state)
{
  (void) state;
  struct harness *h = harness_new (64 * KiB);
  struct fssnap_origin_opts oo = { .path = h->origin_path, .io = &h->io };
  struct fssnap_origin *o;
  assert_int_equal (fssnap_origin_open (&oo, &o), 0);
  struct fssnap_create_opts opts = { .backing_store = h->dir };
  unsigned num;
  char err[256];
  assert_int_equal (fssnap_snapshot_create (o, &opts, &num, err, sizeof err),
                    -EINVAL);
  assert_non_null (strstr (err, "needs a state directory"));
  opts.transient = true;
  assert_int_equal (fssnap_snapshot_create (o, &opts, &num, err, sizeof err),
                    0);
  fssnap_origin_close (o);
  /* unlink is refused next to a persistent snapshot */
  o = harness_origin (h, 0, 0);
  harness_snap (o, NULL);
  struct fssnap_create_opts unl = { .unlink = true };
  assert_int_equal (fssnap_snapshot_create (o, &unl, &num, err, sizeof err),
                    -EINVAL);
  assert_non_null (strstr (err, "unlink"));
  fssnap_origin_close (o);
  harness_free (h);
}

static void
assert_changes_cover (struct world *w, int a, int b, const char *ia,
                      const char *ib)
{
  int r;
  int64_t missed = harness_changes_missed (w->o, a, b, ia, ib, &r);
  assert_int_equal (r, 0);
  assert_int_equal (missed, -1);
}

static void
test_changes_across_restart (void **state)
{
  (void) state;
  struct world *w = world_new ();       /* 0, transient 1, 2; writes after */
  assert_changes_cover (w, 0, 2, w->img[0], w->img[2]);
  assert_changes_cover (w, 2, FSSNAP_VOLUME, w->img[2], w->model);
  world_reopen (w);
  /* the writes since 2 are still known exactly */
  assert_changes_cover (w, 2, FSSNAP_VOLUME, w->img[2], w->model);
  /* transient 1 is gone with its map: 0..2 cannot be answered */
  char err[256];
  struct harness_changes hc = { 16 * KiB, calloc (64, sizeof (bool)) };
  assert_int_equal (fssnap_changes (w->o, 0, 2, 0, w->h->size,
                                    harness_changes_cb, &hc, err, sizeof err),
                    -ESTALE);
  assert_non_null (strstr (err, "cannot be trusted"));
  free (hc.changed);
  /* a new snapshot starts a trusted chain again */
  char *img3 = harness_image (w->h);
  assert_int_equal (harness_snap (w->o, NULL), 1);
  write_pattern (w, 5000, 20 * KiB, 'r');
  assert_changes_cover (w, 2, 1, w->img[2], img3);
  assert_changes_cover (w, 1, FSSNAP_VOLUME, img3, w->model);
  world_reopen (w);
  assert_changes_cover (w, 1, FSSNAP_VOLUME, img3, w->model);
  free (img3);
  world_free (w);
}

static void
test_changes_after_middle_delete (void **state)
{
  (void) state;
  struct harness *h = harness_new (512 * KiB);
  struct world w = { .h = h, .o = harness_origin (h, 16 * KiB, 0) };
  w.model = harness_image (h);
  for (int i = 0; i < 3; i++) {
    w.img[i] = harness_image (h);
    assert_int_equal (harness_snap (w.o, NULL), i);
    write_pattern (&w, (uint64_t) i * 150 * KiB + 99, 40 * KiB, 'k' + i);
  }
  size_t changed_bytes = 0;
  struct harness_changes hc = { 16 * KiB, calloc (32, sizeof (bool)) };
  assert_int_equal (fssnap_changes (w.o, 0, 1, 0, h->size, harness_changes_cb,
                                    &hc, NULL, 0), 0);
  for (int c = 0; c < 32; c++)
    changed_bytes += hc.changed[c] * 16 * KiB;
  free (hc.changed);
  assert_true (changed_bytes <= 4 * 16 * KiB);  /* only what was written */
  assert_int_equal (fssnap_snapshot_delete (w.o, 1), 0);
  assert_changes_cover (&w, 0, 2, w.img[0], w.img[2]);
  world_reopen (&w);
  assert_changes_cover (&w, 0, 2, w.img[0], w.img[2]);
  assert_changes_cover (&w, 0, FSSNAP_VOLUME, w.img[0], w.model);
  assert_int_equal (fssnap_changes (w.o, 1, 2, 0, h->size, harness_changes_cb,
                                    &hc, NULL, 0), -ENOENT);
  world_release (&w);
}

struct merge_run {
  struct world *w;
  unsigned num;                 /* the snapshot to delete */
  uint64_t off;                 /* where to write */
  int r;
  _Atomic bool done;
};

static void *
merge_delete (void *arg)
{
  struct merge_run *m = arg;
  m->r = fssnap_snapshot_delete (m->w->o, m->num);
  atomic_store (&m->done, true);
  return NULL;
}

static void *
merge_write (void *arg)
{
  struct merge_run *m = arg;
  write_pattern (m->w, m->off, 4 * KiB, 'w');
  atomic_store (&m->done, true);
  return NULL;
}

/* Whether flag comes up within 10 s. */
static bool
merge_wait (_Atomic bool *flag, _Atomic unsigned *count)
{
  for (int i = 0; i < 1000; i++) {
    if (flag ? atomic_load (flag) : atomic_load (count) > 0)
      return true;
    usleep (10000);
  }
  return false;
}

/* Delete snapshot num with the fsync of the metadata file matching held
 * stopped, and while it is, write 4 KiB at off: the write completes, then
 * the delete does.
 */
static void
merge_race (struct world *w, const char *held, unsigned num, uint64_t off)
{
  struct harness *h = w->h;
  harness_fault (h, HOP_SYNC, held, HARNESS_HOLD, 1);
  struct merge_run del = { .w = w, .num = num }, wr = { .w = w, .off = off };
  pthread_t td, tw;
  assert_int_equal (pthread_create (&td, NULL, merge_delete, &del), 0);
  assert_true (merge_wait (NULL, &h->fault.hits));     /* the merge syncs */
  assert_false (atomic_load (&del.done));
  assert_int_equal (pthread_create (&tw, NULL, merge_write, &wr), 0);
  bool written = merge_wait (&wr.done, NULL);
  harness_release (h);
  pthread_join (tw, NULL);
  pthread_join (td, NULL);
  assert_true (written);
  assert_int_equal (del.r, 0);
}

/* Freeing the oldest snapshot merges its change map into the next one's:
 * the write of the merged map holds writers no more (before, snap_lock
 * exclusive held them for its fsync).  With that fsync stopped, a write
 * to the volume completes; then the delete does, and the changes still
 * cover what was written.
 */
static void
test_merge_leaves_writers_running (void **state)
{
  (void) state;
  struct harness *h = harness_new (512 * KiB);
  struct world w = { .h = h, .o = harness_origin (h, 16 * KiB, 0) };
  w.model = harness_image (h);
  w.img[0] = harness_image (h);
  assert_int_equal (harness_snap (w.o, NULL), 0);
  write_pattern (&w, 10 * KiB, 40 * KiB, 'a');
  w.img[1] = harness_image (h);
  memcpy (w.img[1], w.model, h->size);
  assert_int_equal (harness_snap (w.o, NULL), 1);
  write_pattern (&w, 100 * KiB, 40 * KiB, 'b');
  assert_int_equal (fssnap_origin_flush (w.o), 0);
  merge_race (&w, ".snap1.1.meta", 0, 110 * KiB);
  assert_changes_cover (&w, 1, FSSNAP_VOLUME, w.img[1], w.model);
  world_reopen (&w);
  assert_changes_cover (&w, 1, FSSNAP_VOLUME, w.img[1], w.model);
  assert_reads (&w, 1, w.img[1]);
  world_release (&w);
}

/* Snapshot 0, a write, then snapshot 1, which owns no copies (else it
 * would stay while 0 is there to read them): freeing 1 merges its change
 * map into the volume's.
 */
static void
world_two_snaps (struct world *w)
{
  struct harness *h = harness_new (512 * KiB);
  *w = (struct world) { .h = h, .o = harness_origin (h, 16 * KiB, 0) };
  w->model = harness_image (h);
  w->img[0] = harness_image (h);
  assert_int_equal (harness_snap (w->o, NULL), 0);
  write_pattern (w, 10 * KiB, 40 * KiB, 'a');
  assert_int_equal (harness_snap (w->o, NULL), 1);
}

/* Freeing the newest snapshot merges its change map into the volume's,
 * written as the map A of the one before: that write holds writers no
 * more either.  A write meanwhile to a chunk neither map holds logs its
 * bit as A of the snapshot being freed, still the newest; the bit must
 * reach the older one's map before the freed one's files go, or after a
 * restart the volume's changes miss that write.
 */
static void
test_merge_into_volume_leaves_writers_running (void **state)
{
  (void) state;
  struct world w;
  world_two_snaps (&w);
  assert_int_equal (fssnap_origin_flush (w.o), 0);
  merge_race (&w, ".snap0.0.meta", 1, 200 * KiB);
  assert_int_equal (fssnap_origin_flush (w.o), 0);
  assert_changes_cover (&w, 0, FSSNAP_VOLUME, w.img[0], w.model);
  world_reopen (&w);
  assert_changes_cover (&w, 0, FSSNAP_VOLUME, w.img[0], w.model);
  assert_reads (&w, 0, w.img[0]);
  world_release (&w);
}

struct create_run {
  struct fssnap_origin *o;
  unsigned num;
  _Atomic bool done;
};

static void *
create_snap (void *arg)
{
  struct create_run *c = arg;
  c->num = harness_snap (c->o, NULL);
  atomic_store (&c->done, true);
  return NULL;
}

/* The newest snapshot is deleted while a new one is being created, after
 * the new one's metadata file took the volume's change map: the freed
 * one's changes must reach the new one's map on disk, or after a restart
 * the changes between the one before and the new one miss them.  (The
 * reap used to merge them into the volume's map, which the create then
 * handed over in memory only.)
 */
static void
test_delete_during_create_keeps_changes (void **state)
{
  (void) state;
  struct world w;
  world_two_snaps (&w);
  struct harness *h = w.h;
  w.img[2] = malloc (h->size);
  memcpy (w.img[2], w.model, h->size);
  harness_fault (h, HOP_SYNC, ".snap2.2.", HARNESS_HOLD, 1);
  struct create_run cr = { .o = w.o };
  pthread_t tc;
  assert_int_equal (pthread_create (&tc, NULL, create_snap, &cr), 0);
  assert_true (merge_wait (NULL, &h->fault.hits));     /* 2's files sync */
  assert_int_equal (fssnap_snapshot_delete (w.o, 1), 0);
  assert_false (atomic_load (&cr.done));
  harness_release (h);
  pthread_join (tc, NULL);
  assert_int_equal (cr.num, 2);
  assert_changes_cover (&w, 0, 2, w.img[0], w.img[2]);
  world_reopen (&w);
  assert_changes_cover (&w, 0, 2, w.img[0], w.img[2]);
  assert_reads (&w, 0, w.img[0]);
  assert_reads (&w, 2, w.img[2]);
  world_release (&w);
}

/* Every snapshot left reads the volume as it was at its creation, and
 * each one's changes to the next (the newest's: to the volume) are exact.
 */
static void
assert_chain (struct world *w, const unsigned *order, size_t n, char **imgs)
{
  for (size_t i = 0; i < n; i++) {
    assert_reads (w, order[i], imgs[order[i]]);
    if (i + 1 < n)
      assert_changes_cover (w, (int) order[i], (int) order[i + 1],
                            imgs[order[i]], imgs[order[i + 1]]);
    else
      assert_changes_cover (w, (int) order[i], FSSNAP_VOLUME,
                            imgs[order[i]], w->model);
  }
}

/* Creates racing deletes of older snapshots (often the newest), with or
 * without writes between rounds, then a restart: the chain of snapshots
 * left still reads and compares exactly.
 */
static void
test_create_delete_churn (void **state)
{
  (void) state;
  enum { ROUNDS = 60, KEEP = 3 };
  struct harness *h = harness_new (512 * KiB);
  struct world w = { .h = h, .o = harness_origin (h, 16 * KiB, 0) };
  w.model = harness_image (h);
  char *imgs[FSSNAP_MAX_SNAPSHOTS] = { 0 };
  unsigned order[KEEP + 1];
  size_t n = 0;
  unsigned seed = 20261204;
  for (int round = 0; round < ROUNDS; round++) {
    /* Without writes since it, the newest owns no copies and is freed at
     * once when deleted (its changes merged into the volume's).
     */
    for (int k = rand_r (&seed) % 2 ? 3 : 0; k > 0; k--)
      write_pattern (&w, rand_r (&seed) % (h->size - 8 * KiB), 8 * KiB,
                     (char) ('a' + round % 26));
    size_t victim = n;                  /* none */
    if (n > 0 && rand_r (&seed) % 2)
      victim = n - 1;
    else if (n >= KEEP)
      victim = (size_t) rand_r (&seed) % n;
    char *img = malloc (h->size);       /* the volume as acknowledged */
    memcpy (img, w.model, h->size);
    struct create_run cr = { .o = w.o };
    pthread_t tc;
    assert_int_equal (pthread_create (&tc, NULL, create_snap, &cr), 0);
    usleep ((useconds_t) (rand_r (&seed) % 400));   /* any phase of it */
    if (victim < n)
      assert_int_equal (fssnap_snapshot_delete (w.o, order[victim]), 0);
    pthread_join (tc, NULL);
    if (victim < n) {
      free (imgs[order[victim]]);
      imgs[order[victim]] = NULL;
      memmove (&order[victim], &order[victim + 1],
               (n - victim - 1) * sizeof *order);
      n--;
    }
    imgs[cr.num] = img;
    order[n++] = cr.num;
  }
  assert_chain (&w, order, n, imgs);
  world_reopen (&w);
  assert_chain (&w, order, n, imgs);
  fssnap_origin_close (w.o);
  for (size_t i = 0; i < n; i++)
    free (imgs[order[i]]);
  free (w.model);
  harness_free (h);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_restart_keeps_snapshots),
    cmocka_unit_test (test_delete_survives_restart),
    cmocka_unit_test (test_damaged_bitmap_disables_one),
    cmocka_unit_test (test_damaged_owner_disables_dependents),
    cmocka_unit_test (test_damaged_header_disables),
    cmocka_unit_test (test_truncated_store_disables_dependents),
    cmocka_unit_test (test_old_store_layout_offline),
    cmocka_unit_test (test_missing_store),
    cmocka_unit_test (test_origin_size_changed),
    cmocka_unit_test (test_needs_state_dir_or_transient),
    cmocka_unit_test (test_changes_across_restart),
    cmocka_unit_test (test_changes_after_middle_delete),
    cmocka_unit_test (test_merge_leaves_writers_running),
    cmocka_unit_test (test_merge_into_volume_leaves_writers_running),
    cmocka_unit_test (test_delete_during_create_keeps_changes),
    cmocka_unit_test (test_create_delete_churn),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
