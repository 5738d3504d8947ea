/* SPDX-License-Identifier: MIT */
/*
 * Freeze and thaw a mounted file system (FIFREEZE/FITHAW), so that while a
 * snapshot is created everything the file system wrote is on the volume
 * and nothing more is written.  The CLI freezes, asks fssnapd to create and
 * thaws whatever happens; see cli/ for how it survives its own death.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/fs.h>

#include "fs/fs.h"

/* A mount point's root has another device than its parent, or is "/". */
static int
fs_is_mount_root (int fd)
{
  struct stat self, parent;

  if (fstat (fd, &self) == -1 || fstatat (fd, "..", &parent, 0) == -1)
    return -errno;
  if (self.st_dev != parent.st_dev || self.st_ino == parent.st_ino)
    return 1;
  return 0;
}

int
fs_freeze (const char *mountpoint, int *fdp)
{
  int fd, rc;

  fd = open (mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  rc = fs_is_mount_root (fd);
  if (rc == 0)
    rc = -EINVAL;
  else if (rc > 0 && ioctl (fd, FIFREEZE, 0) == -1)
    rc = -errno;
  if (rc < 0) {
    close (fd);
    return rc;
  }
  *fdp = fd;
  return 0;
}

int
fs_thaw (int fd)
{
  int rc = 0;

  if (ioctl (fd, FITHAW, 0) == -1)
    rc = -errno;
  close (fd);
  return rc;
}
