/* SPDX-License-Identifier: MIT */
/*
 * The I/O layer: every file access of the engine goes through a struct
 * fssnap_io, so tests can replace it (faults, slow stores, power loss).
 * This file holds the real, POSIX one and the full-transfer helpers.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "engine/internal.h"

static int
posix_open (void *opaque, const char *path, int flags, mode_t mode)
{
  (void) opaque;
  int fd = open (path, flags | O_CLOEXEC, mode);
  return fd < 0 ? -errno : fd;
}

static int
posix_close (void *opaque, int fd)
{
  (void) opaque;
  return close (fd) < 0 ? -errno : 0;
}

static ssize_t
posix_pread (void *opaque, int fd, void *buf, size_t len, off_t off)
{
  (void) opaque;
  ssize_t r = pread (fd, buf, len, off);
  return r < 0 ? -errno : r;
}

static ssize_t
posix_pwrite (void *opaque, int fd, const void *buf, size_t len, off_t off)
{
  (void) opaque;
  ssize_t r = pwrite (fd, buf, len, off);
  return r < 0 ? -errno : r;
}

static ssize_t
posix_pwritev (void *opaque, int fd, const struct iovec *iov, int iovcnt,
               off_t off)
{
  (void) opaque;
  ssize_t r = pwritev (fd, iov, iovcnt, off);
  return r < 0 ? -errno : r;
}

static int
posix_fsync (void *opaque, int fd)
{
  (void) opaque;
  return fdatasync (fd) < 0 ? -errno : 0;
}

static int
posix_getsize (void *opaque, int fd, uint64_t *size)
{
  (void) opaque;
  struct stat st;
  if (fstat (fd, &st) < 0)
    return -errno;
  if (S_ISBLK (st.st_mode))
    return ioctl (fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
  if (!S_ISREG (st.st_mode))
    return -ENOTBLK;
  *size = st.st_size;
  return 0;
}

static bool
posix_is_blockdev (int fd)
{
  struct stat st;
  return fstat (fd, &st) == 0 && S_ISBLK (st.st_mode);
}

/* A range operation: this ioctl on a block device, this fallocate mode
 * on a file; -EOPNOTSUPP where the file system has no such mode.
 */
static int
posix_range_op (int fd, off_t off, off_t len, unsigned long blk_ioctl,
                int falloc_mode)
{
  if (posix_is_blockdev (fd)) {
    uint64_t range[2] = { off, len };
    return ioctl (fd, blk_ioctl, range) < 0 ? -errno : 0;
  }
  if (fallocate (fd, falloc_mode | FALLOC_FL_KEEP_SIZE, off, len) < 0)
    return errno == EINVAL ? -EOPNOTSUPP : -errno;
  return 0;
}

static int
posix_zero (void *opaque, int fd, off_t off, off_t len)
{
  (void) opaque;
  return posix_range_op (fd, off, len, BLKZEROOUT, FALLOC_FL_ZERO_RANGE);
}

static int
posix_discard (void *opaque, int fd, off_t off, off_t len)
{
  (void) opaque;
  return posix_range_op (fd, off, len, BLKDISCARD, FALLOC_FL_PUNCH_HOLE);
}

static int
posix_allocate (void *opaque, int fd, off_t off, off_t len)
{
  (void) opaque;
  if (fallocate (fd, 0, off, len) < 0)
    return errno == EINVAL ? -EOPNOTSUPP : -errno;
  return 0;
}

static int
posix_unlink (void *opaque, const char *path)
{
  (void) opaque;
  return unlink (path) < 0 ? -errno : 0;
}

static int
posix_rename (void *opaque, const char *from, const char *to)
{
  (void) opaque;
  return rename (from, to) < 0 ? -errno : 0;
}

static const struct fssnap_io io_posix = {
  .open = posix_open,
  .close = posix_close,
  .pread = posix_pread,
  .pwrite = posix_pwrite,
  .fsync = posix_fsync,
  .getsize = posix_getsize,
  .zero = posix_zero,
  .discard = posix_discard,
  .unlink = posix_unlink,
  .rename = posix_rename,
  .allocate = posix_allocate,
  .pwritev = posix_pwritev,
};

const struct fssnap_io *
fssnap_io_posix (void)
{
  return &io_posix;
}

ssize_t
io_pread_upto (const struct fssnap_io *io, int fd, void *buf, size_t len,
               uint64_t off)
{
  size_t done = 0;
  bool retried = false;
  while (done < len) {
    ssize_t r = io->pread (io->opaque, fd, (char *) buf + done, len - done,
                           off + done);
    if (r == -EINTR || (r == -EIO && !retried && (retried = true)))
      continue;
    if (r < 0)
      return r;
    if (r == 0)                 /* end of file */
      break;
    done += r;
  }
  return done;
}

int
io_pread_full (const struct fssnap_io *io, int fd, void *buf, size_t len,
               uint64_t off)
{
  ssize_t r = io_pread_upto (io, fd, buf, len, off);
  if (r < 0)
    return r;
  return (size_t) r < len ? -EIO : 0;   /* the file is shorter than it was */
}

int
io_pwrite_full (const struct fssnap_io *io, int fd, const void *buf,
                size_t len, uint64_t off)
{
  bool retried = false;
  while (len > 0) {
    ssize_t r = io->pwrite (io->opaque, fd, buf, len, off);
    if (r == -EINTR || (r == -EIO && !retried && (retried = true)))
      continue;
    if (r < 0)
      return r;
    if (r == 0)
      return -EIO;
    buf = (const char *) buf + r;
    len -= r;
    off += r;
  }
  return 0;
}

/* Without pwritev in the layer, or after a short write: buffer by buffer
 * from byte 'done' of the whole.
 */
static int
io_pwritev_each (const struct fssnap_io *io, int fd, const struct iovec *iov,
                 int n, uint64_t off, size_t done)
{
  for (int i = 0; i < n; i++) {
    size_t len = iov[i].iov_len;
    if (done >= len) {
      done -= len;
      off += len;
      continue;
    }
    int r = io_pwrite_full (io, fd, (const char *) iov[i].iov_base + done,
                            len - done, off + done);
    if (r < 0)
      return r;
    off += len;
    done = 0;
  }
  return 0;
}

int
io_pwritev_full (const struct fssnap_io *io, int fd, const struct iovec *iov,
                 int n, uint64_t off)
{
  if (!io->pwritev)
    return io_pwritev_each (io, fd, iov, n, off, 0);
  size_t total = 0;
  for (int i = 0; i < n; i++)
    total += iov[i].iov_len;
  ssize_t r;
  do
    r = io->pwritev (io->opaque, fd, iov, n, off);
  while (r == -EINTR);
  if (r == -EIO)                /* retried once, buffer by buffer */
    return io_pwritev_each (io, fd, iov, n, off, 0);
  if (r < 0)
    return r;
  return (size_t) r == total ? 0 : io_pwritev_each (io, fd, iov, n, off, r);
}

int
io_sync_dir (const struct fssnap_io *io, const char *dir)
{
  int fd = io->open (io->opaque, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  int r;

  if (fd < 0)
    return fd;
  r = io->fsync (io->opaque, fd);
  io->close (io->opaque, fd);
  return r;
}

int
io_replace_file (const struct fssnap_io *io, const char *path,
                 const void *buf, size_t len)
{
  char tmp[4200], dir[4200], *slash;
  int fd, r;

  snprintf (tmp, sizeof tmp, "%s.tmp", path);
  snprintf (dir, sizeof dir, "%s", path);
  slash = strrchr (dir, '/');
  if (slash == dir)
    slash[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    snprintf (dir, sizeof dir, ".");
  fd = io->open (io->opaque, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                 0600);
  if (fd < 0)
    return fd;
  r = io_pwrite_full (io, fd, buf, len, 0);
  if (r == 0)
    r = io->fsync (io->opaque, fd);
  io->close (io->opaque, fd);
  if (r == 0)
    r = io->rename (io->opaque, tmp, path);
  if (r < 0) {
    io->unlink (io->opaque, tmp);
    return r;
  }
  return io_sync_dir (io, dir);
}
