/* Unit tests of the sparse-file store and its splitting (store_file.c). */
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

static void
test_store_split_locate (void **state)
{
  (void) state;
  struct store *st = make_store (3 * 4096 + 100, false);  /* 3 per file */
  assert_int_equal (st->nfiles, 4);
  unsigned f;
  uint64_t off;
  store_file_locate (st, 0, &f, &off);
  assert_true (f == 0 && off == 0);
  store_file_locate (st, 4, &f, &off);
  assert_true (f == 1 && off == 4096);
  store_file_locate (st, 9, &f, &off);
  assert_true (f == 3 && off == 0);
  store_destroy (st, true);
}

static void
test_store_lazy_files_and_data (void **state)
{
  (void) state;
  struct store *st = make_store (2 * 4096, false);
  assert_true (exists ("s"));
  assert_false (exists ("s.2"));
  char buf[4096], out[100];
  memset (buf, 'x', sizeof buf);
  assert_int_equal (store_write_chunk (st, 5, buf, sizeof buf), 0);
  assert_true (exists ("s.2"));                /* chunk 5 -> file 2 */
  assert_false (exists ("s.1"));
  assert_int_equal (store_read_chunk (st, 5, out, 4000, 96), 0);
  assert_memory_equal (out, buf, 96);
  /* a chunk in a file never created cannot be read */
  assert_int_equal (store_read_chunk (st, 3, out, 0, 10), -EIO);
  store_destroy (st, true);
  assert_false (exists ("s"));                 /* destroy removes them */
  assert_false (exists ("s.2"));
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
    cmocka_unit_test_setup_teardown (test_store_split_locate, setup, teardown),
    cmocka_unit_test_setup_teardown (test_store_lazy_files_and_data, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_unlink, setup, teardown),
    cmocka_unit_test_setup_teardown (test_store_refuses_existing_file, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_store_ops_check_usage_transient,
                                     setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
