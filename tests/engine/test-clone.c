/* SPDX-License-Identifier: MIT */
/*
 * Writable clones and rollback, through the public API only.  Clones:
 * random unaligned writes, zeroes and trims read back as snapshot +
 * writes (a model), zeroes and trims free the overlay's space, the snapshot stays exact, the clone comes back after the set is
 * closed and reopened (flushed) and after a journal-only reopen (not
 * flushed), a damaged map keeps the clone offline, two threads copying up
 * the same chunks never lose a write.  A flush writes the journal, not
 * the map, until the journal outgrows it; after a power cut (another
 * boot) only what a flush covered comes back.  Rollback: the volume reads as the
 * target, older and newer snapshots stay exact, exact changes are empty,
 * a second rollback moves nothing, a pending intent for another target
 * refuses.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define KiB 1024u
#define SIZE (512 * KiB)
#define CS (16 * KiB)

static void
clone_check (struct fssnap_clone *c, const char *model)
{
  char *buf = malloc (SIZE);
  assert_int_equal (fssnap_clone_read (c, buf, SIZE, 0), 0);
  assert_memory_equal (buf, model, SIZE);
  free (buf);
}

/* The model of a clone: its bytes and the chunks its overlay holds (a
 * trim leaves a partial chunk the clone never wrote as it was).
 */
struct clone_model {
  char *bytes;
  bool written[SIZE / CS];
};

static void
model_fill (struct clone_model *m, const char *buf, size_t len, uint64_t off,
            bool trim)
{
  for (uint64_t c = off / CS; c <= (off + len - 1) / CS; c++) {
    uint64_t lo = c * CS > off ? c * CS : off;
    uint64_t hi = (c + 1) * CS < off + len ? (c + 1) * CS : off + len;
    if (trim && !m->written[c] && hi - lo < CS)
      continue;
    if (buf)
      memcpy (m->bytes + lo, buf + (lo - off), hi - lo);
    else
      memset (m->bytes + lo, 0, hi - lo);
    m->written[c] = true;
  }
}

/* n random unaligned writes, zeroes (with and without holes) and trims. */
static void
random_writes (struct fssnap_clone *c, struct clone_model *m, uint64_t seed,
               int n)
{
  char *buf = malloc (64 * KiB);
  for (int i = 0; i < n; i++) {
    size_t len = 1 + rng_next (&seed) % (40 * KiB);
    uint64_t off = rng_next (&seed) % (SIZE - len);
    switch (rng_next (&seed) % 8) {
    case 0:
      assert_int_equal (fssnap_clone_zero (c, len, off, 0), 0);
      model_fill (m, NULL, len, off, false);
      break;
    case 1:
      assert_int_equal (fssnap_clone_zero (c, len, off,
                                           FSSNAP_ZERO_NO_HOLE), 0);
      model_fill (m, NULL, len, off, false);
      break;
    case 2:
      assert_int_equal (fssnap_clone_trim (c, len, off, 0), 0);
      model_fill (m, NULL, len, off, true);
      break;
    default:
      for (size_t k = 0; k < len; k++)
        buf[k] = (char) rng_next (&seed);
      assert_int_equal (fssnap_clone_write (c, buf, len, off, 0), 0);
      model_fill (m, buf, len, off, false);
    }
  }
  free (buf);
}

static struct fssnap_clones *
clones_open (struct harness *h, struct fssnap_origin *o)
{
  struct fssnap_clones *set = NULL;
  assert_int_equal (fssnap_clones_open (o, h->dir, harness_quiet_log, NULL,
                                        &set), 0);
  return set;
}

static void
test_clone_model_and_reopen (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  unsigned snap = harness_snap (o, NULL), k;
  int err;
  char *base = harness_read_all (o, (int) snap, &err);
  struct clone_model m = { .bytes = malloc (SIZE) };
  char *model = m.bytes;
  char msg[256];
  struct fssnap_clones *set = clones_open (h, o);
  struct fssnap_clone *c;

  memcpy (model, base, SIZE);
  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  assert_int_equal (k, 0);
  assert_int_equal (fssnap_clones_create (set, 9, &k, msg, sizeof msg),
                    -ENOENT);
  assert_int_equal (fssnap_clone_get (set, 0, &c), 0);
  random_writes (c, &m, 1, 300);
  clone_check (c, model);
  /* The snapshot and the volume are untouched. */
  char *now = harness_read_all (o, (int) snap, &err);
  assert_memory_equal (now, base, SIZE);
  free (now);
  assert_int_equal (fssnap_clone_flush (c), 0);
  random_writes (c, &m, 2, 50);     /* journalled, not flushed */
  fssnap_clone_put (c);
  fssnap_clones_close (set);            /* flushes */

  set = clones_open (h, o);
  assert_int_equal (fssnap_clone_get (set, 0, &c), 0);
  clone_check (c, model);
  random_writes (c, &m, 3, 50);
  fssnap_clone_put (c);
  /* Reopen from the journal alone: copy the files before the flush of
   * close, then put them back.
   */
  char cmd[512];
  snprintf (cmd, sizeof cmd, "cd %s && mkdir keep && cp -p origin.img.clone0.* keep/",
            h->dir);
  assert_int_equal (system (cmd), 0);
  fssnap_clones_close (set);
  snprintf (cmd, sizeof cmd, "cd %s && cp -p keep/* . && rm -r keep", h->dir);
  assert_int_equal (system (cmd), 0);
  set = clones_open (h, o);
  assert_int_equal (fssnap_clone_get (set, 0, &c), 0);
  clone_check (c, model);
  fssnap_clone_put (c);
  assert_int_equal (fssnap_clones_delete (set, 0), 0);
  /* A new clone deleted while a user still writes and flushes: it does
   * not come back.
   */
  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  assert_int_equal (fssnap_clone_get (set, k, &c), 0);
  assert_int_equal (fssnap_clones_delete (set, k), 0);
  struct fssnap_clone *gone;
  assert_int_equal (fssnap_clone_get (set, k, &gone), -ENOENT);
  assert_int_equal (fssnap_clone_write (c, "x", 1, 4096, 0), 0);
  assert_int_equal (fssnap_clone_flush (c), 0);
  fssnap_clone_put (c);
  fssnap_clones_close (set);
  char map[256];
  snprintf (map, sizeof map, "%s/origin.img.clone0.map", h->dir);
  assert_int_equal (access (map, F_OK), -1);
  set = clones_open (h, o);
  unsigned nums[4];
  assert_int_equal (fssnap_clones_list (set, nums, 4), 0);
  fssnap_clones_close (set);
  free (base);
  free (model);
  fssnap_origin_close (o);
  harness_free (h);
}

static void
test_clone_damaged_map (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  unsigned snap = harness_snap (o, NULL), k, nums[4];
  char msg[256], path[256];
  struct fssnap_clones *set = clones_open (h, o);

  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  fssnap_clones_close (set);
  snprintf (path, sizeof path, "%s/origin.img.clone0.map", h->dir);
  int fd = open (path, O_RDWR);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, "X", 1, 130), 1);
  close (fd);
  set = clones_open (h, o);
  assert_int_equal (fssnap_clones_list (set, nums, 4), 0);
  fssnap_clones_close (set);
  fssnap_origin_close (o);
  harness_free (h);
}

static void
file_stat (struct harness *h, const char *ext, struct stat *st)
{
  char path[256];
  snprintf (path, sizeof path, "%s/origin.img.clone0.%s", h->dir, ext);
  assert_int_equal (stat (path, st), 0);
}

static void
fill_chunks (struct fssnap_clone *c, char *model, unsigned first,
             unsigned n, char fill)
{
  char *buf = malloc (n * CS);
  memset (buf, fill, n * CS);
  buf[0] = 'x';                 /* partial copy-ups too */
  assert_int_equal (fssnap_clone_write (c, buf + 1, n * CS - 100,
                                        (uint64_t) first * CS + 1, 0), 0);
  memcpy (model + (size_t) first * CS + 1, buf + 1, n * CS - 100);
  free (buf);
}

static void
test_clone_flush_and_power_cut (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  unsigned snap = harness_snap (o, NULL), k;
  int err;
  char *base = harness_read_all (o, (int) snap, &err), *model = malloc (SIZE);
  char msg[256], cmd[512];
  struct fssnap_clones *set = clones_open (h, o);
  struct fssnap_clone *c;
  struct stat map0, st;

  memcpy (model, base, SIZE);
  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  assert_int_equal (fssnap_clone_get (set, 0, &c), 0);
  file_stat (h, "map", &map0);
  /* Four new chunks: the flush appends to the journal only. */
  fill_chunks (c, model, 0, 4, 'a');
  assert_int_equal (fssnap_clone_flush (c), 0);
  file_stat (h, "map", &st);
  assert_int_equal (st.st_ino, map0.st_ino);
  file_stat (h, "log", &st);
  assert_int_equal (st.st_size, 16 * (1 + 4 + 1));     /* boot, chunks, commit */
  /* Four more, not flushed; the files as a power cut would find them. */
  fill_chunks (c, model, 16, 4, 'b');
  snprintf (cmd, sizeof cmd, "cd %s && mkdir keep && cp -p origin.img.clone0.* keep/",
            h->dir);
  assert_int_equal (system (cmd), 0);
  /* The journal outgrew the map: this flush rewrites the map and starts
   * a new journal.
   */
  assert_int_equal (fssnap_clone_flush (c), 0);
  file_stat (h, "map", &st);
  assert_true (st.st_ino != map0.st_ino);
  file_stat (h, "log", &st);
  assert_int_equal (st.st_size, 16);
  clone_check (c, model);
  fssnap_clone_put (c);
  fssnap_clones_close (set);

  /* Another boot: chunks 0-3 (flushed) are back, 16-19 read as the base. */
  snprintf (cmd, sizeof cmd, "cd %s && cp -p keep/* . && rm -r keep", h->dir);
  assert_int_equal (system (cmd), 0);
  setenv ("FSSNAP_TEST_BOOT_ID", "0123456789abcdef", 1);
  set = clones_open (h, o);
  unsetenv ("FSSNAP_TEST_BOOT_ID");
  memcpy (model + 16 * CS, base + 16 * CS, 4 * CS);
  assert_int_equal (fssnap_clone_get (set, 0, &c), 0);
  clone_check (c, model);
  fssnap_clone_put (c);
  fssnap_clones_close (set);
  free (base);
  free (model);
  fssnap_origin_close (o);
  harness_free (h);
}

struct racer {
  struct fssnap_clone *c;
  char fill;
  uint64_t off;                 /* the thread's half of every chunk */
};

static void *
racer_run (void *opaque)
{
  struct racer *r = opaque;
  char buf[CS / 2];
  memset (buf, r->fill, sizeof buf);
  for (uint64_t c = 0; c < SIZE / CS; c++)
    if (fssnap_clone_write (r->c, buf, sizeof buf, c * CS + r->off, 0) != 0)
      abort ();
  return NULL;
}

/* Two threads write the two halves of every chunk at once: each copy-up
 * must keep the other's half.
 */
static void
test_clone_concurrent_copy_up (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  unsigned snap = harness_snap (o, NULL), k;
  char msg[256], *model = malloc (SIZE);
  struct fssnap_clones *set = clones_open (h, o);
  struct fssnap_clone *c;
  pthread_t t[2];

  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  assert_int_equal (fssnap_clone_get (set, k, &c), 0);
  struct racer r[2] = { { c, 'a', 0 }, { c, 'b', CS / 2 } };
  for (int i = 0; i < 2; i++)
    pthread_create (&t[i], NULL, racer_run, &r[i]);
  for (int i = 0; i < 2; i++)
    pthread_join (t[i], NULL);
  for (uint64_t i = 0; i < SIZE; i++)
    model[i] = (i % CS) < CS / 2 ? 'a' : 'b';
  clone_check (c, model);
  fssnap_clone_put (c);
  fssnap_clones_close (set);
  free (model);
  fssnap_origin_close (o);
  harness_free (h);
}

static void
volume_write (struct fssnap_origin *o, uint64_t seed, int n)
{
  char *buf = malloc (48 * KiB);
  for (int i = 0; i < n; i++) {
    size_t len = 1 + rng_next (&seed) % (48 * KiB);
    uint64_t off = rng_next (&seed) % (SIZE - len);
    memset (buf, (int) (rng_next (&seed) & 0xff), len);
    if (rng_next (&seed) % 4 == 0)
      assert_int_equal (fssnap_origin_zero (o, len, off, 0), 0);
    else
      assert_int_equal (fssnap_origin_write (o, buf, len, off, 0), 0);
  }
  free (buf);
}

static int
count_changed (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  (void) off;
  if (!hole)
    *(uint64_t *) opaque += len;
  return 0;
}

static void
test_rollback (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  char *img[4], msg[256], uuid[FSSNAP_UUID_STRLEN];
  unsigned num;
  int err;

  for (int i = 0; i < 4; i++) {
    volume_write (o, 10 + i, 20);
    assert_int_equal (harness_snap (o, NULL), i);
    img[i] = harness_read_all (o, i, &err);
  }
  volume_write (o, 99, 20);
  assert_int_equal (fssnap_rollback (o, h->dir, 1, NULL, NULL, NULL, msg,
                                     sizeof msg), 0);
  char *vol = harness_read_all (o, -1, &err);
  assert_memory_equal (vol, img[1], SIZE);
  free (vol);
  for (int i = 0; i < 4; i++) {
    char *now = harness_read_all (o, i, &err);
    assert_int_equal (err, 0);
    assert_memory_equal (now, img[i], SIZE);
    free (now);
  }
  uint64_t changed = 0;
  assert_int_equal (fssnap_changes_exact (o, 1, FSSNAP_VOLUME, 0, SIZE,
                                          count_changed, &changed, msg,
                                          sizeof msg), 0);
  assert_int_equal (changed, 0);
  assert_int_equal (fssnap_changes_exact (o, 0, FSSNAP_VOLUME, 0, SIZE,
                                          count_changed, &changed, msg,
                                          sizeof msg), 0);
  assert_true (changed > 0);
  assert_int_equal (fssnap_rollback_last (o, h->dir, &num, uuid), 1);
  assert_int_equal (num, 1);
  assert_int_equal (fssnap_rollback_pending (o, h->dir, &num, uuid), 0);

  /* A pending intent for snapshot 2 refuses a rollback to 3. */
  struct fssnap_snapshot_info info;
  char path[256];
  assert_int_equal (fssnap_snapshot_info (o, 2, &info), 0);
  snprintf (path, sizeof path, "%s/origin.img.rolledback", h->dir);
  char rec[256];
  FILE *f = fopen (path, "r");
  assert_non_null (f);
  assert_non_null (fgets (rec, sizeof rec, f));
  fclose (f);
  snprintf (path, sizeof path, "%s/origin.img.rollback", h->dir);
  f = fopen (path, "w");
  fputs (rec, f);               /* snapshot 1's record: pending for 1 */
  fclose (f);
  assert_int_equal (fssnap_rollback (o, h->dir, 3, NULL, NULL, NULL, msg,
                                     sizeof msg), -EBUSY);
  assert_int_equal (fssnap_rollback (o, h->dir, 1, NULL, NULL, NULL, msg,
                                     sizeof msg), 0);
  assert_int_equal (fssnap_rollback_pending (o, h->dir, &num, uuid), 0);
  for (int i = 0; i < 4; i++)
    free (img[i]);
  fssnap_origin_close (o);
  harness_free (h);
}

/* Zero without FSSNAP_ZERO_NO_HOLE and trim free the overlay's space
 * under whole chunks and written ones; zero with it keeps the space; a
 * trim of part of a chunk the clone never wrote leaves the snapshot's
 * bytes.  All of it read back after a reopen.
 */
static void
test_clone_trim_frees_space (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = harness_origin (h, CS, 0);
  unsigned snap = harness_snap (o, NULL), k;
  int err;
  char *base = harness_read_all (o, (int) snap, &err), msg[256];
  struct clone_model m = { .bytes = malloc (SIZE) };
  struct fssnap_clones *set = clones_open (h, o);
  struct fssnap_clone *c;
  struct fssnap_clone_info info;
  struct stat st;
  char *buf = malloc (SIZE);
  uint64_t seed = 7;

  memcpy (m.bytes, base, SIZE);
  assert_int_equal (fssnap_clones_create (set, snap, &k, msg, sizeof msg), 0);
  assert_int_equal (fssnap_clone_get (set, k, &c), 0);
  /* Nothing written yet: a trim inside one chunk changes nothing. */
  assert_int_equal (fssnap_clone_trim (c, CS / 2, CS + 100, 0), 0);
  fssnap_clone_info (c, &info);
  assert_int_equal (info.written_chunks, 0);
  clone_check (c, m.bytes);
  /* The second half written, then trimmed: space back, zeros read. */
  for (size_t i = 0; i < SIZE / 2; i++)
    buf[i] = (char) (rng_next (&seed) | 1);
  assert_int_equal (fssnap_clone_write (c, buf, SIZE / 2, SIZE / 2, 0), 0);
  model_fill (&m, buf, SIZE / 2, SIZE / 2, false);
  file_stat (h, "data", &st);
  assert_true ((uint64_t) st.st_blocks * 512 >= SIZE / 2);
  assert_int_equal (fssnap_clone_trim (c, SIZE / 4 + 1000, SIZE / 2 - 500,
                                       FSSNAP_FUA), 0);
  model_fill (&m, NULL, SIZE / 4 + 1000, SIZE / 2 - 500, true);
  /* A whole chunk of the first half, never written, zeroed as a hole. */
  assert_int_equal (fssnap_clone_zero (c, CS, 0, 0), 0);
  model_fill (&m, NULL, CS, 0, false);
  /* The last chunk zeroed with its space kept. */
  assert_int_equal (fssnap_clone_zero (c, CS, SIZE - CS,
                                       FSSNAP_ZERO_NO_HOLE), 0);
  model_fill (&m, NULL, CS, SIZE - CS, false);
  clone_check (c, m.bytes);
  file_stat (h, "data", &st);
  assert_true ((uint64_t) st.st_blocks * 512 <= SIZE / 4);
  assert_true ((uint64_t) st.st_blocks * 512 >= SIZE / 4 - CS);
  fssnap_clone_info (c, &info);
  assert_int_equal (info.written_chunks, SIZE / CS / 2 + 1);
  fssnap_clone_put (c);
  fssnap_clones_close (set);

  set = clones_open (h, o);
  assert_int_equal (fssnap_clone_get (set, k, &c), 0);
  clone_check (c, m.bytes);
  fssnap_clone_put (c);
  /* The snapshot never changed. */
  char *now = harness_read_all (o, (int) snap, &err);
  assert_memory_equal (now, base, SIZE);
  free (now);
  fssnap_clones_close (set);
  free (buf);
  free (m.bytes);
  free (base);
  fssnap_origin_close (o);
  harness_free (h);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_clone_model_and_reopen),
    cmocka_unit_test (test_clone_flush_and_power_cut),
    cmocka_unit_test (test_clone_damaged_map),
    cmocka_unit_test (test_clone_trim_frees_space),
    cmocka_unit_test (test_clone_concurrent_copy_up),
    cmocka_unit_test (test_rollback),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
