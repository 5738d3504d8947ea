/* The public header compiles on its own: nothing is included before it. */
#include "libfssnap.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void
test_header_constants (void **state)
{
  (void) state;
  assert_true (FSSNAP_CHUNKSIZE_MIN <= FSSNAP_CHUNKSIZE_DEFAULT);
  assert_true (FSSNAP_CHUNKSIZE_DEFAULT <= FSSNAP_CHUNKSIZE_MAX);
  assert_string_equal (fssnap_state_name (FSSNAP_STATE_DISABLED), "disabled");
  assert_non_null (fssnap_io_posix ()->pwrite);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_header_constants),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
