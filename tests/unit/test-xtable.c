/* Unit tests of the translation table (engine/xtable.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/xtable.h"

static struct xentry *
entry (uint64_t chunk, char fill)
{
  struct xentry *e = calloc (1, sizeof *e);
  e->chunk = chunk;
  e->len = 16;
  e->data = malloc (16);
  memset (e->data, fill, 16);
  return e;
}

static void
test_xtable_insert_read_remove (void **state)
{
  (void) state;
  struct xtable t;
  assert_int_equal (xtable_init (&t, 4), 0);
  struct xentry *es[100];
  for (int i = 0; i < 100; i++) {               /* collide in buckets */
    es[i] = entry (i * 1024, (char) i);
    xtable_insert (&t, es[i]);
  }
  assert_int_equal (xtable_count (&t), 100);
  char buf[4];
  assert_int_equal (xtable_read (&t, 37 * 1024, buf, 3, 4), XTABLE_HIT);
  assert_memory_equal (buf, "\x25\x25\x25\x25", 4);
  assert_int_equal (xtable_read (&t, 5, buf, 0, 4), XTABLE_MISS);
  free (xtable_remove (&t, es[37]));
  assert_int_equal (xtable_read (&t, 37 * 1024, buf, 0, 4), XTABLE_MISS);
  assert_int_equal (xtable_count (&t), 99);
  free (xtable_fail (&t, es[38]));
  assert_int_equal (xtable_read (&t, 38 * 1024, buf, 0, 4), XTABLE_FAILED);
  xtable_destroy (&t);                  /* frees the rest, tombstone too */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_xtable_insert_read_remove),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
