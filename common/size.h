/* SPDX-License-Identifier: MIT */
/* Human sizes: "4096", "64k", "1.5g" is refused, "2T"; powers of 1024. */
#ifndef FSSNAP_SIZE_H
#define FSSNAP_SIZE_H

#include <stdint.h>

/* Parse a size with an optional k/m/g/t suffix (any case, optional "b" or
 * "ib" after it).  Returns 0, or -EINVAL for anything else (empty, sign,
 * junk, overflow).
 */
int size_parse (const char *str, uint64_t *sizep);

/* Format a size the way humans read it ("64 KiB", "1.5 GiB", "512 B"). */
void size_format (uint64_t size, char *buf, int len);

#endif /* FSSNAP_SIZE_H */
