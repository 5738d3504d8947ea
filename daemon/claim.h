/* SPDX-License-Identifier: MIT */
/*
 * The origin is ours alone (claim.c).  Every write to the origin must go
 * through fssnapd, so:
 *
 *  - a block device is opened with O_EXCL, the kernel's exclusive claim:
 *    while we hold it nothing can mount it, stack device-mapper or md on
 *    it, swap on it or claim it otherwise, and the kernel refuses the
 *    same to the whole disk of a partition we serve and to the partitions
 *    of a disk we serve.  When the claim fails (EBUSY), or a loop device
 *    (which opens its backing device without claiming it) sits on the
 *    device or on one of those relatives, fssnapd refuses to start and
 *    says who uses it: holders in sysfs, the mount table, /proc/swaps,
 *    loop devices, another fssnapd's flock, processes that have it open.
 *    A loop device set up on it (or a relative) later is not stopped by
 *    the kernel: it is reported like an open elsewhere (below).
 *  - an image file cannot be claimed: fssnapd refuses to start when a loop
 *    device is backed by it, and otherwise takes a write lease on the one
 *    descriptor it has (F_SETLEASE, F_WRLCK).  When anyone else opens the
 *    file, the kernel signals the lease break: fssnapd logs a warning at
 *    once, counts it (fssnap stats: origin opened elsewhere), gives the
 *    lease up as the kernel requires and takes it again once the other
 *    opener is gone.  Where the file system has no leases, the image
 *    cannot be watched and fssnapd says so.
 */
#ifndef FSSNAP_DAEMON_CLAIM_H
#define FSSNAP_DAEMON_CLAIM_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "libfssnap.h"

/* The signal the kernel sends when our lease is broken; the daemon keeps
 * it blocked and waits for it with its stop signals (claim_watch_wait).
 */
#define CLAIM_LEASE_SIGNAL SIGIO

/* Refuse a block device that something else uses: called after the
 * O_EXCL open of path (device number rdev) failed with EBUSY (busy) or
 * succeeded (!busy, then only loop devices over it or its relatives are
 * looked for, since the kernel's claim leaves them out).  Returns -1 with
 * one line in err when the device must not be served, else 0 (busy and
 * nobody found: err names the exclusive claim and returns -1 too).
 */
int claim_blockdev_check (const char *path, dev_t rdev, bool busy,
                          char *err, size_t errlen);

/* Refuse an image file that backs a loop device: -1 with err, else 0. */
int claim_image_check (const char *path, char *err, size_t errlen);

/* Watching the origin once served: an image file through a lease on the
 * engine's descriptor; a block device (which O_EXCL claims against
 * everything but plain opens) for loop devices set up on it or on its
 * relatives, every two seconds.
 */
struct claim_watch {
  int fd;                       /* the leased image; -1: none */
  const char *path;
  struct fssnap_origin *origin;
  bool held;                    /* the lease is ours now */
  bool broken_logged;           /* "opened elsewhere" said since taken */
  bool blockdev;
  dev_t rdev;                   /* the block device watched */
  unsigned loops;               /* loop devices over it at the last look */
};

/* Start watching path through fd (the engine's descriptor).  Logs what
 * could not be watched and why.
 */
void claim_watch_start (struct claim_watch *w, int fd, const char *path,
                        struct fssnap_origin *origin);

/* Wait for one of the signals in set (blocked in every thread), handling
 * lease breaks, re-taking the lease once a second while it is not held
 * and looking for new loop devices over a block device, and return the
 * first other signal.
 */
int claim_watch_wait (struct claim_watch *w, const sigset_t *set);

#endif /* FSSNAP_DAEMON_CLAIM_H */
