/* SPDX-License-Identifier: MIT */
/*
 * One ublk device: add it (ADD_DEV, SET_PARAMS) or take it over after a
 * crash (START_USER_RECOVERY), open /dev/ublkcN, start its queue threads,
 * then START_DEV (or END_USER_RECOVERY), which the kernel answers once
 * every queue has fetched its tags.  Delete is STOP_DEV, join the queues,
 * close, DEL_DEV; abandon leaves the device to the next server.
 *
 * Parameters: 512-byte logical and 4 KiB physical blocks; the volume says
 * it has a volatile write cache and FUA, so that the kernel sends us
 * FLUSH and FUA writes (without the attribute it would drop them, and a
 * file system's commit would not reach the origin's disk), and takes
 * DISCARD and WRITE_ZEROES; a writable clone says the same (its flush
 * makes its overlay durable); a snapshot is read-only.
 *
 * There is no udev in small systems (our test guest): where the kernel's
 * devtmpfs has not made /dev/ublkcN or /dev/ublkbN, we make the node from
 * its sysfs "dev" file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "ublk/internal.h"

#define UBLK_DEPTH       64
/* 1 MiB requests: a 1 MiB read is one request, one engine call.  Each tag
 * has a buffer of that size, mapped without reserve: a queue's 64 cost up
 * to 64 MiB once every tag has carried a full-size request.
 */
#define UBLK_MAX_IO      (1024u << 10)
#define UBLK_MAX_QUEUES  4
#define UBLK_WAIT_MS     20000  /* for the kernel to quiesce a dead server's
                                   device, and for nodes to appear */

static void
ublk_sleep_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000,
                         .tv_nsec = (long) (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

/* Make node (S_IFBLK or S_IFCHR) from sysfs's "MAJ:MIN" unless it exists. */
static int
ublk_make_node (const char *node, const char *sysfs, mode_t type)
{
  unsigned maj, min;
  struct stat st;
  FILE *f;
  int n;

  if (stat (node, &st) == 0)
    return (st.st_mode & S_IFMT) == type ? 0 : -EEXIST;
  f = fopen (sysfs, "re");
  if (!f)
    return -errno;
  n = fscanf (f, "%u:%u", &maj, &min);
  fclose (f);
  if (n != 2)
    return -EINVAL;
  if (mknod (node, type | 0600, makedev (maj, min)) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* Wait for the kernel to register the node, then make sure it is in /dev. */
static int
ublk_wait_node (const char *node, const char *sysfs, mode_t type)
{
  unsigned waited;
  struct stat st;

  for (waited = 0; waited < UBLK_WAIT_MS; waited += 10) {
    if (stat (node, &st) == 0 && (st.st_mode & S_IFMT) == type)
      return 0;
    if (access (sysfs, R_OK) == 0) {
      ublk_sleep_ms (50);       /* devtmpfs usually wins; give it a moment */
      return ublk_make_node (node, sysfs, type);
    }
    ublk_sleep_ms (10);
  }
  return -ETIMEDOUT;
}

static unsigned
ublk_nqueues (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : n > UBLK_MAX_QUEUES ? UBLK_MAX_QUEUES : (unsigned) n;
}

static int
ublk_dev_params (struct ublk_dev *dev)
{
  struct ublk_params p;

  memset (&p, 0, sizeof p);
  p.types = UBLK_PARAM_TYPE_BASIC;
  p.basic.attrs = dev->snap ? UBLK_ATTR_READ_ONLY
                            : UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
  p.basic.logical_bs_shift = 9;
  p.basic.physical_bs_shift = 12;
  p.basic.io_min_shift = 9;
  p.basic.io_opt_shift = 12;
  p.basic.max_sectors = dev->info.max_io_buf_bytes >> 9;
  p.basic.dev_sectors = dev->size >> 9;
  if (!dev->snap) {
    p.types |= UBLK_PARAM_TYPE_DISCARD;
    p.discard.discard_granularity = 4096;
    p.discard.max_discard_sectors = UINT32_MAX >> 9;
    p.discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
    p.discard.max_discard_segments = 1;
  }
  return ublk_ctrl_set_params (dev->ctrl, (int) dev->info.dev_id, &p);
}

static int
ublk_dev_add (struct ublk_dev *dev, int id, char *err, size_t errlen)
{
  struct ublksrv_ctrl_dev_info info;
  int r;

  memset (&info, 0, sizeof info);
  info.nr_hw_queues = (uint16_t) ublk_nqueues ();
  info.queue_depth = UBLK_DEPTH;
  info.max_io_buf_bytes = UBLK_MAX_IO;
  info.dev_id = id < 0 ? UINT32_MAX : (uint32_t) id;
  info.flags = dev->ctrl->features
               & (UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE
                  | UBLK_F_CMD_IOCTL_ENCODE);
  r = ublk_ctrl_add (dev->ctrl, &info);
  if (r == -EEXIST && id >= 0) {        /* taken meanwhile: any will do */
    info.dev_id = UINT32_MAX;
    r = ublk_ctrl_add (dev->ctrl, &info);
  }
  if (r < 0) {
    snprintf (err, errlen, "ublk ADD_DEV: %s", strerror (-r));
    return r;
  }
  dev->info = info;             /* what the kernel granted */
  if (!(info.flags & UBLK_F_USER_RECOVERY))
    ublk_log (dev->ctrl, FSSNAP_LOG_WARN, "ublk%u: no user recovery in this "
              "kernel: I/O fails while fssnapd is down", info.dev_id);
  else if (!(info.flags & UBLK_F_USER_RECOVERY_REISSUE))
    ublk_log (dev->ctrl, FSSNAP_LOG_WARN, "ublk%u: no reissue in this "
              "kernel: requests in flight when fssnapd dies fail",
              info.dev_id);
  if (dev->size % 512)
    ublk_log (dev->ctrl, FSSNAP_LOG_WARN, "ublk%u: the last %u bytes are "
              "not a whole sector and not served", info.dev_id,
              (unsigned) (dev->size % 512));
  r = ublk_dev_params (dev);
  if (r < 0) {
    snprintf (err, errlen, "ublk SET_PARAMS: %s", strerror (-r));
    ublk_ctrl_del (dev->ctrl, (int) info.dev_id);
  }
  return r;
}

/* After a crash: wait until the kernel has quiesced the device and the old
 * server's /dev/ublkcN is closed (EBUSY until then), reset it for us.
 */
static int
ublk_dev_take_over (struct ublk_dev *dev, int id, char *err, size_t errlen)
{
  unsigned waited;
  int r;

  r = ublk_ctrl_info (dev->ctrl, id, &dev->info);
  if (r < 0) {
    snprintf (err, errlen, "ublk GET_DEV_INFO %d: %s", id, strerror (-r));
    return r;
  }
  for (waited = 0; waited < UBLK_WAIT_MS; waited += 50) {
    r = ublk_ctrl_start_recovery (dev->ctrl, id);
    if (r != -EBUSY)
      break;
    ublk_sleep_ms (50);
  }
  if (r < 0)
    snprintf (err, errlen, "ublk START_USER_RECOVERY %d: %s", id,
              strerror (-r));
  return r;
}

static int
ublk_dev_open_cdev (struct ublk_dev *dev, char *err, size_t errlen)
{
  char node[32], sysfs[64];
  int r;

  snprintf (node, sizeof node, "/dev/ublkc%u", dev->info.dev_id);
  snprintf (sysfs, sizeof sysfs, "/sys/class/ublk-char/ublkc%u/dev",
            dev->info.dev_id);
  r = ublk_wait_node (node, sysfs, S_IFCHR);
  if (r == 0) {
    dev->cdev_fd = open (node, O_RDWR | O_CLOEXEC);
    r = dev->cdev_fd < 0 ? -errno : 0;
  }
  if (r < 0)
    snprintf (err, errlen, "%s: %s", node, strerror (-r));
  return r;
}

/* Start every queue thread and wait until each has fetched (or failed). */
static int
ublk_dev_run_queues (struct ublk_dev *dev, char *err, size_t errlen)
{
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
  unsigned i, n = dev->info.nr_hw_queues, nready = 0, started = 0;
  int r = 0;

  dev->queues = calloc (n, sizeof *dev->queues);
  if (!dev->queues)
    return -ENOMEM;
  for (i = 0; i < n; i++) {
    struct ublk_queue *q = &dev->queues[i];
    *q = (struct ublk_queue) { .dev = dev, .id = i, .stop_fd = -1,
                               .done_fd = -1,
                               .ready_lock = &lock, .ready_cond = &cond,
                               .nready = &nready };
    r = ublk_queue_start (q);
    if (r < 0)
      break;
    started++;
  }
  pthread_mutex_lock (&lock);
  while (nready < started)
    pthread_cond_wait (&cond, &lock);
  pthread_mutex_unlock (&lock);
  for (i = 0; r == 0 && i < started; i++)
    r = dev->queues[i].setup_error;
  if (r < 0)
    snprintf (err, errlen, "ublk%u: starting the queues: %s",
              dev->info.dev_id, strerror (-r));
  return r;
}

static void
ublk_dev_join_queues (struct ublk_dev *dev)
{
  unsigned i;

  if (!dev->queues)
    return;
  for (i = 0; i < dev->info.nr_hw_queues; i++)
    ublk_queue_leave (&dev->queues[i]);
  for (i = 0; i < dev->info.nr_hw_queues; i++)
    ublk_queue_join (&dev->queues[i]);
  free (dev->queues);
  dev->queues = NULL;
}

static void
ublk_dev_free (struct ublk_dev *dev)
{
  ublk_dev_join_queues (dev);
  if (dev->cdev_fd >= 0)
    close (dev->cdev_fd);
  if (dev->snap)
    fssnap_snapshot_close (dev->snap);
  if (dev->clone)
    fssnap_clone_put (dev->clone);
  free (dev);
}

int
ublk_dev_start (struct ublk_ctrl *ctrl, const struct ublk_dev_opts *opts,
                struct ublk_dev **devp, char *err, size_t errlen)
{
  struct ublk_dev *dev = calloc (1, sizeof *dev);
  char sysfs[64];
  int r;

  if (!dev)
    return -ENOMEM;
  dev->ctrl = ctrl;
  dev->origin = opts->origin;
  dev->snap = opts->snap;
  dev->clone = opts->clone;
  dev->size = opts->snap ? fssnap_snapshot_size (opts->snap)
              : opts->clone ? fssnap_clone_size (opts->clone)
              : fssnap_origin_size (opts->origin);
  dev->cdev_fd = -1;
  r = opts->recover ? ublk_dev_take_over (dev, opts->id, err, errlen)
                    : ublk_dev_add (dev, opts->id, err, errlen);
  if (r < 0) {
    dev->snap = NULL;           /* the caller's on failure */
    dev->clone = NULL;
    ublk_dev_free (dev);
    return r;
  }
  snprintf (dev->path, sizeof dev->path, "/dev/ublkb%u", dev->info.dev_id);
  r = ublk_dev_open_cdev (dev, err, errlen);
  if (r == 0)
    r = ublk_dev_run_queues (dev, err, errlen);
  if (r == 0) {
    r = ublk_ctrl_start (ctrl, (int) dev->info.dev_id, opts->recover);
    if (r < 0)
      snprintf (err, errlen, "ublk%u: %s: %s", dev->info.dev_id,
                opts->recover ? "END_USER_RECOVERY" : "START_DEV",
                strerror (-r));
  }
  if (r == 0) {
    snprintf (sysfs, sizeof sysfs, "/sys/block/ublkb%u/dev",
              dev->info.dev_id);
    r = ublk_wait_node (dev->path, sysfs, S_IFBLK);
    if (r < 0)
      snprintf (err, errlen, "%s: %s", dev->path, strerror (-r));
  }
  if (r < 0) {
    dev->snap = NULL;
    dev->clone = NULL;
    if (opts->recover) {
      ublk_dev_free (dev);      /* still quiesced: a later start retries */
    }
    else {
      int id = (int) dev->info.dev_id;
      ublk_ctrl_stop (ctrl, id);
      ublk_dev_free (dev);
      ublk_ctrl_del (ctrl, id);
    }
    return r;
  }
  *devp = dev;
  return 0;
}

int
ublk_dev_id (const struct ublk_dev *dev)
{
  return (int) dev->info.dev_id;
}

const char *
ublk_dev_path (const struct ublk_dev *dev)
{
  return dev->path;
}

bool
ublk_dev_recoverable (const struct ublk_dev *dev)
{
  return dev->info.flags & UBLK_F_USER_RECOVERY;
}

void
ublk_dev_delete (struct ublk_dev *dev)
{
  struct ublk_ctrl *ctrl = dev->ctrl;
  int id = (int) dev->info.dev_id, r;

  r = ublk_ctrl_stop (ctrl, id);
  if (r < 0)
    ublk_log (ctrl, FSSNAP_LOG_WARN, "ublk%d: STOP_DEV: %s", id,
              strerror (-r));
  ublk_dev_free (dev);          /* DEL_DEV waits for /dev/ublkcN closed */
  r = ublk_ctrl_del (ctrl, id);
  if (r < 0)
    ublk_log (ctrl, FSSNAP_LOG_WARN, "ublk%d: DEL_DEV: %s", id,
              strerror (-r));
}

void
ublk_dev_abandon (struct ublk_dev *dev)
{
  ublk_dev_free (dev);
}

/* ---- Is it in use? ----------------------------------------------------- */

/* The mount point of the file system on rdev, or "" if none, as fssnapd's
 * main thread sees it (the namespace fssnapd was started in: only the
 * queue threads have their own).
 */
static void
ublk_find_mount (dev_t rdev, char *where, size_t len)
{
  char line[2 * PATH_MAX], majmin[32], want[32], target[PATH_MAX];
  FILE *f = fopen ("/proc/self/mountinfo", "re");

  *where = '\0';
  if (!f)
    return;
  snprintf (want, sizeof want, "%u:%u", major (rdev), minor (rdev));
  while (fgets (line, sizeof line, f)) {
    if (sscanf (line, "%*s %*s %31s %*s %4095s", majmin, target) == 2
        && strcmp (majmin, want) == 0) {
      snprintf (where, len, "%s", target);
      break;
    }
  }
  fclose (f);
}

/* A process other than us with rdev open: its pid, else 0. */
static pid_t
ublk_find_opener (dev_t rdev)
{
  DIR *proc = opendir ("/proc"), *fds;
  struct dirent *p, *fd;
  pid_t found = 0, self = getpid ();
  char dir[64];
  struct stat st;

  if (!proc)
    return 0;
  while (!found && (p = readdir (proc))) {
    pid_t pid = (pid_t) atoi (p->d_name);
    if (pid <= 0 || pid == self)
      continue;
    snprintf (dir, sizeof dir, "/proc/%d/fd", pid);
    fds = opendir (dir);
    if (!fds)
      continue;
    while ((fd = readdir (fds))) {
      if (fstatat (dirfd (fds), fd->d_name, &st, 0) == 0
          && S_ISBLK (st.st_mode) && st.st_rdev == rdev) {
        found = pid;
        break;
      }
    }
    closedir (fds);
  }
  closedir (proc);
  return found;
}

int
ublk_dev_in_use (const struct ublk_dev *dev, char *what, size_t len)
{
  char where[PATH_MAX];
  struct stat st;
  pid_t pid;
  int fd;

  if (stat (dev->path, &st) < 0)
    return -errno;
  /* A mount or a stacked device holds the disk exclusively. */
  fd = open (dev->path, O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0 && errno == EBUSY) {
    ublk_find_mount (st.st_rdev, where, sizeof where);
    if (*where)
      snprintf (what, len, "mounted on %s", where);
    else
      snprintf (what, len, "held exclusively (a mount in another "
                "namespace, or a stacked device: see /sys/block/ublkb%u/"
                "holders)", dev->info.dev_id);
    return 1;
  }
  if (fd < 0)
    return -errno;
  close (fd);
  pid = ublk_find_opener (st.st_rdev);
  if (pid > 0) {
    snprintf (what, len, "open by process %d", (int) pid);
    return 2;
  }
  return 0;
}
