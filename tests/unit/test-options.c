/* Unit tests of the -o option string parser (control/options.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "control/options.h"

static void
test_options_all (void **state)
{
  (void) state;
  struct fssnap_create_opts o = { 0 };
  char *st = NULL, err[200];
  assert_int_equal (ctl_options_parse (
      "backing-store=/var/tmp/x,maxsize=1g,chunksize=4k,maxfilesize=64m,"
      "unlink,transient", &o, &st, err, sizeof err), 0);
  assert_string_equal (o.backing_store, "/var/tmp/x");
  assert_int_equal (o.maxsize, UINT64_C (1) << 30);
  assert_int_equal (o.chunksize, 4096);
  assert_int_equal (o.max_backfile_size, 64 << 20);
  assert_true (o.unlink && o.transient);
  free (st);
}

static void
test_options_alias_and_empty (void **state)
{
  (void) state;
  struct fssnap_create_opts o = { 0 };
  char *st = NULL, err[200];
  assert_int_equal (ctl_options_parse ("bs=/tmp", &o, &st, err,
                                              sizeof err), 0);
  assert_string_equal (o.backing_store, "/tmp");
  free (st);
  struct fssnap_create_opts e = { .maxsize = 7 };
  assert_int_equal (ctl_options_parse ("", &e, &st, err, sizeof err), 0);
  assert_int_equal (e.maxsize, 7);      /* defaults untouched */
  free (st);
}

static void
expect_error (const char *optstr, const char *needle)
{
  struct fssnap_create_opts o = { .maxsize = 42 };
  char *st = NULL, err[200] = "";
  assert_int_equal (ctl_options_parse (optstr, &o, &st, err,
                                              sizeof err), -EINVAL);
  assert_non_null (strstr (err, needle));
  assert_null (st);
  assert_int_equal (o.maxsize, 42);     /* nothing changed */
  assert_null (o.backing_store);
}

static void
test_options_errors (void **state)
{
  (void) state;
  expect_error ("bogus", "unknown option 'bogus'");
  expect_error ("maxsize", "needs a value");
  expect_error ("maxsize=", "needs a value");
  expect_error ("maxsize=lots", "not a size");
  expect_error ("maxsize=0", "not a size");
  expect_error ("chunksize=3000", "power of two");
  expect_error ("chunksize=256", "power of two");
  expect_error ("chunksize=2m", "power of two");
  expect_error ("unlink=yes", "takes no value");
  expect_error ("maxsize=1m,maxsize=2m", "given twice");
  expect_error ("bs=/a,backing-store=/b", "given twice");
  expect_error ("backing-store=/x,unlink,nope", "unknown option 'nope'");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_options_all),
    cmocka_unit_test (test_options_alias_and_empty),
    cmocka_unit_test (test_options_errors),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
