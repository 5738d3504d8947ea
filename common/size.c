/* SPDX-License-Identifier: MIT */
/* Size parsing and formatting: see size.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <strings.h>

#include "common/size.h"

static int
size_shift (const char *suffix, unsigned *shiftp)
{
  static const char units[] = "kmgt";
  if (*suffix == '\0') {
    *shiftp = 0;
    return 0;
  }
  for (unsigned i = 0; units[i]; i++) {
    if (tolower ((unsigned char) *suffix) != units[i])
      continue;
    const char *rest = suffix + 1;
    if (*rest == '\0' || strcasecmp (rest, "b") == 0
        || strcasecmp (rest, "ib") == 0) {
      *shiftp = 10 * (i + 1);
      return 0;
    }
  }
  if (strcasecmp (suffix, "b") == 0) {
    *shiftp = 0;
    return 0;
  }
  return -EINVAL;
}

int
size_parse (const char *str, uint64_t *sizep)
{
  uint64_t n = 0;
  const char *p = str;
  unsigned shift;

  if (!isdigit ((unsigned char) *p))
    return -EINVAL;
  for (; isdigit ((unsigned char) *p); p++) {
    unsigned d = *p - '0';
    if (n > (UINT64_MAX - d) / 10)
      return -EINVAL;
    n = n * 10 + d;
  }
  if (size_shift (p, &shift) < 0)
    return -EINVAL;
  if (shift && n > (UINT64_MAX >> shift))
    return -EINVAL;
  *sizep = n << shift;
  return 0;
}

void
size_format (uint64_t size, char *buf, int len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  unsigned u = 0;
  double v = size;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf (buf, len, "%llu B", (unsigned long long) size);
  else if (v == (uint64_t) v)
    snprintf (buf, len, "%llu %s", (unsigned long long) v, units[u]);
  else
    snprintf (buf, len, "%.1f %s", v, units[u]);
}
