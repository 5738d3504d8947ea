/* SPDX-License-Identifier: MIT */
/*
 * Loop devices over the device files (see loop.h): LOOP_CTL_GET_FREE and
 * LOOP_CONFIGURE to attach, LOOP_CLR_FD to detach, sysfs to find them.
 * Direct I/O always: the loop driver then skips its own page cache, which
 * over FUSE gives several times the small-write rate of a buffered loop.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/loop.h>

#include "common/sysfs.h"
#include "fs/loop.h"

/* Is /sys/block/NAME a loop device backed by file (a canonical path)? */
static int
loop_is_backed_by (const char *name, const char *file)
{
  char path[PATH_MAX], backing[PATH_MAX];

  if (strncmp (name, "loop", 4) != 0)
    return 0;
  snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", name);
  return sysfs_read_line (path, backing, sizeof backing) == 0 &&
    strcmp (backing, file) == 0;
}

int
loop_find (const char *file, char *dev, size_t len)
{
  char canon[PATH_MAX];
  struct dirent *e;
  DIR *d;
  int found = 0;

  if (realpath (file, canon) == NULL)
    return 0;
  d = opendir ("/sys/block");
  while (d && !found && (e = readdir (d)) != NULL)
    if (loop_is_backed_by (e->d_name, canon)) {
      snprintf (dev, len, "/dev/%s", e->d_name);
      found = 1;
    }
  if (d)
    closedir (d);
  return found;
}

/* Configure loop device number n on fd; -EBUSY if someone took it. */
static int
loop_configure (int n, int fd, int read_only, char *dev, size_t len)
{
  struct loop_config cfg = { .fd = fd };
  int lfd, rc = 0;

  snprintf (dev, len, "/dev/loop%d", n);
  lfd = open (dev, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (lfd == -1)
    return -errno;
  cfg.info.lo_flags = LO_FLAGS_DIRECT_IO | (read_only ? LO_FLAGS_READ_ONLY
                                                      : 0);
  if (ioctl (lfd, LOOP_CONFIGURE, &cfg) == -1)
    rc = -errno;
  close (lfd);
  return rc;
}

int
loop_attach (const char *file, int read_only, char *dev, size_t len)
{
  int fd, ctl, n, rc = -EBUSY, tries;

  fd = open (file, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl == -1) {
    rc = -errno;
    close (fd);
    return rc;
  }
  /* Another process may take the free device first: ask again. */
  for (tries = 0; rc == -EBUSY && tries < 10; tries++) {
    n = ioctl (ctl, LOOP_CTL_GET_FREE);
    rc = n < 0 ? -errno : loop_configure (n, fd, read_only, dev, len);
  }
  close (ctl);
  close (fd);
  return rc;
}

/* Is the block device devnum mounted anywhere (this mount namespace)? */
static int
loop_is_mounted (dev_t devnum)
{
  char line[4096], want[32];
  FILE *fp = fopen ("/proc/self/mountinfo", "re");
  int found = 0;

  if (fp == NULL)
    return 0;
  snprintf (want, sizeof want, " %u:%u ", major (devnum), minor (devnum));
  while (!found && fgets (line, sizeof line, fp))
    found = strstr (line, want) != NULL;
  fclose (fp);
  return found;
}

int
loop_detach (const char *dev)
{
  struct stat st;
  int fd, rc = 0;

  if (stat (dev, &st) == -1)
    return -errno;
  if (!S_ISBLK (st.st_mode))
    return -ENOTBLK;
  if (loop_is_mounted (st.st_rdev))
    return -EBUSY;
  fd = open (dev, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -errno;
  if (ioctl (fd, LOOP_CLR_FD) == -1)
    rc = -errno;
  close (fd);
  return rc;
}

/* Does /sys/class/block/NAME (a disk or a partition) carry devnum? */
static int
loop_sys_dev_is (const char *name, dev_t devnum)
{
  char path[PATH_MAX], buf[32];
  unsigned ma, mi;

  snprintf (path, sizeof path, "/sys/class/block/%s/dev", name);
  return sysfs_read_line (path, buf, sizeof buf) == 0 &&
    sscanf (buf, "%u:%u", &ma, &mi) == 2 && makedev (ma, mi) == devnum;
}

int
loop_backs_dev (const char *file, dev_t devnum)
{
  char canon[PATH_MAX], disk[NAME_MAX + 1], path[PATH_MAX];
  struct dirent *e;
  DIR *d;

  if (realpath (file, canon) == NULL)
    return 0;
  /* The disk of a partition is its parent directory in sysfs. */
  snprintf (path, sizeof path, "/sys/dev/block/%u:%u/partition",
            major (devnum), minor (devnum));
  d = opendir ("/sys/class/block");
  while (d && (e = readdir (d)) != NULL) {
    if (!loop_sys_dev_is (e->d_name, devnum))
      continue;
    snprintf (disk, sizeof disk, "%s", e->d_name);
    if (access (path, F_OK) == 0 && strncmp (disk, "loop", 4) == 0)
      disk[4 + strcspn (disk + 4, "p")] = '\0';  /* loop3p1 -> loop3 */
    closedir (d);
    return loop_is_backed_by (disk, canon);
  }
  if (d)
    closedir (d);
  return 0;
}

/* The whole disk of a partition, or devnum itself. */
static dev_t
loop_disk_of (dev_t devnum)
{
  char path[PATH_MAX], buf[32];
  unsigned ma, mi;

  snprintf (path, sizeof path, "/sys/dev/block/%u:%u/partition",
            major (devnum), minor (devnum));
  if (access (path, F_OK) != 0)
    return devnum;
  snprintf (path, sizeof path, "/sys/dev/block/%u:%u/../dev",
            major (devnum), minor (devnum));
  if (sysfs_read_line (path, buf, sizeof buf) == 0 &&
      sscanf (buf, "%u:%u", &ma, &mi) == 2)
    return makedev (ma, mi);
  return devnum;
}

/* The device of the file system store is (or will be) on. */
static int
loop_store_dev (const char *store, dev_t *devp)
{
  char parent[PATH_MAX], *slash;
  struct stat st;

  if (stat (store, &st) == -1) {
    snprintf (parent, sizeof parent, "%s", store);
    slash = strrchr (parent, '/');
    if (errno != ENOENT || slash == NULL)
      return -1;
    *(slash == parent ? slash + 1 : slash) = '\0';
    if (stat (parent, &st) == -1)
      return -1;
  }
  *devp = st.st_dev;
  return 0;
}

int
loop_store_check (const char *store, const char *const *files,
                  char *err, size_t errlen)
{
  struct stat st;
  dev_t dev;
  size_t i;

  if (loop_store_dev (store, &dev) < 0)
    return 0;                   /* the engine reports what is wrong */
  for (i = 0; files[i]; i++) {
    if (loop_backs_dev (files[i], dev) ||
        (stat (files[i], &st) == 0 && S_ISBLK (st.st_mode) &&
         loop_disk_of (dev) == st.st_rdev)) {
      snprintf (err, errlen, "backing store %s is on the file system being "
                "snapshotted (it lives on %s): the snapshot would copy into "
                "itself; choose a backing-store= elsewhere", store,
                files[i]);
      return -EXDEV;
    }
  }
  return 0;
}
