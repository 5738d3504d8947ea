/* SPDX-License-Identifier: MIT */
/*
 * FUSE frontend of fssnapd: the device files.
 *
 *   MOUNTDIR/volume     the origin, read-write, a regular file of its size
 *   MOUNTDIR/snap/<N>   snapshot N, read-only, listed live from the engine
 *   MOUNTDIR/clone/<K>  writable clone K (when given a clone set)
 *
 * so that `losetup -f --show --direct-io=on MOUNTDIR/volume` gives a block
 * device to mkfs and mount, and `losetup -r` on a snapshot one to fsck or
 * mount -o ro.  Each request becomes one engine call; fsync on volume is
 * fssnap_origin_flush, fallocate(PUNCH_HOLE) a trim, ZERO_RANGE a zero.
 *
 * The session runs in libfuse's multithreaded loop on a thread of its own.
 */
#ifndef FSSNAP_DEVFS_H
#define FSSNAP_DEVFS_H

#include "libfssnap.h"

struct devfs;

struct devfs_opts {
  struct fssnap_origin *origin;
  struct fssnap_clones *clones; /* NULL: no clone/ directory */
  const char *mountdir;         /* created if missing */
  fssnap_log_fn log;            /* NULL: stderr */
  void *log_opaque;
  unsigned max_threads;         /* FUSE worker threads; 0: default (16) */
};

/* Unmount whatever a crashed run left on mountdir, mount the device files
 * there and serve them.  On failure, a message has been logged.
 */
int devfs_start (const struct devfs_opts *opts, struct devfs **devfsp);

/* Unmount (lazily if a loop device or a process still holds a file: the
 * kernel then fails their I/O, nobody hangs), join the threads, free.
 */
void devfs_stop (struct devfs *devfs);

/* Unmount a stale or live FUSE mount on mountdir, if there is one.
 * Returns 1 if something was unmounted, 0 if not, a negative errno.
 */
int devfs_cleanup_stale (const char *mountdir);

#endif /* FSSNAP_DEVFS_H */
