/* SPDX-License-Identifier: MIT */
/*
 * The origin is ours alone (see claim.h for the rules).  Two halves:
 *
 *  - who uses a block device, for the one-line refusal: the device and
 *    its relatives (the whole disk of a partition, the partitions of a
 *    whole disk), each looked up in sysfs holders (device-mapper, md,
 *    bcache), the mount table of this mount namespace, /proc/swaps, the
 *    backing files of loop devices and the flock every fssnapd holds on
 *    its origin; when none of them explains an exclusive claim, the
 *    processes that have the device open are named.
 *  - the write lease on an image file: taken at start, given up when the
 *    kernel signals that someone else opens the file (the opener waits
 *    until we do, or lease-break-time), counted in the engine's stats and
 *    re-taken once a second until the other opener is gone.  A served
 *    block device is looked at every two seconds for loop devices set up
 *    on it since (the kernel lets them open it), counted the same way.
 *
 * Everything here runs in the main thread (start-up, then the signal
 * loop); no locks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/sysfs.h"
#include "daemon/claim.h"
#include "daemon/log.h"
#include "fs/loop.h"

#define CLAIM_MAX_DEVS 64       /* a disk and its partitions */

/* A device to look at, and how it relates to the origin. */
struct claim_dev {
  dev_t dev;
  char name[NAME_MAX + 1];      /* sysfs name: "loop5p1" */
  const char *relation;         /* "", "its whole disk ", "its partition " */
  char subject[NAME_MAX + 32];  /* how its items start: "" for the origin
                                 * ("in use: mounted on /mnt"), "its
                                 * partition /dev/loop5p1 is " */
};

/* What was found: items "...; ..." in text. */
struct claim_report {
  char text[1024];
  size_t len;
  unsigned n;
  bool fssnapd_self;            /* another fssnapd serves the device itself */
};

static void claim_add (struct claim_report *r, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
claim_add (struct claim_report *r, const char *fmt, ...)
{
  va_list ap;
  int k;

  if (r->len + 3 >= sizeof r->text)
    return;
  if (r->n > 0)
    r->len += snprintf (r->text + r->len, sizeof r->text - r->len, "; ");
  va_start (ap, fmt);
  k = vsnprintf (r->text + r->len, sizeof r->text - r->len, fmt, ap);
  va_end (ap);
  r->len = k < 0 ? r->len : r->len + (size_t) k;
  if (r->len >= sizeof r->text)
    r->len = sizeof r->text - 1;
  r->n++;
}

/* ---- sysfs ------------------------------------------------------------ */

/* The sysfs name of a block device ("loop5p1"), from /sys/dev/block. */
static int
claim_dev_name (dev_t dev, char *name, size_t len)
{
  char link[PATH_MAX], target[PATH_MAX];
  ssize_t n;
  const char *slash;

  snprintf (link, sizeof link, "/sys/dev/block/%u:%u", major (dev),
            minor (dev));
  n = readlink (link, target, sizeof target - 1);
  if (n < 0)
    return -1;
  target[n] = '\0';
  slash = strrchr (target, '/');
  if (strlen (slash ? slash + 1 : target) >= len)
    return -1;
  strcpy (name, slash ? slash + 1 : target);
  return 0;
}

static int
claim_name_dev (const char *name, dev_t *devp)
{
  char path[PATH_MAX], buf[32];
  unsigned ma, mi;

  snprintf (path, sizeof path, "/sys/class/block/%s/dev", name);
  if (sysfs_read_line (path, buf, sizeof buf) < 0
      || sscanf (buf, "%u:%u", &ma, &mi) != 2)
    return -1;
  *devp = makedev (ma, mi);
  return 0;
}

static bool
claim_is_partition (const char *name)
{
  char path[PATH_MAX];

  snprintf (path, sizeof path, "/sys/class/block/%s/partition", name);
  return access (path, F_OK) == 0;
}

static void
claim_push (struct claim_dev *devs, size_t *n, const char *name,
            const char *relation)
{
  dev_t dev;

  if (*n < CLAIM_MAX_DEVS && claim_name_dev (name, &dev) == 0) {
    devs[*n].dev = dev;
    snprintf (devs[*n].name, sizeof devs[*n].name, "%s", name);
    devs[*n].relation = relation;
    devs[*n].subject[0] = '\0';
    if (relation[0])
      snprintf (devs[*n].subject, sizeof devs[*n].subject, "%s/dev/%s is ",
                relation, name);
    (*n)++;
  }
}

/* The device itself, then its whole disk (a partition) or its partitions
 * (a whole disk).  Other partitions of the same disk are not relatives:
 * they hold other data.
 */
static size_t
claim_relatives (dev_t dev, struct claim_dev *devs)
{
  char name[NAME_MAX + 1], path[PATH_MAX], target[PATH_MAX];
  struct dirent *e;
  size_t n = 0;
  DIR *d;

  if (claim_dev_name (dev, name, sizeof name) < 0)
    return 0;
  claim_push (devs, &n, name, "");
  if (claim_is_partition (name)) {
    snprintf (path, sizeof path, "/sys/class/block/%s/..", name);
    if (realpath (path, target) != NULL)
      claim_push (devs, &n, strrchr (target, '/') + 1, "its whole disk ");
    return n;
  }
  snprintf (path, sizeof path, "/sys/class/block/%s", name);
  d = opendir (path);
  while (d && (e = readdir (d)) != NULL)
    if (e->d_name[0] != '.' && claim_is_partition (e->d_name)
        && strncmp (e->d_name, name, strlen (name)) == 0)
      claim_push (devs, &n, e->d_name, "its partition ");
  if (d)
    closedir (d);
  return n;
}

/* ---- Users of one device ---------------------------------------------- */

/* Stacked devices: /sys/class/block/NAME/holders. */
static void
claim_find_holders (const struct claim_dev *c, struct claim_report *r)
{
  char path[PATH_MAX], dmname[256];
  struct dirent *e;
  DIR *d;

  snprintf (path, sizeof path, "/sys/class/block/%s/holders", c->name);
  d = opendir (path);
  while (d && (e = readdir (d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    snprintf (path, sizeof path, "/sys/class/block/%s/dm/name", e->d_name);
    if (sysfs_read_line (path, dmname, sizeof dmname) == 0)
      claim_add (r, "%sheld by device-mapper %s (remove it first: dmsetup "
                 "remove %s)", c->subject, dmname, dmname);
    else if (strncmp (e->d_name, "md", 2) == 0)
      claim_add (r, "%sheld by the md array /dev/%s (stop it first: mdadm "
                 "--stop /dev/%s)", c->subject, e->d_name, e->d_name);
    else
      claim_add (r, "%sheld by /dev/%s (see /sys/class/block/%s/holders; "
                 "release it first)", c->subject, e->d_name, c->name);
  }
  if (d)
    closedir (d);
}

/* Undo the octal escapes of /proc/self/mountinfo ("\040" for a space). */
static void
claim_unescape (char *s)
{
  char *w = s;

  for (; *s; s++, w++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0'
        && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
      *w = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 3;
    }
    else
      *w = *s;
  }
  *w = '\0';
}

/* Mounts of dev in this mount namespace (field 3 is "major:minor"). */
static void
claim_find_mounts (const struct claim_dev *c, struct claim_report *r)
{
  char line[8192], mnt[4096];
  unsigned ma, mi;
  FILE *fp = fopen ("/proc/self/mountinfo", "re");

  while (fp && fgets (line, sizeof line, fp)) {
    if (sscanf (line, "%*u %*u %u:%u %*s %4095s", &ma, &mi, mnt) != 3
        || makedev (ma, mi) != c->dev)
      continue;
    claim_unescape (mnt);
    claim_add (r, "%smounted on %s (unmount it first: umount %s)", c->subject,
               mnt, mnt);
  }
  if (fp)
    fclose (fp);
}

static bool
claim_path_is_dev (const char *path, dev_t dev)
{
  struct stat st;

  return stat (path, &st) == 0 && S_ISBLK (st.st_mode) && st.st_rdev == dev;
}

static void
claim_find_swap (const struct claim_dev *c, struct claim_report *r)
{
  char line[4096], path[4096];
  FILE *fp = fopen ("/proc/swaps", "re");

  while (fp && fgets (line, sizeof line, fp))
    if (sscanf (line, "%4095s", path) == 1 && claim_path_is_dev (path, c->dev))
      claim_add (r, "%sin use as swap (swapoff %s first)", c->subject, path);
  if (fp)
    fclose (fp);
}

/* Loop devices open their backing device without claiming it. */
static void
claim_find_loops (const struct claim_dev *c, struct claim_report *r)
{
  char path[PATH_MAX], backing[PATH_MAX];
  struct dirent *e;
  DIR *d = opendir ("/sys/block");

  while (d && (e = readdir (d)) != NULL) {
    if (strncmp (e->d_name, "loop", 4) != 0)
      continue;
    snprintf (path, sizeof path, "/sys/block/%s/loop/backing_file",
              e->d_name);
    if (sysfs_read_line (path, backing, sizeof backing) == 0
        && claim_path_is_dev (backing, c->dev))
      claim_add (r, "%sbacking the loop device /dev/%s (detach it first: "
                 "losetup -d /dev/%s)", c->subject, e->d_name, e->d_name);
  }
  if (d)
    closedir (d);
}

/* Every fssnapd holds an flock on its origin. */
static void
claim_find_fssnapd (const struct claim_dev *c, struct claim_report *r)
{
  char path[PATH_MAX];
  int fd;

  snprintf (path, sizeof path, "/dev/%s", c->name);
  if (!claim_path_is_dev (path, c->dev)
      || (fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
    return;
  if (flock (fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
    r->fssnapd_self = r->fssnapd_self || c->relation[0] == '\0';
    claim_add (r, "%sserved by another fssnapd (stop it, or use its "
               "volume)", c->subject);
  }
  close (fd);
}

/* Processes with one of devs open: "mkfs.ext4[123]". */
static void
claim_find_openers (const struct claim_dev *devs, size_t ndevs,
                    char *out, size_t len)
{
  char path[PATH_MAX], comm[64];
  struct dirent *p, *f;
  struct stat st;
  size_t used = 0, i;
  DIR *proc = opendir ("/proc"), *fds;
  pid_t self = getpid ();

  out[0] = '\0';
  while (proc && used + 1 < len && (p = readdir (proc)) != NULL) {
    if (p->d_name[0] < '1' || p->d_name[0] > '9' || atoi (p->d_name) == self)
      continue;
    snprintf (path, sizeof path, "/proc/%s/fd", p->d_name);
    if ((fds = opendir (path)) == NULL)
      continue;
    bool found = false;
    while (!found && (f = readdir (fds)) != NULL) {
      snprintf (path, sizeof path, "/proc/%s/fd/%s", p->d_name, f->d_name);
      if (f->d_name[0] == '.' || stat (path, &st) < 0
          || !S_ISBLK (st.st_mode))
        continue;
      for (i = 0; i < ndevs; i++)
        found = found || st.st_rdev == devs[i].dev;
    }
    closedir (fds);
    snprintf (path, sizeof path, "/proc/%s/comm", p->d_name);
    if (found && sysfs_read_line (path, comm, sizeof comm) == 0)
      used += snprintf (out + used, len - used, "%s%s[%s]",
                        used ? ", " : "", comm, p->d_name);
  }
  if (proc)
    closedir (proc);
  if (used >= len)
    out[len - 1] = '\0';
}

int
claim_blockdev_check (const char *path, dev_t rdev, bool busy,
                      char *err, size_t errlen)
{
  struct claim_dev devs[CLAIM_MAX_DEVS];
  struct claim_report r = { .len = 0 };
  char openers[256];
  size_t n = claim_relatives (rdev, devs), i;

  for (i = 0; i < n; i++) {
    if (busy) {
      claim_find_holders (&devs[i], &r);
      claim_find_mounts (&devs[i], &r);
      claim_find_swap (&devs[i], &r);
      claim_find_fssnapd (&devs[i], &r);
    }
    claim_find_loops (&devs[i], &r);
  }
  if (r.n == 1 && r.fssnapd_self) {
    snprintf (err, errlen, "origin %s is already served by another fssnapd",
              path);
    return -1;
  }
  if (r.n > 0) {
    snprintf (err, errlen, "origin %s is in use: %s", path, r.text);
    return -1;
  }
  if (!busy)
    return 0;
  claim_find_openers (devs, n, openers, sizeof openers);
  snprintf (err, errlen, "origin %s is in use: another program holds it "
            "(or a relative) exclusively%s%s; stop it first", path,
            openers[0] ? ", open in " : "", openers);
  return -1;
}

int
claim_image_check (const char *path, char *err, size_t errlen)
{
  char dev[64];

  if (loop_find (path, dev, sizeof dev) == 1) {
    snprintf (err, errlen, "origin %s is in use: it backs the loop device "
              "%s, whose writes would bypass fssnapd (detach it first: "
              "losetup -d %s)", path, dev, dev);
    return -1;
  }
  return 0;
}

/* ---- The lease on an image file --------------------------------------- */

/* "its file system (nfs4) has no leases": the type from mountinfo. */
static void
claim_fs_type (int fd, char *type, size_t len)
{
  char line[8192], *dash;
  unsigned ma, mi;
  struct stat st;
  FILE *fp;

  snprintf (type, len, "its file system has no leases");
  if (fstat (fd, &st) < 0
      || (fp = fopen ("/proc/self/mountinfo", "re")) == NULL)
    return;
  while (fgets (line, sizeof line, fp))
    if (sscanf (line, "%*u %*u %u:%u", &ma, &mi) == 2
        && makedev (ma, mi) == st.st_dev
        && (dash = strstr (line, " - ")) != NULL) {
      dash[3 + strcspn (dash + 3, " \n")] = '\0';
      snprintf (type, len, "its file system (%s) has no leases", dash + 3);
      break;
    }
  fclose (fp);
}

static int
claim_lease_take (struct claim_watch *w)
{
  if (fcntl (w->fd, F_SETLEASE, F_WRLCK) < 0)
    return -errno;
  w->held = true;
  w->broken_logged = false;
  return 0;
}

/* Someone else has the image open: count it and say so, once per lease. */
static void
claim_note_elsewhere (struct claim_watch *w, const char *when)
{
  if (w->broken_logged)
    return;
  w->broken_logged = true;
  fssnap_origin_note_opened_elsewhere (w->origin);
  daemon_log (FSSNAP_LOG_WARN, "origin %s %s by another program "
              "(a loop device, mount -o loop, a copy tool?); if it writes, "
              "the snapshots may be inconsistent (fssnap stats: origin "
              "opened elsewhere)", w->path, when);
}

void
claim_watch_start (struct claim_watch *w, int fd, const char *path,
                   struct fssnap_origin *origin)
{
  char type[128];
  struct stat st;
  int r;

  *w = (struct claim_watch) { .fd = -1, .path = path, .origin = origin };
  if (fstat (fd, &st) == 0 && S_ISBLK (st.st_mode)) {
    w->blockdev = true;         /* O_EXCL holds it; loops are looked for */
    w->rdev = st.st_rdev;
    return;
  }
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode))
    return;
  w->fd = fd;
  if (fcntl (fd, F_SETSIG, CLAIM_LEASE_SIGNAL) < 0
      || fcntl (fd, F_SETOWN, getpid ()) < 0)
    r = -errno;
  else
    r = claim_lease_take (w);
  if (r == 0)
    daemon_log (FSSNAP_LOG_DEBUG, "origin %s: write lease taken; opens "
                "elsewhere will be reported", path);
  else if (r == -EAGAIN)
    claim_note_elsewhere (w, "is open already");
  else {
    if (r == -EACCES || r == -EPERM)
      snprintf (type, sizeof type, "no lease for a file fssnapd neither "
                "owns nor has CAP_LEASE for");
    else if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP)
      claim_fs_type (fd, type, sizeof type);
    else
      snprintf (type, sizeof type, "no lease (%s)", strerror (-r));
    daemon_log (FSSNAP_LOG_WARN, "origin %s cannot be watched: %s; fssnapd "
                "will not notice another program opening it", path, type);
    w->fd = -1;
  }
}

/* The kernel wants the lease back: an open elsewhere waits for it. */
static void
claim_lease_broken (struct claim_watch *w)
{
  if (w->fd < 0 || !w->held)
    return;
  if (fcntl (w->fd, F_SETLEASE, F_UNLCK) < 0)
    daemon_log (FSSNAP_LOG_ERR, "origin %s: cannot release the lease: %s",
                w->path, strerror (errno));
  w->held = false;
  claim_note_elsewhere (w, "was opened");
}

static void
claim_lease_retake (struct claim_watch *w)
{
  if (claim_lease_take (w) == 0)
    daemon_log (FSSNAP_LOG_INFO, "origin %s: no other program has it open "
                "for writing now; watching it again", w->path);
}

/* A loop device set up on a served block device (or its whole disk or
 * partition) since the last look: the kernel let it open the device, and
 * its writes bypass us.
 */
static void
claim_scan_loops (struct claim_watch *w)
{
  struct claim_dev devs[CLAIM_MAX_DEVS];
  struct claim_report r = { .len = 0 };
  size_t n = claim_relatives (w->rdev, devs), i;

  for (i = 0; i < n; i++)
    claim_find_loops (&devs[i], &r);
  if (r.n > w->loops) {
    for (i = w->loops; i < r.n; i++)
      fssnap_origin_note_opened_elsewhere (w->origin);
    daemon_log (FSSNAP_LOG_WARN, "origin %s was opened by another program: "
                "%s; its writes bypass fssnapd, the snapshots may be "
                "inconsistent (fssnap stats: origin opened elsewhere)",
                w->path, r.text);
  }
  w->loops = r.n;
}

int
claim_watch_wait (struct claim_watch *w, const sigset_t *set)
{
  const struct timespec second = { .tv_sec = 1 }, two = { .tv_sec = 2 };
  siginfo_t info;
  int sig;

  for (;;) {
    bool retry = w->fd >= 0 && !w->held;
    sig = retry || w->blockdev
      ? sigtimedwait (set, &info, retry ? &second : &two)
      : sigwaitinfo (set, &info);
    if (sig == CLAIM_LEASE_SIGNAL)
      claim_lease_broken (w);
    else if (sig < 0 && errno == EAGAIN && retry)
      claim_lease_retake (w);
    else if (sig < 0 && errno == EAGAIN && w->blockdev)
      claim_scan_loops (w);
    else if (sig >= 0)
      return sig;
  }
}
