/* SPDX-License-Identifier: MIT */
/*
 * Write-back staging (engine/staging.c): writes to chunks whose copies are
 * not durable yet are acknowledged before they reach the origin.  The
 * store is slowed down so that commits lag behind the writes, and the
 * tests check that
 *   - the volume reads every acknowledged write at once (overlapping and
 *     partial writes, zeroes and trims, in order), and the snapshot its
 *     creation image;
 *   - reads past the page cache (fssnap_origin_read_direct) see the same,
 *     aligned or not, before and after a flush;
 *   - FLUSH and FUA put what they cover on the origin file;
 *   - a snapshot holds the writes acknowledged before its creation;
 *   - staged bytes stay under their bound;
 *   - a process killed with SIGKILL while writes are staged loses none:
 *     the next open replays the staging log (a child process is killed;
 *     the parent reopens and checks);
 *   - a fault on the log during that replay (each operation, each kind of
 *     fault) refuses the open or replays it, and loses nothing;
 *   - a log with a damaged header is removed, nothing replayed.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define KiB 1024u
#define SIZE (1024 * KiB)
#define CHUNK (16 * KiB)

static void
assert_reads (struct fssnap_origin *o, int num, const char *expect)
{
  int r;
  char *got = harness_read_all (o, num, &r);
  assert_int_equal (r, 0);
  assert_memory_equal (got, expect, SIZE);
  free (got);
}

/* A slow store: each copy takes 2 ms to reach it, so commits lag. */
static struct fssnap_origin *
slow_origin (struct harness *h, uint64_t max_mem)
{
  atomic_store (&h->store_delay_us, 2000);
  return harness_origin (h, CHUNK, max_mem);
}

/* Writes, zeroes and trims touching every chunk once and overlapping each
 * other, the same for a given seed; model follows them (o NULL: only the
 * model).
 */
static void
staged_workload (struct fssnap_origin *o, char *model, uint64_t seed)
{
  uint64_t rng = seed;
  char buf[3 * CHUNK];
  for (uint64_t c = 0; c < SIZE / CHUNK; c++) {
    uint64_t off = c * CHUNK + rng_next (&rng) % CHUNK;
    size_t len = 1 + rng_next (&rng) % (2 * CHUNK);
    if (len > SIZE - off)
      len = SIZE - off;
    unsigned kind = rng_next (&rng) % 8;
    if (kind < 2)                       /* a trimmed file reads zeros */
      memset (buf, 0, len);
    else
      memset (buf, (int) (rng_next (&rng) | 1), len);
    int r = 0;
    if (o && kind == 0)
      r = fssnap_origin_zero (o, len, off, 0);
    else if (o && kind == 1)
      r = fssnap_origin_trim (o, len, off, 0);
    else if (o)
      r = fssnap_origin_write (o, buf, len, off, 0);
    assert_int_equal (r, 0);
    memcpy (model + off, buf, len);
  }
}

static void
test_reads_see_staged_writes (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = slow_origin (h, 0);
  char *model = harness_image (h);
  char *before = harness_image (h);
  harness_snap (o, NULL);
  staged_workload (o, model, 42);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_true (st.staged_writes > 0);
  assert_reads (o, -1, model);
  assert_reads (o, 0, before);
  /* a snapshot holds what was acknowledged, staged or not */
  harness_snap (o, NULL);
  char *image1 = malloc (SIZE);
  memcpy (image1, model, SIZE);
  staged_workload (o, model, 43);
  assert_reads (o, -1, model);
  assert_reads (o, 0, before);
  assert_reads (o, 1, image1);
  /* flush: all of it on the origin file */
  assert_int_equal (fssnap_origin_flush (o), 0);
  char *file = harness_image (h);
  assert_memory_equal (file, model, SIZE);
  fssnap_origin_close (o);
  free (file);
  free (image1);
  free (before);
  free (model);
  harness_free (h);
}

/* The volume through fssnap_origin_read_direct: whole and aligned (past
 * the page cache), then at an odd buffer and an odd offset (through it).
 */
static void
assert_direct_reads (struct fssnap_origin *o, const char *expect)
{
  char *buf = aligned_alloc (FSSNAP_DIRECT_ALIGN, SIZE + FSSNAP_DIRECT_ALIGN);
  assert_non_null (buf);
  assert_int_equal (fssnap_origin_read_direct (o, buf, SIZE, 0), 0);
  assert_memory_equal (buf, expect, SIZE);
  assert_int_equal (fssnap_origin_read_direct (o, buf + 1, 2 * CHUNK,
                                               CHUNK), 0);
  assert_memory_equal (buf + 1, expect + CHUNK, 2 * CHUNK);
  assert_int_equal (fssnap_origin_read_direct (o, buf, CHUNK, 512 + 3), 0);
  assert_memory_equal (buf, expect + 512 + 3, CHUNK);
  assert_int_equal (fssnap_origin_read_direct (o, buf, 2 * CHUNK,
                                               SIZE - CHUNK), -EINVAL);
  free (buf);
}

static void
test_direct_reads_see_everything (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = slow_origin (h, 0);
  char *model = harness_image (h);
  harness_snap (o, NULL);
  staged_workload (o, model, 44);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_true (st.staged_writes > 0);
  assert_direct_reads (o, model);       /* staged writes laid over */
  assert_int_equal (fssnap_origin_flush (o), 0);
  /* applied at once, dirty in the page cache: the kernel writes it back
   * before an O_DIRECT read of it */
  char buf[CHUNK];
  memset (buf, 'd', sizeof buf);
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, 3 * CHUNK, 0),
                    0);
  memcpy (model + 3 * CHUNK, buf, sizeof buf);
  assert_direct_reads (o, model);
  assert_reads (o, -1, model);
  fssnap_origin_close (o);
  free (model);
  harness_free (h);
}

static void
test_fua_reaches_origin (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = slow_origin (h, 0);
  harness_snap (o, NULL);
  char buf[100];
  memset (buf, 'u', sizeof buf);
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, 5 * CHUNK + 7,
                                         0), 0);
  memset (buf, 'f', sizeof buf);
  assert_int_equal (fssnap_origin_write (o, buf, sizeof buf, 9 * CHUNK + 3,
                                         FSSNAP_FUA), 0);
  char *file = harness_image (h);
  /* FUA covers its own write, and the staged one before it went first */
  assert_memory_equal (file + 9 * CHUNK + 3, buf, sizeof buf);
  assert_int_equal (file[5 * CHUNK + 7], 'u');
  fssnap_origin_close (o);
  free (file);
  harness_free (h);
}

static void
test_staged_bytes_bounded (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  struct fssnap_origin *o = slow_origin (h, 4 * CHUNK);
  char *model = harness_image (h);
  harness_snap (o, NULL);
  staged_workload (o, model, 7);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  assert_int_equal (st.max_staged_bytes, 4 * CHUNK);
  assert_true (st.staged_bytes_peak > 0);
  assert_true (st.staged_bytes_peak <= st.max_staged_bytes);
  assert_reads (o, -1, model);
  fssnap_origin_close (o);
  free (model);
  harness_free (h);
}

/* The child: stage writes, check them, die without closing anything. */
static void
killed_child (struct harness *h)
{
  struct fssnap_origin *o = slow_origin (h, 0);
  char *model = harness_image (h);
  harness_snap (o, NULL);
  atomic_store (&h->store_delay_us, 200000);   /* nothing commits now */
  staged_workload (o, model, 99);
  int r;
  char *got = harness_read_all (o, -1, &r);
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  if (r == 0 && memcmp (got, model, SIZE) == 0 && st.staged_bytes > 0)
    kill (getpid (), SIGKILL);
  _exit (1);                    /* the staged writes were not as expected */
}

/* Run killed_child; returns the volume it acknowledged (the workload
 * over the origin as it was).
 */
static char *
kill_staging_child (struct harness *h)
{
  char *model = harness_image (h);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0)
    killed_child (h);
  int status;
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_true (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
  char log[160];
  struct stat sb;
  snprintf (log, sizeof log, "%s/origin.img.staging", h->dir);
  assert_int_equal (stat (log, &sb), 0);       /* something was staged */
  staged_workload (NULL, model, 99);
  return model;
}

static void
test_kill_loses_no_acknowledged_write (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  char *before = harness_image (h);
  char *model = kill_staging_child (h);
  char log[160];
  struct stat sb;
  snprintf (log, sizeof log, "%s/origin.img.staging", h->dir);

  struct fssnap_origin *o = harness_origin (h, 0, 0);
  assert_reads (o, -1, model);
  assert_reads (o, 0, before);
  fssnap_origin_close (o);              /* clean: the log goes */
  assert_int_equal (stat (log, &sb), -1);
  char *file = harness_image (h);
  assert_memory_equal (file, model, SIZE);
  free (file);
  free (model);
  free (before);
  harness_free (h);
}

/* A log whose header is damaged holds nothing acknowledged (the header
 * is durable before the first record): nothing is replayed, it goes.
 */
static void
test_log_without_header_is_removed (void **state)
{
  (void) state;
  struct harness *h = harness_new (SIZE);
  char *before = harness_image (h);
  char log[160];
  snprintf (log, sizeof log, "%s/origin.img.staging", h->dir);
  int fd = open (log, O_WRONLY | O_CREAT, 0600);
  char junk[8192];
  memset (junk, 'j', sizeof junk);
  assert_int_equal (pwrite (fd, junk, sizeof junk, 0), sizeof junk);
  close (fd);
  struct fssnap_origin *o = harness_origin (h, CHUNK, 0);
  struct stat sb;
  assert_int_equal (stat (log, &sb), -1);
  assert_reads (o, -1, before);
  fssnap_origin_close (o);
  free (before);
  harness_free (h);
}

/* Faults on the log while a killed process's log is replayed at start:
 * every operation times EIO once, EIO for ever, ENOSPC, ENOMEM and short
 * transfers.  The open either fails or has replayed the log; either way
 * the open after the fault is gone has every acknowledged write and the
 * snapshot exact: a fault never makes the log lose what it holds.
 */
static void
test_replay_under_faults (void **state)
{
  (void) state;
  static const struct { int err, times; } faults[] = {
    { -EIO, 1 }, { -EIO, -1 }, { -ENOSPC, -1 }, { -ENOMEM, -1 },
    { HARNESS_SHORT, -1 },
  };
  unsigned cells = 0, hit = 0, refused = 0;
  for (int op = 0; op < HOP_NOPS; op++)
    for (size_t k = 0; k < sizeof faults / sizeof faults[0]; k++) {
      struct harness *h = harness_new (SIZE);
      char *before = harness_image (h);
      char *model = kill_staging_child (h);
      harness_fault (h, op, ".staging", faults[k].err, faults[k].times);
      struct fssnap_origin_opts oo = {
        .path = h->origin_path, .state_dir = h->dir, .io = &h->io,
      };
      struct fssnap_origin *o = NULL;
      int r = fssnap_origin_open (&oo, &o);
      cells++;
      hit += atomic_load (&h->fault.hits) > 0;
      harness_fault_clear (h);
      if (r == 0) {
        assert_reads (o, -1, model);
        assert_reads (o, 0, before);
        fssnap_origin_close (o);
      }
      else
        refused++;
      o = harness_origin (h, 0, 0);
      assert_reads (o, -1, model);
      assert_reads (o, 0, before);
      fssnap_origin_close (o);
      free (model);
      free (before);
      harness_free (h);
    }
  printf ("replay under faults: %u cells, %u with the operation in the "
          "replay, %u opens refused, no write lost\n", cells, hit, refused);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_reads_see_staged_writes),
    cmocka_unit_test (test_direct_reads_see_everything),
    cmocka_unit_test (test_fua_reaches_origin),
    cmocka_unit_test (test_staged_bytes_bounded),
    cmocka_unit_test (test_kill_loses_no_acknowledged_write),
    cmocka_unit_test (test_replay_under_faults),
    cmocka_unit_test (test_log_without_header_is_removed),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
