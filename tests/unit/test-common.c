/* Unit tests of common/: chunk bitmaps and size parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/bitmap.h"
#include "common/crc32c.h"
#include "common/size.h"

static void
test_bitmap_set_test_count (void **state)
{
  (void) state;
  struct bitmap bm;
  assert_int_equal (bitmap_init (&bm, 200), 0);
  assert_int_equal (bitmap_count (&bm), 0);
  assert_false (bitmap_set (&bm, 0));
  assert_true (bitmap_set (&bm, 0));
  bitmap_set (&bm, 63);
  bitmap_set (&bm, 64);
  bitmap_set (&bm, 199);
  assert_true (bitmap_test (&bm, 63) && bitmap_test (&bm, 64));
  assert_false (bitmap_test (&bm, 65));
  assert_int_equal (bitmap_count (&bm), 4);
  bitmap_free (&bm);
}

static void
test_bitmap_range (void **state)
{
  (void) state;
  struct bitmap bm;
  assert_int_equal (bitmap_init (&bm, 300), 0);
  bitmap_set_range (&bm, 10, 130);      /* crosses two word edges */
  assert_int_equal (bitmap_count (&bm), 130);
  assert_false (bitmap_test (&bm, 9));
  assert_true (bitmap_test (&bm, 10) && bitmap_test (&bm, 139));
  assert_false (bitmap_test (&bm, 140));
  bitmap_set_range (&bm, 250, 1000);    /* clipped at the end */
  assert_int_equal (bitmap_count (&bm), 130 + 50);
  bitmap_set_range (&bm, 400, 5);       /* wholly outside: nothing */
  assert_int_equal (bitmap_count (&bm), 180);
  bitmap_set_range (&bm, 0, 0);
  assert_int_equal (bitmap_count (&bm), 180);
  bitmap_free (&bm);
}

static void
test_bitmap_find (void **state)
{
  (void) state;
  struct bitmap bm;
  assert_int_equal (bitmap_init (&bm, 130), 0);
  assert_int_equal (bitmap_find (&bm, 0, true), 130);
  assert_int_equal (bitmap_find (&bm, 5, false), 5);
  bitmap_set_range (&bm, 70, 60);       /* 70..129 */
  assert_int_equal (bitmap_find (&bm, 0, true), 70);
  assert_int_equal (bitmap_find (&bm, 70, false), 130);
  assert_int_equal (bitmap_find (&bm, 129, true), 129);
  assert_int_equal (bitmap_find (&bm, 130, true), 130);
  bitmap_free (&bm);
}

static void
test_size_parse (void **state)
{
  (void) state;
  uint64_t v;
  assert_int_equal (size_parse ("4096", &v), 0);
  assert_int_equal (v, 4096);
  assert_int_equal (size_parse ("64k", &v), 0);
  assert_int_equal (v, 65536);
  assert_int_equal (size_parse ("64KiB", &v), 0);
  assert_int_equal (v, 65536);
  assert_int_equal (size_parse ("2M", &v), 0);
  assert_int_equal (v, 2 << 20);
  assert_int_equal (size_parse ("1g", &v), 0);
  assert_int_equal (v, UINT64_C (1) << 30);
  assert_int_equal (size_parse ("3tb", &v), 0);
  assert_int_equal (v, UINT64_C (3) << 40);
  assert_int_equal (size_parse ("10b", &v), 0);
  assert_int_equal (v, 10);
  const char *bad[] = { "", "k", "-1", "+5", "1.5g", "12x", "1kk", " 1",
                        "99999999999999999999", "16777216t", "1 k" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal (size_parse (bad[i], &v), -EINVAL);
}

static void
test_size_format (void **state)
{
  (void) state;
  char buf[32];
  size_format (512, buf, sizeof buf);
  assert_string_equal (buf, "512 B");
  size_format (65536, buf, sizeof buf);
  assert_string_equal (buf, "64 KiB");
  size_format (UINT64_C (3) << 29, buf, sizeof buf);
  assert_string_equal (buf, "1.5 GiB");
}

/* The standard check value, and any split of the input gives the same. */
static void
test_crc32c (void **state)
{
  (void) state;
  assert_int_equal (crc32c (0, "123456789", 9), 0xE3069283u);
  assert_int_equal (crc32c (0, "", 0), 0);
  unsigned char buf[1000];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char) (i * 31 + 7);
  uint32_t whole = crc32c (0, buf, sizeof buf);
  for (size_t cut = 0; cut <= 17; cut++)
    assert_int_equal (crc32c (crc32c (0, buf, cut), buf + cut,
                              sizeof buf - cut), whole);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_bitmap_set_test_count),
    cmocka_unit_test (test_bitmap_range),
    cmocka_unit_test (test_bitmap_find),
    cmocka_unit_test (test_size_parse),
    cmocka_unit_test (test_size_format),
    cmocka_unit_test (test_crc32c),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
