/* SPDX-License-Identifier: MIT */
/*
 * Engine behaviour: one copy for many snapshots, the throttle, maxsize,
 * failing stores, delete while open, middle deletes, chunk size rules,
 * range checks, block-status extents and the may-wait hint.  Every test
 * checks the origin byte for byte against what was written, whatever
 * happened to snapshots.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static void
assert_snapshot_equals (struct fssnap_origin *o, unsigned num,
                        const char *expect)
{
  int r;
  char *got = harness_read_all (o, num, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (got, expect, fssnap_origin_size (o));
  free (got);
}

static void
assert_origin_equals (struct fssnap_origin *o, const char *expect)
{
  int r;
  char *got = harness_read_all (o, -1, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (got, expect, fssnap_origin_size (o));
  free (got);
}

/* Overwrite every chunk once with 'fill', keeping 'model' in step. */
static void
write_every_chunk (struct fssnap_origin *o, char *model, char fill)
{
  uint32_t cs = fssnap_origin_chunksize (o);
  uint64_t size = fssnap_origin_size (o);
  char *buf = malloc (cs);
  memset (buf, fill, cs);
  for (uint64_t off = 0; off < size; off += cs) {
    size_t n = size - off < cs ? size - off : cs;
    assert_int_equal (fssnap_origin_write (o, buf + 1, n - 1, off + 1, 0), 0);
    memset (model + off + 1, fill, n - 1);
  }
  free (buf);
}

static void
test_eight_snapshots_one_copy (void **state)
{
  (void) state;
  struct harness *h = harness_new (2 * MiB + 1000);   /* short last chunk */
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  char *before = harness_image (h);
  unsigned nums[8];
  for (int i = 0; i < 8; i++)
    nums[i] = harness_snap (o, NULL);
  char *model = harness_image (h);
  write_every_chunk (o, model, 'A');
  write_every_chunk (o, model, 'B');         /* second pass copies nothing */

  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  uint64_t nchunks = (h->size + 64 * KiB - 1) / (64 * KiB);
  assert_int_equal (st.chunks_copied, nchunks);
  assert_int_equal (st.bytes_copied, h->size);
  for (int i = 0; i < 8; i++) {
    assert_int_equal (nums[i], i);
    assert_snapshot_equals (o, nums[i], before);
    struct fssnap_snapshot_info info;
    assert_int_equal (fssnap_snapshot_info (o, nums[i], &info), 0);
    assert_int_equal (info.preserved_chunks, nchunks);
    assert_int_equal (info.owned_chunks, i == 7 ? nchunks : 0);
  }
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  free (before);
  free (model);
  harness_free (h);
}

static void
test_sixty_four_snapshots_each_exact (void **state)
{
  (void) state;
  struct harness *h = harness_new (256 * KiB);
  struct fssnap_origin *o = harness_origin (h, 4 * KiB, 0);
  char *images[64];
  char *model = harness_image (h);
  char buf[6000];
  for (int i = 0; i < 64; i++) {
    images[i] = malloc (h->size);
    memcpy (images[i], model, h->size);
    assert_int_equal (harness_snap (o, NULL), i);
    uint64_t off = (uint64_t) (i * 3989) % (h->size - sizeof buf);
    memset (buf, 'a' + i % 26, sizeof buf);
    assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, off, 0), 0);
    memcpy (model + off, buf, sizeof buf);
  }
  for (int i = 0; i < 64; i++) {
    assert_snapshot_equals (o, i, images[i]);
    free (images[i]);
  }
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  free (model);
  harness_free (h);
}

struct storm {
  struct fssnap_origin *o;
  int id;
};

static void *
storm_writer (void *arg)
{
  struct storm *w = arg;
  uint32_t cs = fssnap_origin_chunksize (w->o);
  uint64_t nchunks = fssnap_origin_size (w->o) / cs;
  char *buf = malloc (cs);
  memset (buf, 'w', cs);
  /* each writer takes its own quarter of the chunks, in order */
  for (uint64_t c = w->id; c < nchunks; c += 4)
    if (fssnap_origin_write (w->o, buf, cs, c * cs, 0) != 0)
      abort ();
  free (buf);
  return NULL;
}

static void
test_throttle_bound_slow_store (void **state)
{
  (void) state;
  struct harness *h = harness_new (4 * MiB);
  atomic_store (&h->store_delay_us, 2000);
  struct fssnap_origin *o = harness_origin (h, 16 * KiB, 8 * 16 * KiB);
  char *before = harness_image (h);
  /* transient: writers do not wait for copies to be durable, so copies
   * pile up in memory as fast as the writers make them */
  struct fssnap_create_opts transient = { .transient = true };
  harness_snap (o, &transient);
  pthread_t t[4];
  struct storm w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct storm) { o, i };
    pthread_create (&t[i], NULL, storm_writer, &w[i]);
  }
  for (int i = 0; i < 4; i++)
    pthread_join (t[i], NULL);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.max_mem_chunks, 8);
  assert_true (st.mem_chunks_peak <= 8);
  assert_true (st.mem_chunks_peak >= 1);
  assert_true (st.throttle_waits > 0);
  assert_int_equal (st.chunks_copied, 256);
  assert_snapshot_equals (o, 0, before);
  /* delete while copies may still be queued: no deadlock, nothing lost */
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  char *model = harness_image (h);
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  free (before);
  free (model);
  harness_free (h);
}

static void
test_maxsize_deletes_snapshot (void **state)
{
  (void) state;
  struct harness *h = harness_new (1 * MiB);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  char *before = harness_image (h);
  harness_snap (o, NULL);                             /* 0: unlimited */
  struct fssnap_create_opts small = { .maxsize = 4 * 64 * KiB };
  harness_snap (o, &small);                           /* 1: 4 chunks */
  char *model = harness_image (h);
  write_every_chunk (o, model, 'M');

  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (o, 1, &info), -ENOENT);
  assert_snapshot_equals (o, 0, before);              /* took the rest */
  assert_origin_equals (o, model);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.chunks_copied, 16);
  assert_int_equal (st.snapshots, 1);
  assert_int_equal (st.retained, 1);                  /* owns 4 copies */
  /* deleting the old one frees the retained one too */
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.snapshots + st.retained, 0);
  /* the number is free again */
  assert_int_equal (harness_snap (o, NULL), 0);
  fssnap_origin_close (o);
  free (before);
  free (model);
  harness_free (h);
}

static void
test_store_enospc_disables (void **state)
{
  (void) state;
  struct harness *h = harness_new (1 * MiB);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  harness_snap (o, NULL);                             /* 0 */
  char *model = harness_image (h);
  char buf[100];
  memset (buf, 'x', sizeof buf);
  assert_int_equal (fssnap_origin_write (o, buf, 100, 10, 0), 0);  /* chunk 0 */
  memcpy (model + 10, buf, 100);
  harness_snap (o, NULL);                             /* 1 */
  atomic_store (&h->store_budget, 2 * 64 * KiB);      /* then ENOSPC */
  atomic_store (&h->store_errno, ENOSPC);
  write_every_chunk (o, model, 'E');
  assert_origin_equals (o, model);                    /* origin intact */

  /* both depended on copies owned by 1 that failed: both disabled */
  struct fssnap_snapshot_info info;
  struct fssnap_snapshot *s;
  for (unsigned n = 0; n < 2; n++) {
    /* failures are asynchronous: wait for the writers */
    for (int i = 0; i < 500; i++) {
      fssnap_snapshot_info (o, n, &info);
      if (info.state == FSSNAP_STATE_DISABLED)
        break;
      usleep (10000);
    }
    assert_int_equal (info.state, FSSNAP_STATE_DISABLED);
    assert_non_null (strstr (info.reason, "No space left on device"));
    assert_int_equal (fssnap_snapshot_open (o, n, &s), -EIO);
  }
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_true (st.store_errors > 0);
  /* the origin keeps working, and a new snapshot on a good store works */
  atomic_store (&h->store_errno, 0);
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  assert_int_equal (fssnap_snapshot_delete (o, 1), 0);
  char *image2 = malloc (h->size);      /* the volume as acknowledged */
  memcpy (image2, model, h->size);
  harness_snap (o, NULL);
  write_every_chunk (o, model, 'F');
  assert_snapshot_equals (o, 0, image2);
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  free (image2);
  free (model);
  harness_free (h);
}

static int
candidates_skip_chunk1 (void *opaque, struct fssnap_candidates *c)
{
  (void) opaque;
  uint32_t cs = fssnap_candidates_chunksize (c);
  fssnap_candidates_mark (c, 0, cs);
  fssnap_candidates_mark (c, 2 * cs, fssnap_candidates_origin_size (c));
  return 0;
}

static void
test_store_failure_spares_independent (void **state)
{
  (void) state;
  struct harness *h = harness_new (256 * KiB);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  struct fssnap_create_opts skip = { .candidates = candidates_skip_chunk1 };
  harness_snap (o, &skip);                            /* 0: no chunk 1 */
  char *expect0 = harness_image (h);
  memset (expect0 + 64 * KiB, 0, 64 * KiB);
  harness_snap (o, NULL);                             /* 1 */
  atomic_store (&h->store_budget, 0);
  atomic_store (&h->store_errno, EIO);
  char buf[10] = "123456789";
  assert_int_equal (fssnap_origin_write (o, buf, 10, 64 * KiB + 5, 0), 0);
  struct fssnap_snapshot_info info;
  for (int i = 0; i < 500; i++) {
    fssnap_snapshot_info (o, 1, &info);
    if (info.state == FSSNAP_STATE_DISABLED)
      break;
    usleep (10000);
  }
  assert_int_equal (info.state, FSSNAP_STATE_DISABLED);
  assert_non_null (strstr (info.reason, "Input/output error"));
  fssnap_snapshot_info (o, 0, &info);
  assert_int_equal (info.state, FSSNAP_STATE_IDLE);   /* did not need it */
  assert_snapshot_equals (o, 0, expect0);
  fssnap_origin_close (o);
  free (expect0);
  harness_free (h);
}

static void
test_real_full_filesystem (void **state)
{
  (void) state;
  if (geteuid () != 0)
    skip ();
  struct harness *h = harness_new (2 * MiB);
  char mnt[128];
  snprintf (mnt, sizeof mnt, "%s/small", h->dir);
  mkdir (mnt, 0700);
  if (mount ("tmpfs", mnt, "tmpfs", 0, "size=256k") != 0) {
    harness_free (h);
    skip ();
  }
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  struct fssnap_create_opts opts = { .backing_store = mnt };
  harness_snap (o, &opts);
  char *model = harness_image (h);
  write_every_chunk (o, model, 'T');                  /* 2 MiB > 256 KiB */
  assert_origin_equals (o, model);
  struct fssnap_snapshot_info info;
  for (int i = 0; i < 500; i++) {
    fssnap_snapshot_info (o, 0, &info);
    if (info.state == FSSNAP_STATE_DISABLED)
      break;
    usleep (10000);
  }
  assert_int_equal (info.state, FSSNAP_STATE_DISABLED);
  assert_non_null (strstr (info.reason, "No space left on device"));
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  fssnap_origin_close (o);
  umount (mnt);
  free (model);
  harness_free (h);
}

static void
test_delete_while_open (void **state)
{
  (void) state;
  struct harness *h = harness_new (256 * KiB);
  struct fssnap_origin *o = harness_origin (h, 4 * KiB, 0);
  harness_snap (o, NULL);
  struct fssnap_snapshot *s;
  assert_int_equal (fssnap_snapshot_open (o, 0, &s), 0);
  char buf[512];
  assert_int_equal (fssnap_snapshot_read (s, buf, sizeof buf, 100), 0);
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  assert_int_equal (fssnap_snapshot_delete (o, 0), -ENOENT);
  assert_int_equal (fssnap_snapshot_read (s, buf, sizeof buf, 100), -EIO);
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (o, 0, &info), 0);
  assert_int_equal (info.state, FSSNAP_STATE_DELETING);
  assert_int_equal (fssnap_snapshot_open (o, 0, &(struct fssnap_snapshot *) { 0 }),
                    -ENOENT);
  /* writes go on and copy nothing for it */
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, 0, 0), 0);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.chunks_copied, 0);
  /* number 0 is still held: the next snapshot is 1 */
  assert_int_equal (harness_snap (o, NULL), 1);
  fssnap_snapshot_close (s);
  assert_int_equal (fssnap_snapshot_info (o, 0, &info), -ENOENT);
  assert_int_equal (harness_snap (o, NULL), 0);       /* reused now */
  unsigned nums[4];
  assert_int_equal (fssnap_snapshot_list (o, nums, 4), 2);
  assert_true (nums[0] == 0 && nums[1] == 1);
  fssnap_origin_close (o);
  harness_free (h);
}

static void
test_delete_middle_keeps_others (void **state)
{
  (void) state;
  struct harness *h = harness_new (512 * KiB);
  struct fssnap_origin *o = harness_origin (h, 8 * KiB, 0);
  char *img[3];
  char *model = harness_image (h);
  for (int i = 0; i < 3; i++) {
    img[i] = malloc (h->size);          /* the volume as acknowledged */
    memcpy (img[i], model, h->size);
    harness_snap (o, NULL);
    write_every_chunk (o, model, 'a' + i);
  }
  assert_int_equal (fssnap_snapshot_delete (o, 1), 0);
  assert_snapshot_equals (o, 0, img[0]);
  assert_snapshot_equals (o, 2, img[2]);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.snapshots, 2);
  assert_int_equal (st.retained, 1);                  /* 0 reads its copies */
  /* now delete the newest, then the oldest: all space goes */
  assert_int_equal (fssnap_snapshot_delete (o, 2), 0);
  assert_snapshot_equals (o, 0, img[0]);
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.snapshots + st.retained, 0);
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  for (int i = 0; i < 3; i++)
    free (img[i]);
  free (model);
  harness_free (h);
}

static void
test_chunksize_belongs_to_origin (void **state)
{
  (void) state;
  struct harness *h = harness_new (256 * KiB);
  struct fssnap_origin *o = harness_origin (h, 0, 0);
  assert_int_equal (fssnap_origin_chunksize (o), FSSNAP_CHUNKSIZE_DEFAULT);
  struct fssnap_create_opts c4 = { .chunksize = 4 * KiB };
  struct fssnap_create_opts c8 = { .chunksize = 8 * KiB };
  struct fssnap_create_opts bad = { .chunksize = 3000 };
  unsigned num;
  char err[256];
  assert_int_equal (fssnap_snapshot_create (o, &bad, &num, err, sizeof err),
                    -EINVAL);
  assert_non_null (strstr (err, "power of two"));
  harness_snap (o, &c4);
  assert_int_equal (fssnap_origin_chunksize (o), 4 * KiB);
  assert_int_equal (fssnap_snapshot_create (o, &c8, &num, err, sizeof err),
                    -EINVAL);
  assert_non_null (strstr (err, "differs from 4 KiB"));
  harness_snap (o, NULL);                             /* inherits 4 KiB */
  assert_int_equal (fssnap_snapshot_delete (o, 0), 0);
  assert_int_equal (fssnap_snapshot_delete (o, 1), 0);
  harness_snap (o, &c8);                              /* none left: allowed */
  assert_int_equal (fssnap_origin_chunksize (o), 8 * KiB);
  fssnap_origin_close (o);
  harness_free (h);
}

static void
test_ranges_and_bad_input (void **state)
{
  (void) state;
  struct harness *h = harness_new (64 * KiB);
  struct fssnap_origin *o = harness_origin (h, 4 * KiB, 0);
  char *model = harness_image (h);
  char buf[8192];
  assert_int_equal (fssnap_origin_read (o, buf, 2, 64 * KiB - 1), -EINVAL);
  assert_int_equal (fssnap_origin_write (o, buf, 1, 64 * KiB, 0), -EINVAL);
  assert_int_equal (fssnap_origin_write (o, buf, 1, UINT64_MAX, 0), -EINVAL);
  assert_int_equal (fssnap_origin_zero (o, 4097, 61440, 0), -EINVAL);
  assert_int_equal (fssnap_origin_trim (o, 1, UINT64_MAX - 1, 0), -EINVAL);
  assert_int_equal (fssnap_origin_read (o, buf, 0, 64 * KiB), 0);
  harness_snap (o, NULL);
  struct fssnap_snapshot *s;
  assert_int_equal (fssnap_snapshot_open (o, 0, &s), 0);
  assert_int_equal (fssnap_snapshot_read (s, buf, 4097, 61440), -EINVAL);
  assert_int_equal (fssnap_snapshot_open (o, 9, &(struct fssnap_snapshot *) { 0 }),
                    -ENOENT);
  assert_int_equal (fssnap_snapshot_delete (o, 9), -ENOENT);
  fssnap_snapshot_close (s);
  /* a backing store that exists already is refused, nothing created */
  char path[200];
  snprintf (path, sizeof path, "%s/origin.img", h->dir);
  struct fssnap_create_opts taken = { .backing_store = path };
  unsigned num;
  char err[256];
  assert_int_equal (fssnap_snapshot_create (o, &taken, &num, err, sizeof err),
                    -EEXIST);
  assert_non_null (strstr (err, "cannot create backing store"));
  assert_int_equal (fssnap_snapshot_list (o, NULL, 0), 1);
  assert_origin_equals (o, model);                    /* nothing changed */
  fssnap_origin_close (o);
  free (model);
  harness_free (h);
}

static int
candidates_even_chunks (void *opaque, struct fssnap_candidates *c)
{
  (void) opaque;
  uint32_t cs = fssnap_candidates_chunksize (c);
  for (uint64_t off = 0; off < fssnap_candidates_origin_size (c); off += 2 * cs)
    fssnap_candidates_mark (c, off, 1);
  return 0;
}

struct extent_log {
  int n;
  uint64_t off[16], len[16];
  bool hole[16];
};

static int
log_extent (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct extent_log *l = opaque;
  l->off[l->n] = off;
  l->len[l->n] = len;
  l->hole[l->n] = hole;
  return ++l->n == 16;
}

static void
test_candidates_holes_and_extents (void **state)
{
  (void) state;
  struct harness *h = harness_new (8 * 4 * KiB);
  struct fssnap_origin *o = harness_origin (h, 4 * KiB, 0);
  char *expect = harness_image (h);
  for (int c = 1; c < 8; c += 2)
    memset (expect + c * 4 * KiB, 0, 4 * KiB);
  struct fssnap_create_opts even = { .candidates = candidates_even_chunks };
  harness_snap (o, &even);
  char *model = harness_image (h);
  write_every_chunk (o, model, 'q');
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.chunks_copied, 4);             /* holes never copied */
  assert_snapshot_equals (o, 0, expect);
  struct fssnap_snapshot *s;
  assert_int_equal (fssnap_snapshot_open (o, 0, &s), 0);
  struct extent_log l = { 0 };
  assert_int_equal (fssnap_snapshot_extents (s, 100, 3 * 4 * KiB, log_extent,
                                             &l), 0);
  assert_int_equal (l.n, 4);
  assert_true (l.off[0] == 100 && l.len[0] == 4 * KiB - 100 && !l.hole[0]);
  assert_true (l.off[1] == 4 * KiB && l.len[1] == 4 * KiB && l.hole[1]);
  assert_true (l.off[2] == 8 * KiB && !l.hole[2]);
  assert_true (l.off[3] == 12 * KiB && l.len[3] == 100 && l.hole[3]);
  fssnap_snapshot_close (s);
  fssnap_origin_close (o);
  free (expect);
  free (model);
  harness_free (h);
}

static void
test_split_store_and_unlink (void **state)
{
  (void) state;
  struct harness *h = harness_new (1 * MiB);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  char *before = harness_image (h);
  struct fssnap_create_opts split = { .max_backfile_size = 200 * KiB,
                                      .unlink = true };
  harness_snap (o, &split);
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (o, 0, &info), 0);
  assert_int_equal (info.backing_files, 7);   /* 3 slots a file, 1 spare */
  assert_int_equal (info.max_backfile_size, 200 * KiB);
  assert_true (info.unlinked);
  char *model = harness_image (h);
  write_every_chunk (o, model, 'S');
  assert_snapshot_equals (o, 0, before);
  assert_int_equal (fssnap_snapshot_info (o, 0, &info), 0);
  assert_int_equal (info.backing_bytes, 16 * 64 * KiB);
  /* the store files were unlinked: no *.cow file in the directory */
  char cmd[200];
  snprintf (cmd, sizeof cmd, "test $(ls '%s' | grep -c cow) -eq 0", h->dir);
  assert_int_equal (system (cmd), 0);
  fssnap_origin_close (o);
  free (before);
  free (model);
  harness_free (h);
}

/* The device's short last chunk goes to its slot with O_DIRECT, padded
 * to 4 KiB with zeros, even in a reused copy buffer that held a full
 * chunk of other data before.
 */
static void
test_short_last_chunk_padded (void **state)
{
  (void) state;
  const uint64_t size = 4 * 64 * KiB - 1000;
  struct harness *h = harness_new (size);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  harness_snap (o, NULL);
  char buf[512];
  memset (buf, 'n', sizeof buf);
  for (int c = 0; c < 3; c++)                   /* full chunks first */
    assert_int_equal (fssnap_origin_write (o, buf, sizeof buf,
                                           c * 64 * KiB, 0), 0);
  assert_int_equal (fssnap_origin_flush (o), 0);
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, size - 512, 0),
                    0);
  fssnap_origin_close (o);
  char path[256], tail[1000], zeros[1000] = { 0 };
  snprintf (path, sizeof path, "%s/origin.img.snap0.0.cow", h->dir);
  FILE *f = fopen (path, "r");
  assert_non_null (f);
  /* slot 3, after the header and the index block; its data, then 1000
   * bytes of padding up to 64 KiB */
  assert_int_equal (fseek (f, 8192 + 3 * 64 * KiB + 64 * KiB - 1000,
                           SEEK_SET), 0);
  assert_int_equal (fread (tail, 1, sizeof tail, f), sizeof tail);
  fclose (f);
  assert_memory_equal (tail, zeros, sizeof tail);
  harness_free (h);
}

/* fssnap_origin_write_may_wait: true exactly where a write would copy. */
static void
test_write_may_wait (void **state)
{
  (void) state;
  struct harness *h = harness_new (8 * 64 * KiB);
  struct fssnap_origin *o = harness_origin (h, 64 * KiB, 0);
  char buf[4 * KiB];
  memset (buf, 'w', sizeof buf);
  assert_false (fssnap_origin_write_may_wait (o, 0, sizeof buf));
  struct fssnap_create_opts even = { .candidates = candidates_even_chunks };
  harness_snap (o, &even);
  assert_true (fssnap_origin_write_may_wait (o, 0, sizeof buf));
  assert_false (fssnap_origin_write_may_wait (o, 64 * KiB, sizeof buf));
  assert_false (fssnap_origin_write_may_wait (o, h->size, 1));  /* EINVAL */
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, 100, 0), 0);
  assert_false (fssnap_origin_write_may_wait (o, 0, 64 * KiB));
  assert_true (fssnap_origin_write_may_wait (o, 60 * KiB, 72 * KiB));
  assert_false (fssnap_origin_write_may_wait (o, 60 * KiB, 68 * KiB));
  harness_snap (o, NULL);               /* every chunk, chunk 0 too */
  assert_true (fssnap_origin_write_may_wait (o, 0, sizeof buf));
  char *model = harness_image (h);
  write_every_chunk (o, model, 'm');
  assert_false (fssnap_origin_write_may_wait (o, 0, h->size));
  unsigned num = harness_snap (o, NULL);
  assert_true (fssnap_origin_write_may_wait (o, 5 * 64 * KiB, 1));
  assert_int_equal (fssnap_snapshot_delete (o, num), 0);
  assert_false (fssnap_origin_write_may_wait (o, 0, h->size));
  assert_origin_equals (o, model);
  fssnap_origin_close (o);
  free (model);
  harness_free (h);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_eight_snapshots_one_copy),
    cmocka_unit_test (test_sixty_four_snapshots_each_exact),
    cmocka_unit_test (test_throttle_bound_slow_store),
    cmocka_unit_test (test_maxsize_deletes_snapshot),
    cmocka_unit_test (test_store_enospc_disables),
    cmocka_unit_test (test_store_failure_spares_independent),
    cmocka_unit_test (test_real_full_filesystem),
    cmocka_unit_test (test_delete_while_open),
    cmocka_unit_test (test_delete_middle_keeps_others),
    cmocka_unit_test (test_chunksize_belongs_to_origin),
    cmocka_unit_test (test_ranges_and_bad_input),
    cmocka_unit_test (test_candidates_holes_and_extents),
    cmocka_unit_test (test_split_store_and_unlink),
    cmocka_unit_test (test_short_last_chunk_padded),
    cmocka_unit_test (test_write_may_wait),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
