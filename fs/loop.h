/* SPDX-License-Identifier: MIT */
/*
 * Loop devices over fssnapd's device files (fssnap attach/detach), found
 * again through /sys/block/loopN/loop/backing_file.  Loop devices are
 * global: these calls only ever touch the ones backed by the file given.
 */
#ifndef FSSNAP_LOOP_H
#define FSSNAP_LOOP_H

#include <stddef.h>
#include <sys/types.h>

/* The first loop device backed by file, in dev ("/dev/loop3").  Returns 1
 * if there is one, 0 if not.
 */
int loop_find (const char *file, char *dev, size_t len);

/* Set up a free loop device on file with direct I/O (read-only if asked)
 * and put its path in dev.  Returns 0 or a negative errno.
 */
int loop_attach (const char *file, int read_only, char *dev, size_t len);

/* Detach the loop device dev.  -EBUSY when something is mounted on it;
 * -ENXIO when it is not set up.
 */
int loop_detach (const char *dev);

/* True when the block device numbered devnum is a loop device backed by
 * file, or a partition of one: a file system there lives on that file.
 */
int loop_backs_dev (const char *file, dev_t devnum);

/* Refuse a backing store on the volume itself: store (a directory or a
 * file, existing or not) must not sit on a file system whose device is
 * one of files (block devices) or a loop device over one of them (the
 * FUSE volume file, an image origin), partitions included.  Returns 0, or
 * -EXDEV with a message in err.
 */
int loop_store_check (const char *store, const char *const *files,
                      char *err, size_t errlen);

#endif /* FSSNAP_LOOP_H */
