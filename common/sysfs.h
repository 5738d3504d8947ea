/* SPDX-License-Identifier: MIT */
/*
 * Reading the one-line files of sysfs and procfs (/sys/block/X/size,
 * .../loop/backing_file), shared by the loop, claim and fsmap code.
 */
#ifndef FSSNAP_COMMON_SYSFS_H
#define FSSNAP_COMMON_SYSFS_H

#include <stddef.h>

/* The first line of path, without its newline, in buf.  Returns 0, or -1
 * when the file cannot be opened or is empty.
 */
int sysfs_read_line (const char *path, char *buf, size_t len);

#endif /* FSSNAP_COMMON_SYSFS_H */
