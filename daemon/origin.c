/* SPDX-License-Identifier: MIT */
/*
 * Checking and locking the origin before the engine takes it over: one
 * fssnapd per origin, enforced by an exclusive flock on the origin itself,
 * which the kernel drops when the daemon dies, so no stale state is ever
 * left.  A block device is also claimed with O_EXCL, and neither kind is
 * served while something else uses it (claim.c says who).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/claim.h"
#include "daemon/setup.h"

int
daemon_origin_lock (const char *path, int *fdp, char *err, size_t errlen)
{
  struct stat st;
  int fd;

  if (stat (path, &st) == 0
      && !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode))) {
    snprintf (err, errlen, "origin %s is not a regular file or block device",
              path);
    return -1;
  }
  bool blk = stat (path, &st) == 0 && S_ISBLK (st.st_mode);
  fd = open (path, O_RDWR | O_CLOEXEC | (blk ? O_EXCL : 0));
  if (fd < 0 && blk && errno == EBUSY) {
    claim_blockdev_check (path, st.st_rdev, true, err, errlen);
    return -1;
  }
  if (fd < 0) {
    snprintf (err, errlen, "cannot open origin %s: %s", path,
              strerror (errno));
    return -1;
  }
  if (flock (fd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      snprintf (err, errlen, "origin %s is already served by another fssnapd",
                path);
    else
      snprintf (err, errlen, "cannot lock origin %s: %s", path,
                strerror (errno));
    close (fd);
    return -1;
  }
  if ((blk ? claim_blockdev_check (path, st.st_rdev, false, err, errlen)
           : claim_image_check (path, err, errlen)) < 0) {
    close (fd);
    return -1;
  }
  *fdp = fd;
  return 0;
}
