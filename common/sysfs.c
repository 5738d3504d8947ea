/* SPDX-License-Identifier: MIT */
/* One-line sysfs files (see sysfs.h). */
#include <stdio.h>
#include <string.h>

#include "common/sysfs.h"

int
sysfs_read_line (const char *path, char *buf, size_t len)
{
  FILE *fp = fopen (path, "re");
  int ok;

  if (fp == NULL)
    return -1;
  ok = fgets (buf, len, fp) != NULL;
  fclose (fp);
  if (!ok)
    return -1;
  buf[strcspn (buf, "\n")] = '\0';
  return 0;
}
