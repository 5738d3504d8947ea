/* SPDX-License-Identifier: MIT */
/*
 * FUSE frontend: the device files volume and snap/<N> (see devfs.h).
 *
 * Low-level libfuse3 API.  The callbacks run in parallel on libfuse's
 * worker threads: the shared state is the engine (thread-safe), struct
 * devfs, read-only once the session runs, and its list of open snapshot
 * handles under devfs.lock.  An open snapshot's handle (struct
 * devfs_handle in fi->fh) is opened on open and closed on release, so a
 * deleted snapshot goes away when its last user closes it; the kernel may
 * drop the releases of a session that ends, so devfs_stop closes what is
 * left before the engine goes.
 *
 * Inode numbers: 1 the root, 2 volume, 3 snap/, 4 clone/, DEVFS_INO_SNAP +
 * seq for a snapshot, seq being its creation sequence number, and
 * DEVFS_INO_CLONE + serial for a clone (a serial is never reused either).  A snapshot
 * number is reused after a delete; its sequence number never is, so the
 * kernel can never confuse a new snap/3 with an old one it has cached.
 *
 * Requests up to 1 MiB (max_read, max_write): a loop device with direct
 * I/O passes whole bios through, and each FUSE round trip costs about as
 * much as copying 64 KiB, so fewer, larger requests matter.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "common/log.h"
#include "fuse/devfs.h"

#define DEVFS_INO_VOLUME  2
#define DEVFS_INO_SNAPDIR 3
#define DEVFS_INO_CLONEDIR 4
#define DEVFS_INO_SNAP    0x1000        /* + creation sequence number */
#define DEVFS_INO_CLONE   (UINT64_C (1) << 48)  /* + clone serial */
#define DEVFS_MAX_IO      (1u << 20)
#define DEVFS_THREADS     16

/* An open snapshot file; on devfs.handles while open. */
struct devfs_handle {
  struct fssnap_snapshot *snap;
  struct fssnap_clone *clone;   /* instead of snap, for clone/<K> */
  struct devfs_handle *prev, *next;
};

struct devfs {
  struct fssnap_origin *origin;
  struct fssnap_clones *clones;
  char *mountdir;
  fssnap_log_fn log;
  void *log_opaque;
  unsigned max_threads;
  time_t start_time;
  struct fuse_session *se;
  pthread_t thread;
  dev_t conn_dev;               /* st_dev of the mount: the connection */
  pthread_mutex_t lock;         /* guards handles */
  struct devfs_handle *handles;
};

static struct fssnap_snapshot *
devfs_snap_of (struct fuse_file_info *fi)
{
  return ((struct devfs_handle *) (uintptr_t) fi->fh)->snap;
}

/* The clone behind an open clone/<K>, or NULL. */
static struct fssnap_clone *
devfs_clone_of (struct fuse_file_info *fi)
{
  return fi->fh ? ((struct devfs_handle *) (uintptr_t) fi->fh)->clone : NULL;
}

/* Takes devfs.lock. */
static struct devfs_handle *
devfs_handle_add (struct devfs *d, struct fssnap_snapshot *snap,
                  struct fssnap_clone *clone)
{
  struct devfs_handle *h = calloc (1, sizeof *h);

  if (h == NULL)
    return NULL;
  h->snap = snap;
  h->clone = clone;
  pthread_mutex_lock (&d->lock);
  h->next = d->handles;
  if (d->handles)
    d->handles->prev = h;
  d->handles = h;
  pthread_mutex_unlock (&d->lock);
  return h;
}

/* Close the snapshot and forget the handle.  Takes devfs.lock. */
static void
devfs_handle_close (struct devfs *d, struct devfs_handle *h)
{
  pthread_mutex_lock (&d->lock);
  if (h->prev)
    h->prev->next = h->next;
  else
    d->handles = h->next;
  if (h->next)
    h->next->prev = h->prev;
  pthread_mutex_unlock (&d->lock);
  if (h->snap)
    fssnap_snapshot_close (h->snap);
  if (h->clone)
    fssnap_clone_put (h->clone);
  free (h);
}

static void devfs_log (struct devfs *d, enum fssnap_log_level level,
                       const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static void
devfs_log (struct devfs *d, enum fssnap_log_level level, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vsend (d->log, d->log_opaque, "fssnapd: fuse", level, fmt, ap);
  va_end (ap);
}

/* ---- Snapshots by number and by inode ------------------------------- */

/* A snapshot is visible while it can be served or explains why not. */
static int
devfs_snap_visible (const struct fssnap_snapshot_info *info)
{
  return info->state != FSSNAP_STATE_CREATING &&
    info->state != FSSNAP_STATE_DELETING;
}

/* Find the visible snapshot whose inode is ino; its info in *info. */
static int
devfs_snap_by_ino (struct devfs *d, fuse_ino_t ino,
                   struct fssnap_snapshot_info *info)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  int n, i;

  if (ino < DEVFS_INO_SNAP)
    return -ENOENT;
  n = fssnap_snapshot_list (d->origin, nums, FSSNAP_MAX_SNAPSHOTS);
  for (i = 0; i < n && i < FSSNAP_MAX_SNAPSHOTS; i++)
    if (fssnap_snapshot_info (d->origin, nums[i], info) == 0 &&
        devfs_snap_visible (info) && DEVFS_INO_SNAP + info->seq == ino)
      return 0;
  return -ENOENT;
}

/* "3" -> snapshot 3, if visible. */
static int
devfs_snap_by_name (struct devfs *d, const char *name,
                    struct fssnap_snapshot_info *info)
{
  char *end;
  unsigned long num;

  if (name[0] < '0' || name[0] > '9' || (name[0] == '0' && name[1]))
    return -ENOENT;
  errno = 0;
  num = strtoul (name, &end, 10);
  if (*end || errno || num >= FSSNAP_MAX_SNAPSHOTS)
    return -ENOENT;
  if (fssnap_snapshot_info (d->origin, num, info) < 0 ||
      !devfs_snap_visible (info))
    return -ENOENT;
  return 0;
}

/* ---- Clones by number and by inode ----------------------------------- */

static int
devfs_clone_by_ino (struct devfs *d, fuse_ino_t ino,
                    struct fssnap_clone_info *info)
{
  unsigned nums[FSSNAP_MAX_CLONES];
  int n, i;

  if (!d->clones || ino < DEVFS_INO_CLONE)
    return -ENOENT;
  n = fssnap_clones_list (d->clones, nums, FSSNAP_MAX_CLONES);
  for (i = 0; i < n && i < FSSNAP_MAX_CLONES; i++)
    if (fssnap_clones_info (d->clones, nums[i], info) == 0
        && DEVFS_INO_CLONE + info->serial == ino)
      return 0;
  return -ENOENT;
}

static int
devfs_clone_by_name (struct devfs *d, const char *name,
                     struct fssnap_clone_info *info)
{
  char *end;
  unsigned long num;

  if (!d->clones || name[0] < '0' || name[0] > '9'
      || (name[0] == '0' && name[1]))
    return -ENOENT;
  errno = 0;
  num = strtoul (name, &end, 10);
  if (*end || errno || num >= FSSNAP_MAX_CLONES)
    return -ENOENT;
  return fssnap_clones_info (d->clones, num, info);
}

/* ---- Attributes ------------------------------------------------------ */

static void
devfs_dir_attr (struct devfs *d, fuse_ino_t ino, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_mode = S_IFDIR | 0755;
  st->st_nlink = ino == FUSE_ROOT_ID ? 3 : 2;
  st->st_uid = geteuid ();
  st->st_gid = getegid ();
  st->st_atime = st->st_mtime = st->st_ctime = d->start_time;
}

static void
devfs_file_attr (struct devfs *d, fuse_ino_t ino, mode_t perm, time_t t,
                 struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_mode = S_IFREG | perm;
  st->st_nlink = 1;
  st->st_uid = geteuid ();
  st->st_gid = getegid ();
  st->st_size = fssnap_origin_size (d->origin);
  st->st_blksize = 4096;
  st->st_blocks = st->st_size / 512;
  st->st_atime = st->st_mtime = st->st_ctime = t;
}

/* Attributes of any inode; returns 0 or -ENOENT. */
static int
devfs_attr (struct devfs *d, fuse_ino_t ino, struct stat *st)
{
  struct fssnap_snapshot_info info;
  struct fssnap_clone_info cinfo;

  switch (ino) {
  case FUSE_ROOT_ID:
  case DEVFS_INO_SNAPDIR:
    devfs_dir_attr (d, ino, st);
    return 0;
  case DEVFS_INO_CLONEDIR:
    if (!d->clones)
      return -ENOENT;
    devfs_dir_attr (d, ino, st);
    return 0;
  case DEVFS_INO_VOLUME:
    devfs_file_attr (d, ino, 0600, d->start_time, st);
    return 0;
  }
  if (ino >= DEVFS_INO_CLONE) {
    if (devfs_clone_by_ino (d, ino, &cinfo) < 0)
      return -ENOENT;
    devfs_file_attr (d, ino, 0600, cinfo.create_time, st);
    return 0;
  }
  if (devfs_snap_by_ino (d, ino, &info) < 0)
    return -ENOENT;
  devfs_file_attr (d, ino, 0400, info.create_time, st);
  return 0;
}

/* ---- Directory operations ------------------------------------------ */

static void
devfs_reply_entry (fuse_req_t req, struct devfs *d, fuse_ino_t ino,
                   double timeout)
{
  struct fuse_entry_param e = { .ino = ino, .attr_timeout = timeout,
                                .entry_timeout = timeout };

  if (devfs_attr (d, ino, &e.attr) < 0)
    fuse_reply_err (req, ENOENT);
  else
    fuse_reply_entry (req, &e);
}

static void
devfs_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct devfs *d = fuse_req_userdata (req);
  struct fssnap_snapshot_info info;
  struct fssnap_clone_info cinfo;

  if (parent == FUSE_ROOT_ID && strcmp (name, "clone") == 0 && d->clones)
    devfs_reply_entry (req, d, DEVFS_INO_CLONEDIR, 1.0);
  else if (parent == DEVFS_INO_CLONEDIR
           && devfs_clone_by_name (d, name, &cinfo) == 0)
    devfs_reply_entry (req, d, DEVFS_INO_CLONE + cinfo.serial, 0.0);
  else if (parent == FUSE_ROOT_ID && strcmp (name, "volume") == 0)
    devfs_reply_entry (req, d, DEVFS_INO_VOLUME, 1.0);
  else if (parent == FUSE_ROOT_ID && strcmp (name, "snap") == 0)
    devfs_reply_entry (req, d, DEVFS_INO_SNAPDIR, 1.0);
  else if (parent == DEVFS_INO_SNAPDIR &&
           devfs_snap_by_name (d, name, &info) == 0)
    /* Snapshots come and go: never cache their names. */
    devfs_reply_entry (req, d, DEVFS_INO_SNAP + info.seq, 0.0);
  else
    fuse_reply_err (req, ENOENT);
}

/* An open snapshot keeps its attributes after a delete hides it. */
static void
devfs_open_snap_attr (struct devfs *d, fuse_ino_t ino,
                      struct fuse_file_info *fi, struct stat *st)
{
  struct fssnap_snapshot *snap = devfs_snap_of (fi);
  struct fssnap_snapshot_info info;
  time_t t = d->start_time;

  if (fssnap_snapshot_info (d->origin, fssnap_snapshot_number (snap),
                            &info) == 0)
    t = info.create_time;
  devfs_file_attr (d, ino, 0400, t, st);
}

static void
devfs_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  struct stat st;

  if (ino >= DEVFS_INO_CLONE && fi && devfs_clone_of (fi))
    devfs_file_attr (d, ino, 0600, d->start_time, &st);
  else if (ino >= DEVFS_INO_SNAP && ino < DEVFS_INO_CLONE && fi && fi->fh)
    devfs_open_snap_attr (d, ino, fi, &st);
  else if (devfs_attr (d, ino, &st) < 0) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  fuse_reply_attr (req, &st, ino >= DEVFS_INO_SNAP ? 0.0 : 1.0);
}

/* The size is the device's: truncating is refused, the rest ignored. */
static void
devfs_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
               int to_set, struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  struct stat st;

  (void) fi;
  if (devfs_attr (d, ino, &st) < 0)
    fuse_reply_err (req, ENOENT);
  else if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != st.st_size)
    fuse_reply_err (req, EPERM);
  else
    fuse_reply_attr (req, &st, 0.0);
}

/* A growing buffer of directory entries. */
struct devfs_dirbuf {
  char *p;
  size_t len, cap;
};

static int
devfs_dirbuf_add (fuse_req_t req, struct devfs_dirbuf *b, const char *name,
                  fuse_ino_t ino, mode_t mode)
{
  struct stat st = { .st_ino = ino, .st_mode = mode };
  size_t need = fuse_add_direntry (req, NULL, 0, name, NULL, 0);
  char *p;

  if (b->len + need > b->cap) {
    p = realloc (b->p, (b->len + need) * 2);
    if (p == NULL)
      return -ENOMEM;
    b->p = p;
    b->cap = (b->len + need) * 2;
  }
  fuse_add_direntry (req, b->p + b->len, need, name, &st, b->len + need);
  b->len += need;
  return 0;
}

static int
devfs_list_snaps (fuse_req_t req, struct devfs *d, struct devfs_dirbuf *b)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  struct fssnap_snapshot_info info;
  char name[16];
  int n, i, rc = 0;

  n = fssnap_snapshot_list (d->origin, nums, FSSNAP_MAX_SNAPSHOTS);
  for (i = 0; rc == 0 && i < n && i < FSSNAP_MAX_SNAPSHOTS; i++) {
    if (fssnap_snapshot_info (d->origin, nums[i], &info) < 0 ||
        !devfs_snap_visible (&info))
      continue;
    snprintf (name, sizeof name, "%u", nums[i]);
    rc = devfs_dirbuf_add (req, b, name, DEVFS_INO_SNAP + info.seq, S_IFREG);
  }
  return n < 0 ? n : rc;
}

static int
devfs_list_clones (fuse_req_t req, struct devfs *d, struct devfs_dirbuf *b)
{
  unsigned nums[FSSNAP_MAX_CLONES];
  struct fssnap_clone_info info;
  char name[16];
  int n, i, rc = 0;

  n = fssnap_clones_list (d->clones, nums, FSSNAP_MAX_CLONES);
  for (i = 0; rc == 0 && i < n && i < FSSNAP_MAX_CLONES; i++) {
    if (fssnap_clones_info (d->clones, nums[i], &info) < 0)
      continue;
    snprintf (name, sizeof name, "%u", nums[i]);
    rc = devfs_dirbuf_add (req, b, name, DEVFS_INO_CLONE + info.serial,
                           S_IFREG);
  }
  return rc;
}

static void
devfs_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
               struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  struct devfs_dirbuf b = { 0 };
  int rc;

  (void) fi;
  if (ino != FUSE_ROOT_ID && ino != DEVFS_INO_SNAPDIR
      && (ino != DEVFS_INO_CLONEDIR || !d->clones)) {
    fuse_reply_err (req, ENOTDIR);
    return;
  }
  rc = devfs_dirbuf_add (req, &b, ".", ino, S_IFDIR);
  if (rc == 0)
    rc = devfs_dirbuf_add (req, &b, "..", FUSE_ROOT_ID, S_IFDIR);
  if (rc == 0 && ino == FUSE_ROOT_ID)
    rc = devfs_dirbuf_add (req, &b, "volume", DEVFS_INO_VOLUME, S_IFREG);
  if (rc == 0 && ino == FUSE_ROOT_ID)
    rc = devfs_dirbuf_add (req, &b, "snap", DEVFS_INO_SNAPDIR, S_IFDIR);
  if (rc == 0 && ino == FUSE_ROOT_ID && d->clones)
    rc = devfs_dirbuf_add (req, &b, "clone", DEVFS_INO_CLONEDIR, S_IFDIR);
  if (rc == 0 && ino == DEVFS_INO_SNAPDIR)
    rc = devfs_list_snaps (req, d, &b);
  if (rc == 0 && ino == DEVFS_INO_CLONEDIR)
    rc = devfs_list_clones (req, d, &b);
  if (rc < 0)
    fuse_reply_err (req, -rc);
  else if ((size_t) off >= b.len)
    fuse_reply_buf (req, NULL, 0);
  else
    fuse_reply_buf (req, b.p + off, b.len - off < size ? b.len - off : size);
  free (b.p);
}

/* ---- File operations ----------------------------------------------- */

/* Open clone/<K>: a reference held until release; no page cache, as for
 * the volume.
 */
static void
devfs_open_clone (fuse_req_t req, struct devfs *d, fuse_ino_t ino,
                  struct fuse_file_info *fi)
{
  struct fssnap_clone_info info;
  struct fssnap_clone *clone;
  struct devfs_handle *h;
  int rc = devfs_clone_by_ino (d, ino, &info);

  if (rc == 0)
    rc = fssnap_clone_get (d->clones, info.number, &clone);
  if (rc < 0) {
    fuse_reply_err (req, ESTALE);
    return;
  }
  h = devfs_handle_add (d, NULL, clone);
  if (h == NULL) {
    fssnap_clone_put (clone);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  fi->fh = (uintptr_t) h;
  fi->direct_io = 1;
  if (fuse_reply_open (req, fi) != 0)
    devfs_handle_close (d, h);
}

static void
devfs_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  struct fssnap_snapshot_info info;
  struct fssnap_snapshot *snap;
  struct devfs_handle *h;
  int rc;

  if (ino == DEVFS_INO_VOLUME) {
    /* No page cache: NBD clients write the same volume. */
    fi->fh = 0;
    fi->direct_io = 1;
    fuse_reply_open (req, fi);
    return;
  }
  if (ino < DEVFS_INO_SNAP) {
    fuse_reply_err (req, EISDIR);
    return;
  }
  if (ino >= DEVFS_INO_CLONE) {
    devfs_open_clone (req, d, ino, fi);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err (req, EROFS);
    return;
  }
  rc = devfs_snap_by_ino (d, ino, &info);
  if (rc == 0)
    rc = fssnap_snapshot_open (d->origin, info.number, &snap);
  if (rc < 0) {
    fuse_reply_err (req, rc == -ENOENT ? ESTALE : -rc);
    return;
  }
  h = devfs_handle_add (d, snap, NULL);
  if (h == NULL) {
    fssnap_snapshot_close (snap);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  fi->fh = (uintptr_t) h;
  /* A snapshot never changes while this inode exists. */
  fi->keep_cache = 1;
  if (fuse_reply_open (req, fi) != 0)
    devfs_handle_close (d, h);
}

static void
devfs_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  (void) ino;
  if (fi->fh)
    devfs_handle_close (fuse_req_userdata (req),
                        (struct devfs_handle *) (uintptr_t) fi->fh);
  fuse_reply_err (req, 0);
}

/* Clip [off, off+*len) to the device; false when it starts past the end. */
static int
devfs_clip (struct devfs *d, off_t off, size_t *len)
{
  uint64_t size = fssnap_origin_size (d->origin);

  if (off < 0 || (uint64_t) off >= size)
    return 0;
  if (*len > size - off)
    *len = size - off;
  return 1;
}

static void
devfs_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
            struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  char *buf;
  int rc;

  (void) ino;
  if (!devfs_clip (d, off, &size) || size == 0) {
    fuse_reply_buf (req, NULL, 0);
    return;
  }
  buf = malloc (size);
  if (buf == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  if (devfs_clone_of (fi))
    rc = fssnap_clone_read (devfs_clone_of (fi), buf, size, off);
  else if (fi->fh)
    rc = fssnap_snapshot_read (devfs_snap_of (fi), buf, size, off);
  else
    rc = fssnap_origin_read (d->origin, buf, size, off);
  if (rc < 0)
    fuse_reply_err (req, -rc);
  else
    fuse_reply_buf (req, buf, size);
  free (buf);
}

static void
devfs_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
             off_t off, struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  unsigned flags = fi->flags & O_DSYNC ? FSSNAP_FUA : 0;
  int rc;

  if (ino != DEVFS_INO_VOLUME && !devfs_clone_of (fi)) {
    fuse_reply_err (req, EBADF);
    return;
  }
  if (size == 0) {
    fuse_reply_write (req, 0);
    return;
  }
  if (!devfs_clip (d, off, &size)) {
    fuse_reply_err (req, ENOSPC);
    return;
  }
  if (devfs_clone_of (fi))
    rc = fssnap_clone_write (devfs_clone_of (fi), buf, size, off, flags);
  else
    rc = fssnap_origin_write (d->origin, buf, size, off, flags);
  if (rc < 0)
    fuse_reply_err (req, -rc);
  else
    fuse_reply_write (req, size);
}

static void
devfs_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
             struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);

  (void) datasync;
  if (fi && devfs_clone_of (fi))
    fuse_reply_err (req, -fssnap_clone_flush (devfs_clone_of (fi)));
  else
    fuse_reply_err (req, ino == DEVFS_INO_VOLUME ?
                    -fssnap_origin_flush (d->origin) : 0);
}

/* PUNCH_HOLE (what a loop device sends for discard) and ZERO_RANGE (its
 * write-zeroes) both leave zeros: the engine's zero keeps every snapshot
 * intact; PUNCH_HOLE lets it free the space, ZERO_RANGE keeps it.  Plain
 * allocation inside the device has nothing to do.
 */
static void
devfs_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
                 off_t len, struct fuse_file_info *fi)
{
  struct devfs *d = fuse_req_userdata (req);
  size_t n = len;
  unsigned flags;
  int rc;

  if (ino != DEVFS_INO_VOLUME && !devfs_clone_of (fi)) {
    fuse_reply_err (req, EBADF);
    return;
  }
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
               FALLOC_FL_ZERO_RANGE)) {
    fuse_reply_err (req, EOPNOTSUPP);
    return;
  }
  if (!devfs_clip (d, off, &n))
    n = 0;
  /* The device cannot grow; zeroing past its end is moot. */
  if (n < (size_t) len && !(mode & FALLOC_FL_KEEP_SIZE)) {
    fuse_reply_err (req, ENOSPC);
    return;
  }
  rc = 0;
  if (n > 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
    flags = mode & FALLOC_FL_ZERO_RANGE ? FSSNAP_ZERO_NO_HOLE : 0;
    if (devfs_clone_of (fi))
      rc = fssnap_clone_zero (devfs_clone_of (fi), n, off, flags);
    else
      rc = fssnap_origin_zero (d->origin, n, off, flags);
  }
  fuse_reply_err (req, -rc);
}

static void
devfs_init (void *userdata, struct fuse_conn_info *conn)
{
  (void) userdata;
  conn->max_write = DEVFS_MAX_IO;
  conn->max_read = DEVFS_MAX_IO;
  conn->max_readahead = DEVFS_MAX_IO;
  /* Let a loop device with direct I/O keep many requests in flight. */
  if (conn->capable & FUSE_CAP_ASYNC_DIO)
    conn->want |= FUSE_CAP_ASYNC_DIO;
}

static const struct fuse_lowlevel_ops devfs_ops = {
  .init = devfs_init,
  .lookup = devfs_lookup,
  .getattr = devfs_getattr,
  .setattr = devfs_setattr,
  .readdir = devfs_readdir,
  .open = devfs_open,
  .release = devfs_release,
  .read = devfs_read,
  .write = devfs_write,
  .fsync = devfs_fsync,
  .fallocate = devfs_fallocate,
};

/* ---- Session lifetime ---------------------------------------------- */

int
devfs_cleanup_stale (const char *mountdir)
{
  struct statfs sfs;
  int n;

  /* statfs always asks the server (a stat may come from cached
   * attributes), so a dead one shows as ENOTCONN.  Crashes in a row may
   * have stacked several.
   */
  for (n = 0; n < 16; n++) {
    if (statfs (mountdir, &sfs) == 0 || errno != ENOTCONN)
      return n > 0;
    /* Its daemon is gone: detach it now, whoever still holds it. */
    if (umount2 (mountdir, MNT_DETACH) == -1)
      return -errno;
  }
  return 1;
}

static void *
devfs_thread (void *arg)
{
  struct devfs *d = arg;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create ();

  if (cfg == NULL) {
    devfs_log (d, FSSNAP_LOG_ERR, "out of memory");
    return NULL;
  }
  fuse_loop_cfg_set_max_threads (cfg, d->max_threads);
  fuse_loop_cfg_set_clone_fd (cfg, 1);
  if (fuse_session_loop_mt (d->se, cfg) < 0)
    devfs_log (d, FSSNAP_LOG_ERR, "%s: session ended with an error",
               d->mountdir);
  fuse_loop_cfg_destroy (cfg);
  return NULL;
}

static int
devfs_mount (struct devfs *d)
{
  char opts[128];
  char *argv[] = { "fssnapd", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT (3, argv);

  /* As root, let other users reach the files their modes allow. */
  snprintf (opts, sizeof opts, "fsname=fssnapd,subtype=fssnap,"
            "default_permissions,max_read=%u%s", DEVFS_MAX_IO,
            geteuid () == 0 ? ",allow_other" : "");
  d->se = fuse_session_new (&args, &devfs_ops, sizeof devfs_ops, d);
  fuse_opt_free_args (&args);
  if (d->se == NULL)
    return -EINVAL;
  if (fuse_session_mount (d->se, d->mountdir) != 0) {
    fuse_session_destroy (d->se);
    d->se = NULL;
    return -EIO;
  }
  return 0;
}

/* Run the session on a thread that takes no signal: the daemon's own
 * threads handle them.
 */
static int
devfs_run (struct devfs *d)
{
  sigset_t all, old;
  int rc;

  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  rc = pthread_create (&d->thread, NULL, devfs_thread, d);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return -rc;
}

/* Closes the handles whose release never came.  No thread may run. */
static void
devfs_free (struct devfs *d)
{
  while (d->handles)
    devfs_handle_close (d, d->handles);
  pthread_mutex_destroy (&d->lock);
  free (d->mountdir);
  free (d);
}

int
devfs_start (const struct devfs_opts *opts, struct devfs **devfsp)
{
  struct devfs *d = calloc (1, sizeof *d);
  struct stat st;
  int rc;

  if (d == NULL)
    return -ENOMEM;
  d->origin = opts->origin;
  d->clones = opts->clones;
  d->log = opts->log;
  d->log_opaque = opts->log_opaque;
  d->max_threads = opts->max_threads ? opts->max_threads : DEVFS_THREADS;
  d->start_time = time (NULL);
  pthread_mutex_init (&d->lock, NULL);
  d->mountdir = strdup (opts->mountdir);
  if (d->mountdir == NULL) {
    devfs_free (d);
    return -ENOMEM;
  }
  rc = devfs_cleanup_stale (d->mountdir);
  if (rc > 0)
    devfs_log (d, FSSNAP_LOG_WARN, "%s: unmounted the stale mount of a "
               "previous run", d->mountdir);
  else if (rc < 0)
    devfs_log (d, FSSNAP_LOG_WARN, "%s: cannot unmount a stale mount: %s",
               d->mountdir, strerror (-rc));
  if (mkdir (d->mountdir, 0755) == -1 && errno != EEXIST) {
    rc = -errno;
    devfs_log (d, FSSNAP_LOG_ERR, "mkdir %s: %s", d->mountdir,
               strerror (errno));
    devfs_free (d);
    return rc;
  }
  rc = devfs_mount (d);
  if (rc < 0) {
    devfs_log (d, FSSNAP_LOG_ERR, "cannot mount the device files on %s",
               d->mountdir);
    devfs_free (d);
    return rc;
  }
  rc = devfs_run (d);
  if (rc < 0) {
    devfs_log (d, FSSNAP_LOG_ERR, "cannot start a thread: %s",
               strerror (-rc));
    fuse_session_unmount (d->se);
    fuse_session_destroy (d->se);
    devfs_free (d);
    return rc;
  }
  /* Served from now on; its device number names the connection. */
  if (stat (d->mountdir, &st) == 0)
    d->conn_dev = st.st_dev;
  *devfsp = d;
  return 0;
}

#define DEVFS_FUSECTL "/sys/fs/fuse/connections"

/* Open the abort file of our connection, mounting fusectl if need be. */
static int
devfs_open_abort (struct devfs *d)
{
  char path[PATH_MAX];
  int fd;

  snprintf (path, sizeof path, DEVFS_FUSECTL "/%u/abort",
            (major (d->conn_dev) << 20) | minor (d->conn_dev));
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd == -1 && errno == ENOENT &&
      mount ("fusectl", DEVFS_FUSECTL, "fusectl", 0, NULL) == 0) {
    devfs_log (d, FSSNAP_LOG_INFO, "mounted fusectl on " DEVFS_FUSECTL);
    fd = open (path, O_WRONLY | O_CLOEXEC);
  }
  if (fd == -1)
    devfs_log (d, FSSNAP_LOG_ERR, "%s: %s", path, strerror (errno));
  return fd;
}

/* Abort the connection through fusectl: every request in flight and to
 * come fails at once, and libfuse's workers see the end of their device.
 */
static int
devfs_abort (struct devfs *d)
{
  int fd = devfs_open_abort (d), rc = 0;

  if (fd == -1)
    return -1;
  if (write (fd, "1", 1) != 1) {
    devfs_log (d, FSSNAP_LOG_ERR, "aborting the connection: %s",
               strerror (errno));
    rc = -1;
  }
  close (fd);
  return rc;
}

void
devfs_stop (struct devfs *d)
{
  struct timespec deadline;

  fuse_session_exit (d->se);
  /* Lazy: a loop device still attached to a file keeps the connection
   * alive, so the workers may go on waiting for requests; then abort it.
   */
  fuse_session_unmount (d->se);
  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 2;
  if (pthread_timedjoin_np (d->thread, NULL, &deadline) != 0) {
    devfs_log (d, FSSNAP_LOG_WARN, "%s: still in use after unmount, "
               "aborting the connection", d->mountdir);
    if (devfs_abort (d) < 0) {
      /* Its threads may still run: leave them their memory. */
      devfs_log (d, FSSNAP_LOG_ERR, "%s: left mounted", d->mountdir);
      return;
    }
    pthread_join (d->thread, NULL);
  }
  fuse_session_destroy (d->se);
  devfs_free (d);
}
