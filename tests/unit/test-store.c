/* Unit tests of the slot store, its index and its splitting (store_file.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/store.h"

static char dir[64];

static int
setup (void **state)
{
  (void) state;
  strcpy (dir, "/tmp/fssnap-store.XXXXXX");
  return mkdtemp (dir) ? 0 : -1;
}

static int
teardown (void **state)
{
  (void) state;
  char cmd[128];
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system (cmd);
}

static bool
exists (const char *name)
{
  char path[256];
  struct stat st;
  snprintf (path, sizeof path, "%s/%s", dir, name);
  return stat (path, &st) == 0;
}

static struct store *
make_store (uint64_t max_file_size, bool unlink)
{
  struct store_params p = {
    .io = fssnap_io_posix (), .location = dir, .name = "s",
    .chunksize = 4096, .nchunks = 10, .origin_size = 10 * 4096,
    .max_file_size = max_file_size, .unlink = unlink,
  };
  struct store *st = NULL;
  char err[256];
  assert_int_equal (store_file_create (&p, &st, err, sizeof err), 0);
  return st;
}

/* Slots are handed out in the order chunks are copied, 3 to a file of
 * 20 KiB (header, index block, 3 slots), the next file made when its first
 * slot is written.
 */
static void
test_store_slots_in_order (void **state)
{
  (void) state;
  struct store *st = make_store (5 * 4096, false);
  assert_int_equal (st->nfiles, 5);             /* 4 for 10 chunks, 1 spare */
  char buf[4096], out[100];
  unsigned f;
  uint64_t off;
  uint64_t order[] = { 9, 0, 4, 5 };
  for (int i = 0; i < 4; i++) {
    memset (buf, 'a' + i, sizeof buf);
    assert_int_equal (store_write_chunk (st, order[i], buf, sizeof buf), 0);
  }
  assert_int_equal (store_file_locate (st, 9, &f, &off), 0);
  assert_true (f == 0 && off == 8192);
  assert_int_equal (store_file_locate (st, 4, &f, &off), 0);
  assert_true (f == 0 && off == 16384);
  assert_int_equal (store_file_locate (st, 5, &f, &off), 0);
  assert_true (f == 1 && off == 8192);
  assert_int_equal (store_file_locate (st, 3, &f, &off), -ENOENT);
  assert_true (exists ("s.1"));
  assert_false (exists ("s.2"));
  assert_int_equal (store_read_chunk (st, 0, out, 4000, 96), 0);
  memset (buf, 'b', sizeof buf);
  assert_memory_equal (out, buf, 96);
  /* a chunk never written cannot be read */
  assert_int_equal (store_read_chunk (st, 3, out, 0, 10), -EIO);
  store_destroy (st, true);
  assert_false (exists ("s"));                 /* destroy removes them */
  assert_false (exists ("s.1"));
}

/* Reopened, a store finds its copies in its index and goes on after its
 * last slot; a chunk copied again (after a crash lost its commit) reads as
 * its later copy.
 */
static void
test_store_reopen_goes_on (void **state)
{
  (void) state;
  struct store_params p = {
    .io = fssnap_io_posix (), .location = dir, .name = "r",
    .chunksize = 4096, .nchunks = 2000, .origin_size = 2000 * 4096,
  };
  struct store *st = NULL;
  char err[256], why[256], buf[4096], out[4096];
  assert_int_equal (store_file_create (&p, &st, err, sizeof err), 0);
  for (int round = 0; round < 3; round++) {
    for (uint64_t c = round * 300u; c < round * 300u + 400; c++) {
      memset (buf, (int) (c * 7 + round), sizeof buf);
      assert_int_equal (store_write_chunk (st, c, buf, sizeof buf), 0);
    }
    assert_int_equal (store_sync (st), 0);
    store_destroy (st, false);
    assert_int_equal (store_file_open (&p, &st, err, sizeof err), 0);
  }
  for (uint64_t c = 0; c < 1000; c++) {
    int round = c < 300 ? 0 : c < 600 ? 1 : 2;
    assert_int_equal (store_check (st, c, why, sizeof why), 0);
    assert_int_equal (store_read_chunk (st, c, out, 0, sizeof out), 0);
    memset (buf, (int) (c * 7 + round), sizeof buf);
    assert_memory_equal (out, buf, sizeof buf);
  }
  assert_int_equal (store_check (st, 1000, why, sizeof why), -EBADMSG);
  assert_non_null (strstr (why, "no copy of chunk 1000"));
  store_destroy (st, true);
}

/* Split into files of 3 slots, a store keeps an index block per file and
 * finds every copy again after a restart, past the 512 slots of one block
 * and going on mid-file.
 */
static void
test_store_split_reopen (void **state)
{
  (void) state;
  struct store_params p = {
    .io = fssnap_io_posix (), .location = dir, .name = "x",
    .chunksize = 4096, .nchunks = 700, .origin_size = 700 * 4096,
    .max_file_size = 5 * 4096,
  };
  struct store *st = NULL;
  char err[256], why[256], buf[4096], out[4096];
  assert_int_equal (store_file_create (&p, &st, err, sizeof err), 0);
  for (int round = 0; round < 2; round++) {
    for (uint64_t i = round * 600u; i < (round ? 650u : 600u); i++) {
      uint64_t c = i * 3 % 700;      /* 650 distinct chunks */
      memset (buf, (int) c, sizeof buf);
      assert_int_equal (store_write_chunk (st, c, buf, sizeof buf), 0);
    }
    assert_int_equal (store_sync (st), 0);
    store_destroy (st, false);
    assert_int_equal (store_file_open (&p, &st, err, sizeof err), 0);
  }
  for (uint64_t i = 0; i < 650; i++) {
    uint64_t c = i * 3 % 700;
    assert_int_equal (store_check (st, c, why, sizeof why), 0);
    assert_int_equal (store_read_chunk (st, c, out, 0, sizeof out), 0);
    memset (buf, (int) c, sizeof buf);
    assert_memory_equal (out, buf, sizeof buf);
  }
  store_destroy (st, true);
}

/* Copies in buffers from store_buf_alloc go with O_DIRECT, the short last
 * chunk too (padded with zeros); others through the page cache.
 */
static void
test_store_direct_and_buffered (void **state)
{
  (void) state;
  struct store_params p = {
    .io = fssnap_io_posix (), .location = dir, .name = "d",
    .chunksize = 8192, .nchunks = 4, .origin_size = 4 * 8192 - 1000,
  };
  struct store *st = NULL;
  char err[256], stack[8192], out[8192];
  assert_int_equal (store_file_create (&p, &st, err, sizeof err), 0);
  unsigned char *b = store_buf_alloc (8192 - 1000);
  memset (b, 'z', 8192 - 1000);
  assert_int_equal (store_write_chunk (st, 3, b, 8192 - 1000), 0);
  memset (stack, 'y', sizeof stack);
  assert_int_equal (store_write_chunk (st, 1, stack, sizeof stack), 0);
  assert_int_equal (store_read_chunk (st, 3, out, 0, 8192 - 1000), 0);
  assert_memory_equal (out, b, 8192 - 1000);
  assert_int_equal (store_read_chunk (st, 1, out, 100, 8000), 0);
  assert_memory_equal (out, stack, 8000);
  unsigned f;
  uint64_t off;
  assert_int_equal (store_file_locate (st, 3, &f, &off), 0);
  char path[128];
  snprintf (path, sizeof path, "%s/d", dir);
  FILE *fp = fopen (path, "r");
  char pad[1000], zeros[1000] = { 0 };
  assert_int_equal (fseek (fp, (long) off + 8192 - 1000, SEEK_SET), 0);
  assert_int_equal (fread (pad, 1, sizeof pad, fp), sizeof pad);
  assert_memory_equal (pad, zeros, sizeof pad);  /* no stray memory */
  fclose (fp);
  free (b);
  store_destroy (st, true);
}

/* A store file of fssnap 0.1 (the copy of chunk 0 at offset 0, no header)
 * is refused with the reason; one cut off before its header (zeros) holds
 * nothing, and takes copies again.
 */
static void
test_store_headers (void **state)
{
  (void) state;
  char path[128], err[256] = "", why[256];
  snprintf (path, sizeof path, "%s/old", dir);
  FILE *fp = fopen (path, "w");
  for (int i = 0; i < 8192; i++)
    fputc ('0' + i % 10, fp);
  fclose (fp);
  struct store_params p = {
    .io = fssnap_io_posix (), .location = path, .chunksize = 4096,
    .nchunks = 2, .origin_size = 8192,
  };
  struct store *st = NULL;
  assert_int_equal (store_file_open (&p, &st, err, sizeof err), -EPROTO);
  assert_non_null (strstr (err, "sparse layout"));
  assert_int_equal (truncate (path, 0), 0);
  assert_int_equal (truncate (path, 8192), 0);  /* zeros */
  assert_int_equal (store_file_open (&p, &st, err, sizeof err), 0);
  assert_int_equal (store_check (st, 0, why, sizeof why), -EBADMSG);
  char buf[4096] = "again", out[6];
  assert_int_equal (store_write_chunk (st, 1, buf, sizeof buf), 0);
  assert_int_equal (store_sync (st), 0);
  store_destroy (st, false);
  assert_int_equal (store_file_open (&p, &st, err, sizeof err), 0);
  assert_int_equal (store_check (st, 1, why, sizeof why), 0);
  assert_int_equal (store_read_chunk (st, 1, out, 0, 6), 0);
  assert_string_equal (out, "again");
  store_destroy (st, true);
}

static void
test_store_unlink (void **state)
{
  (void) state;
  struct store *st = make_store (0, true);
  assert_int_equal (st->nfiles, 1);
  assert_false (exists ("s"));                 /* unlinked, still usable */
  char buf[4096] = "hello", out[6];
  assert_int_equal (store_write_chunk (st, 9, buf, sizeof buf), 0);
  assert_int_equal (store_read_chunk (st, 9, out, 0, 6), 0);
  assert_string_equal (out, "hello");
  store_destroy (st, true);
}

static void
test_store_refuses_existing_file (void **state)
{
  (void) state;
  char path[128], err[256] = "";
  snprintf (path, sizeof path, "%s/taken", dir);
  FILE *f = fopen (path, "w");
  fputs ("user data", f);
  fclose (f);
  struct store_params p = {
    .io = fssnap_io_posix (), .location = path, .name = "ignored",
    .chunksize = 4096, .nchunks = 10,
  };
  struct store *st = NULL;
  assert_int_equal (store_file_create (&p, &st, err, sizeof err), -EEXIST);
  assert_non_null (strstr (err, "cannot create backing store"));
  struct stat sb;
  assert_int_equal (stat (path, &sb), 0);      /* user's file untouched */
  assert_int_equal (sb.st_size, 9);
}

/* The store as an interface: reopened, a persistent store says which
 * copies it holds (check) and how many bytes (usage); the transient one
 * is the same files, never synced, and says it does not survive.
 */
static void
test_store_ops_check_usage_transient (void **state)
{
  (void) state;
  struct store_params p = {
    .io = fssnap_io_posix (), .location = dir, .name = "t",
    .chunksize = 4096, .nchunks = 10, .origin_size = 10 * 4096 - 100,
  };
  struct store *st = NULL;
  char err[256], why[256];
  char buf[4096];
  memset (buf, 'x', sizeof buf);
  assert_int_equal (store_file_ops.create (&p, &st, err, sizeof err), 0);
  assert_true (store_persistent (st));
  assert_int_equal (store_write_chunk (st, 2, buf, sizeof buf), 0);
  assert_int_equal (store_write_chunk (st, 9, buf, 4096 - 100), 0);
  assert_int_equal (store_usage (st), 2 * 4096);
  assert_int_equal (store_sync (st), 0);
  store_destroy (st, false);

  assert_int_equal (store_file_ops.open (&p, &st, err, sizeof err), 0);
  assert_int_equal (store_usage (st), 0);
  assert_int_equal (store_check (st, 2, why, sizeof why), 0);
  assert_int_equal (store_check (st, 9, why, sizeof why), 0);  /* short one */
  assert_int_equal (store_usage (st), 2 * 4096);
  store_destroy (st, false);
  char path[128];
  snprintf (path, sizeof path, "%s/t", dir);
  assert_int_equal (truncate (path, 3 * 4096), 0);
  assert_int_equal (store_transient_ops.open (&p, &st, err, sizeof err), 0);
  assert_false (store_persistent (st));
  assert_int_equal (store_check (st, 9, why, sizeof why), -EBADMSG);
  assert_non_null (strstr (why, "truncated"));
  assert_int_equal (store_sync (st), 0);
  store_destroy (st, true);
  assert_false (exists ("t"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_store_slots_in_order, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_reopen_goes_on, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_split_reopen, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_direct_and_buffered, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_headers, setup, teardown),
    cmocka_unit_test_setup_teardown (test_store_unlink, setup, teardown),
    cmocka_unit_test_setup_teardown (test_store_refuses_existing_file, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_ops_check_usage_transient,
                                     setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
