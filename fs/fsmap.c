/* SPDX-License-Identifier: MIT */
/*
 * Allocation maps from a mounted file system: FS_IOC_GETFSMAP on its mount
 * point, for any file system that has it (ext4, XFS with or without the
 * reverse-mapping btree).  The caller has frozen the file system (fssnap
 * create --mount), so what the kernel reports is what is on the volume.
 * It must be: XFS returns an extent to its free-space btrees in memory
 * before its log commits the free, so on a live XFS the map may call free
 * a block that the metadata on the volume still uses.
 *
 * Only free space is trusted.  GETFSMAP lists every extent of a device in
 * order, each with an owner: an inode, metadata (superblocks, btrees,
 * inode tables, the log), or FMR_OWN_FREE; XFS without rmapbt and ext4
 * report what they cannot attribute as FMR_OWN_UNKNOWN.  A candidate is
 * therefore every byte that is not inside an FMR_OWN_FREE record of the
 * data device: gaps between records, unknown owners, metadata and the log
 * included, and everything past the last free extent (the rest of the file
 * system, of its partition, and of the volume).
 *
 * Offsets: records carry physical offsets on the device the file system
 * is mounted from.  That device must be shown to be this volume (a loop
 * device over one of the volume's files, the block device one of them is,
 * such as fssnapd's ublk device, or a partition of either: the loop offset
 * and the partition start are added), else the map is not used.
 * A file system with another device (an XFS realtime or external log
 * device) is not mapped here either: the caller falls back.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/fsmap.h>

#include "common/sysfs.h"
#include "fs/fs.h"

#define FSMAP_RECS 1024         /* records per ioctl */

static int
fsmap_read_u64 (const char *path, uint64_t *v)
{
  char buf[32];

  return sysfs_read_line (path, buf, sizeof buf) == 0
    && sscanf (buf, "%" SCNu64, v) == 1 ? 0 : -1;
}

/* Is the loop device NAME backed by one of files?  Its offset in *offp. */
static bool
fsmap_loop_of (const char *name, const char *const *files, uint64_t *offp)
{
  char path[PATH_MAX + NAME_MAX], backing[PATH_MAX], canon[PATH_MAX];
  size_t i;

  snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file", name);
  if (strncmp (name, "loop", 4) != 0
      || sysfs_read_line (path, backing, sizeof backing) < 0)
    return false;
  snprintf (path, sizeof path, "/sys/block/%s/loop/offset", name);
  for (i = 0; files && files[i]; i++)
    if (realpath (files[i], canon) != NULL && strcmp (canon, backing) == 0)
      return fsmap_read_u64 (path, offp) == 0;
  return false;
}

/* Is the block device NAME (in /sys/class/block) one of files? */
static bool
fsmap_bdev_of (const char *name, const char *const *files)
{
  char path[PATH_MAX + NAME_MAX], majmin[32];
  unsigned ma, mi;
  struct stat st;
  size_t i;

  snprintf (path, sizeof path, "/sys/class/block/%s/dev", name);
  if (sysfs_read_line (path, majmin, sizeof majmin) < 0
      || sscanf (majmin, "%u:%u", &ma, &mi) != 2)
    return false;
  for (i = 0; files && files[i]; i++)
    if (stat (files[i], &st) == 0 && S_ISBLK (st.st_mode)
        && st.st_rdev == makedev (ma, mi))
      return true;
  return false;
}

/* Where the block device dev starts on the volume: a loop device over one
 * of files, one of files itself, or a partition of either.  -EXDEV when
 * it is not the volume.
 */
static int
fsmap_volume_offset (dev_t dev, const char *const *files, uint64_t *offp)
{
  char link[PATH_MAX], target[PATH_MAX], path[PATH_MAX + 32];
  char *name, *slash;
  uint64_t start = 0, loopoff;
  ssize_t n;

  snprintf (link, sizeof link, "/sys/dev/block/%u:%u", major (dev),
            minor (dev));
  n = readlink (link, target, sizeof target - 1);
  if (n < 0)
    return -EXDEV;
  target[n] = '\0';
  slash = strrchr (target, '/');
  name = slash ? slash + 1 : target;
  snprintf (path, sizeof path, "%s/partition", link);
  if (access (path, F_OK) == 0) {
    snprintf (path, sizeof path, "%s/start", link);
    if (fsmap_read_u64 (path, &start) < 0 || slash == NULL)
      return -EXDEV;
    start *= 512;
    *slash = '\0';              /* the disk is the parent directory */
    slash = strrchr (target, '/');
    name = slash ? slash + 1 : target;
  }
  if (fsmap_bdev_of (name, files))
    loopoff = 0;
  else if (!fsmap_loop_of (name, files, &loopoff))
    return -EXDEV;
  *offp = loopoff + start;
  return 0;
}

/* The kernel's encoding of a device number in fmr_device. */
static uint32_t
fsmap_encode_dev (dev_t dev)
{
  unsigned ma = major (dev), mi = minor (dev);

  return (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
}

/* Walk the records; mark all but free space of device ddev, at base. */
struct fsmap_walk {
  struct fssnap_candidates *cands;
  uint32_t ddev;
  uint64_t base;
  uint64_t next;                /* first byte not yet accounted for */
  uint64_t free_bytes;
  bool other_device;
};

static void
fsmap_record (struct fsmap_walk *w, const struct fsmap *r)
{
  if (r->fmr_device != w->ddev) {
    w->other_device = true;
    return;
  }
  if (!(r->fmr_flags & FMR_OF_SPECIAL_OWNER) || r->fmr_owner != FMR_OWN_FREE
      || r->fmr_length == 0)
    return;
  if (r->fmr_physical > w->next)
    fssnap_candidates_mark (w->cands, w->base + w->next,
                            r->fmr_physical - w->next);
  if (r->fmr_physical + r->fmr_length > w->next) {
    uint64_t from = r->fmr_physical > w->next ? r->fmr_physical : w->next;
    w->free_bytes += r->fmr_physical + r->fmr_length - from;
    w->next = r->fmr_physical + r->fmr_length;
  }
}

static int
fsmap_walk (int fd, struct fsmap_walk *w)
{
  struct fsmap_head *h = calloc (1, fsmap_sizeof (FSMAP_RECS));
  int rc = 0;

  if (h == NULL)
    return -ENOMEM;
  h->fmh_count = FSMAP_RECS;
  h->fmh_keys[1].fmr_device = UINT32_MAX;
  h->fmh_keys[1].fmr_flags = UINT32_MAX;
  h->fmh_keys[1].fmr_physical = UINT64_MAX;
  h->fmh_keys[1].fmr_owner = UINT64_MAX;
  h->fmh_keys[1].fmr_offset = UINT64_MAX;
  for (;;) {
    if (ioctl (fd, FS_IOC_GETFSMAP, h) < 0) {
      rc = -errno;
      break;
    }
    if (h->fmh_entries == 0)
      break;
    for (unsigned i = 0; i < h->fmh_entries; i++)
      fsmap_record (w, &h->fmh_recs[i]);
    if (h->fmh_recs[h->fmh_entries - 1].fmr_flags & FMR_OF_LAST)
      break;
    fsmap_advance (h);
  }
  free (h);
  return rc;
}

int
fsmap_candidates (const char *mountpoint, const char *const *volume_files,
                  struct fssnap_candidates *cands, uint64_t *free_bytes,
                  char *errmsg, size_t errlen)
{
  struct fsmap_walk w = { .cands = cands };
  uint64_t size = fssnap_candidates_origin_size (cands);
  struct stat st;
  int fd, rc;

  fd = open (mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fstat (fd, &st) < 0) {
    rc = -errno;
    snprintf (errmsg, errlen, "cannot open mount point %s: %s", mountpoint,
              strerror (-rc));
    if (fd >= 0)
      close (fd);
    return rc;
  }
  rc = fsmap_volume_offset (st.st_dev, volume_files, &w.base);
  if (rc < 0)
    snprintf (errmsg, errlen, "the file system on %s (device %u:%u) is not "
              "on this volume's device files", mountpoint, major (st.st_dev),
              minor (st.st_dev));
  w.ddev = fsmap_encode_dev (st.st_dev);
  if (rc == 0 && (rc = fsmap_walk (fd, &w)) < 0)
    snprintf (errmsg, errlen, "GETFSMAP on %s: %s", mountpoint,
              strerror (-rc));
  close (fd);
  if (rc == 0 && w.other_device) {
    snprintf (errmsg, errlen, "the file system on %s has another device "
              "(realtime or external log)", mountpoint);
    rc = -EXDEV;
  }
  if (rc < 0)
    return rc;
  /* What precedes the file system and what follows its last free extent. */
  fssnap_candidates_mark (cands, 0, w.base);
  if (w.base + w.next < size)
    fssnap_candidates_mark (cands, w.base + w.next, size - w.base - w.next);
  *free_bytes = w.free_bytes;
  return 0;
}
