/* SPDX-License-Identifier: MIT */
/*
 * fssnap mount N DIR and fssnap umount DIR: a snapshot as a read-only
 * file tree, for the file-level tools (restic, borg, rsync, tar).
 *
 * mount finds the snapshot's block device as attach does (the one a
 * frontend serves, or a loop device on its FUSE file), asks libblkid for
 * the file system type and mounts it read-only, nosuid, nodev, without
 * replaying a journal: the snapshot cannot be written, and a frozen file
 * system left none to replay (ext2/3/4: noload; XFS: norecovery, and
 * nouuid because the live file system with the same UUID is mounted).
 * A loop device made here gets the kernel's autoclear flag before the
 * mount, so it goes away with the last unmount whoever unmounts; one
 * that was already attached (fssnap attach) is used and left alone.
 *
 * umount only unmounts what is a snapshot of this fssnapd (the mount's
 * device is one of its snapshots' block devices or a loop device on one
 * of its device files), then waits for an autoclear loop device to go.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <blkid/blkid.h>
#include <linux/loop.h>

#include "cli/devices.h"
#include "cli/mount.h"
#include "fs/loop.h"

#define CLI_UNMOUNT_WAIT_MS 5000        /* busy mount, autoclear loop */

/* Mount data per file system type; anything else gets plain "ro". */
static const struct cli_fs_opts {
  const char *type;
  const char *data;
} cli_fs_opts[] = {
  { "ext2", "noload" },
  { "ext3", "noload" },
  { "ext4", "noload" },
  { "xfs", "norecovery,nouuid" },
};

int
cli_snapshot_info (struct cli *cli, long num, json_object **snapp)
{
  json_object *req, *reply, *snaps;
  int r;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("info"));
  json_object_object_add (req, "number", json_object_new_int64 (num));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "snapshots", &snaps)
      && json_object_array_length (snaps) == 1)
    *snapp = json_object_get (json_object_array_get_idx (snaps, 0));
  else
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                   "snapshot");
  json_object_put (reply);
  return r;
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void
cli_unescape (char *s)
{
  char *out = s;

  for (; *s; s++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0'
        && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
      *out++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 3;
    } else
      *out++ = *s;
  }
  *out = '\0';
}

/* Is the canonical path dir a mount point?  The device of its topmost
 * mount goes to *devp.
 */
static int
cli_mount_point (const char *dir, dev_t *devp)
{
  FILE *fp = fopen ("/proc/self/mountinfo", "re");
  char line[4 * PATH_MAX], point[PATH_MAX + 1];
  unsigned maj, min;
  int found = 0;

  while (fp && fgets (line, sizeof line, fp))
    if (sscanf (line, "%*u %*u %u:%u %*s %4096s", &maj, &min, point) == 3) {
      cli_unescape (point);
      if (strcmp (point, dir) == 0) {
        found = 1;
        *devp = makedev (maj, min);
      }
    }
  if (fp)
    fclose (fp);
  return found;
}

/* DIR made canonical in canon; it must be a directory. */
static int
cli_mount_dir (const char *dir, char *canon)
{
  struct stat st;

  if (!realpath (dir, canon) || stat (canon, &st) < 0)
    return cli_error (CLI_EXIT_USAGE, "mount point %s: %s", dir,
                      strerror (errno));
  if (!S_ISDIR (st.st_mode))
    return cli_error (CLI_EXIT_USAGE, "mount point %s is not a directory",
                      dir);
  return CLI_EXIT_OK;
}

/* The file system type on dev, from libblkid; "" when none is found. */
static int
cli_fs_type (const char *dev, char *type, size_t len)
{
  blkid_probe pr = blkid_new_probe_from_filename (dev);
  const char *value;
  int rc;

  if (!pr)
    return cli_error (CLI_EXIT_REFUSED, "cannot read %s: %s", dev,
                      strerror (errno));
  blkid_probe_enable_superblocks (pr, 1);
  blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE);
  rc = blkid_do_safeprobe (pr);
  *type = '\0';
  if (rc == 0 && blkid_probe_lookup_value (pr, "TYPE", &value, NULL) == 0)
    snprintf (type, len, "%s", value);
  blkid_free_probe (pr);
  if (rc < 0)
    return cli_error (CLI_EXIT_REFUSED, "cannot probe %s for a file system",
                      dev);
  return CLI_EXIT_OK;
}

static const char *
cli_fs_data (const char *type)
{
  size_t i;

  for (i = 0; i < sizeof cli_fs_opts / sizeof cli_fs_opts[0]; i++)
    if (strcmp (type, cli_fs_opts[i].type) == 0)
      return cli_fs_opts[i].data;
  return NULL;
}

/* Open the new loop device dev and set its autoclear flag: it detaches
 * itself at the last close, ours included, so the caller keeps the fd
 * open until the mount holds the device.  Returns the fd or -1.
 */
static int
cli_loop_autoclear (const char *dev)
{
  struct loop_info64 info;
  int fd = open (dev, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -1;
  if (ioctl (fd, LOOP_GET_STATUS64, &info) < 0)
    goto fail;
  info.lo_flags |= LO_FLAGS_AUTOCLEAR;
  if (ioctl (fd, LOOP_SET_STATUS64, &info) < 0)
    goto fail;
  return fd;

fail:
  close (fd);
  return -1;
}

/* Mount dev (type) read-only on dir. */
static int
cli_mount_dev (const char *dev, const char *type, const char *dir,
               const char *what)
{
  const char *data = cli_fs_data (type);

  if (mount (dev, dir, type, MS_RDONLY | MS_NOSUID | MS_NODEV, data) < 0)
    return cli_error (CLI_EXIT_REFUSED, "cannot mount %s (%s on %s) on %s "
                      "with ro%s%s: %s", what, type, dev, dir,
                      data ? "," : "", data ? data : "", strerror (errno));
  return CLI_EXIT_OK;
}

/* The snapshot must be usable: not disabled, not still being made. */
static int
cli_snapshot_usable (json_object *snap, const char *what)
{
  const char *state = cli_field (snap, "state");

  if (strcmp (state, "disabled") == 0)
    return cli_error (CLI_EXIT_REFUSED, "%s is disabled: %s", what,
                      cli_field (snap, "reason"));
  if (strcmp (state, "creating") == 0)
    return cli_error (CLI_EXIT_REFUSED, "%s is still being created", what);
  return CLI_EXIT_OK;
}

int
cli_mount_snapshot (json_object *snap, const char *dir, char *dev,
                    size_t len)
{
  char canon[PATH_MAX], what[64], type[64];
  json_object *devices;
  dev_t devnum;
  int r, made, fd = -1;

  snprintf (what, sizeof what, "snapshot %s", cli_field (snap, "number"));
  if ((r = cli_mount_dir (dir, canon)) != CLI_EXIT_OK)
    return r;
  if (cli_mount_point (canon, &devnum))
    return cli_error (CLI_EXIT_REFUSED, "%s is already a mount point", dir);
  if ((r = cli_snapshot_usable (snap, what)) != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (snap, "devices", &devices))
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                      "devices");
  r = cli_devices_block (devices, what, 1, 1, dev, len, &made);
  if (r != CLI_EXIT_OK)
    return r;
  if (made && (fd = cli_loop_autoclear (dev)) < 0) {
    r = cli_error (CLI_EXIT_REFUSED, "cannot set up %s: %s", dev,
                   strerror (errno));
    loop_detach (dev);
    return r;
  }
  r = cli_fs_type (dev, type, sizeof type);
  if (r == CLI_EXIT_OK && !*type)
    r = cli_error (CLI_EXIT_REFUSED, "no file system found on %s (%s)",
                   what, dev);
  if (r == CLI_EXIT_OK)
    r = cli_mount_dev (dev, type, canon, what);
  if (fd >= 0)
    close (fd);                 /* on failure this detaches the loop */
  return r;
}

/* "/dev/loopN" -> "loopN" when dev is a loop device, else NULL. */
static const char *
cli_loop_name (dev_t devnum, char *name, size_t len)
{
  char path[PATH_MAX], link[PATH_MAX];
  ssize_t n;

  snprintf (path, sizeof path, "/sys/dev/block/%u:%u", major (devnum),
            minor (devnum));
  n = readlink (path, link, sizeof link - 1);
  if (n < 0)
    return NULL;
  link[n] = '\0';
  snprintf (name, len, "%s", strrchr (link, '/') + 1);
  return strncmp (name, "loop", 4) == 0 ? name : NULL;
}

/* Does /sys/block/NAME/loop/FILE exist (and start with '1' if flag)? */
static int
cli_loop_sys (const char *name, const char *file, int flag)
{
  char path[PATH_MAX], c = '0';
  int fd, n;

  snprintf (path, sizeof path, "/sys/block/%s/loop/%s", name, file);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read (fd, &c, 1);
  close (fd);
  return flag ? n == 1 && c == '1' : 1;
}

/* Wait for the autoclear loop device name to detach itself. */
static void
cli_loop_wait_clear (const char *name)
{
  int ms;

  for (ms = 0; ms < CLI_UNMOUNT_WAIT_MS; ms += 20) {
    if (!cli_loop_sys (name, "backing_file", 0))
      return;
    usleep (20000);
  }
  fprintf (stderr, "fssnap: /dev/%s is still attached (something else "
           "holds it open)\n", name);
}

int
cli_unmount (const char *dir, int lazy)
{
  char name[64];
  const char *loop = NULL;
  dev_t devnum;
  int ms = 0, autoclear = 0;

  if (cli_mount_point (dir, &devnum)
      && (loop = cli_loop_name (devnum, name, sizeof name)))
    autoclear = cli_loop_sys (loop, "autoclear", 1);
  while (umount2 (dir, 0) < 0) {
    if (errno != EBUSY || ms >= CLI_UNMOUNT_WAIT_MS) {
      if (errno == EBUSY && lazy && umount2 (dir, MNT_DETACH) == 0) {
        fprintf (stderr, "fssnap: %s was busy: detached lazily\n", dir);
        return CLI_EXIT_OK;
      }
      return cli_error (CLI_EXIT_REFUSED, "cannot unmount %s: %s", dir,
                        errno == EBUSY ? "it is busy (a process uses it)"
                                       : strerror (errno));
    }
    usleep (50000);
    ms += 50;
  }
  if (autoclear)
    cli_loop_wait_clear (loop);
  return CLI_EXIT_OK;
}

/* Is the device devnum one of this fssnapd's snapshots? */
static int
cli_is_snapshot_dev (struct cli *cli, dev_t devnum, int *is)
{
  json_object *req, *reply, *snaps;
  struct stat st;
  size_t i, n;
  int r;

  *is = 0;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("list"));
  if ((r = cli_request (cli, req, &reply)) != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "snapshots", &snaps)) {
    n = json_object_array_length (snaps);
    for (i = 0; i < n && !*is; i++) {
      json_object *devices;
      if (!json_object_object_get_ex (json_object_array_get_idx (snaps, i),
                                      "devices", &devices))
        continue;
      json_object_object_foreach (devices, frontend, v) {
        const char *path = json_object_get_string (v);
        (void) frontend;
        if (path[0] == '/' && stat (path, &st) == 0
            && ((S_ISBLK (st.st_mode) && st.st_rdev == devnum)
                || (S_ISREG (st.st_mode) && loop_backs_dev (path, devnum))))
          *is = 1;
      }
    }
  }
  json_object_put (reply);
  return CLI_EXIT_OK;
}

int
cli_cmd_mount (struct cli *cli, int argc, char **argv)
{
  json_object *snap;
  char dev[PATH_MAX];
  long num;
  int r;

  r = cli_simple_args (argc, argv, NULL, 2);
  if (r != CLI_EXIT_OK)
    return r;
  if (argc - optind != 2)
    return cli_error (CLI_EXIT_USAGE, "mount needs a snapshot number and "
                      "a directory");
  if ((num = cli_parse_number (argv[optind])) < 0)
    return CLI_EXIT_USAGE;
  r = cli_snapshot_info (cli, num, &snap);
  if (r != CLI_EXIT_OK)
    return r;
  r = cli_mount_snapshot (snap, argv[optind + 1], dev, sizeof dev);
  json_object_put (snap);
  return r;
}

int
cli_cmd_umount (struct cli *cli, int argc, char **argv)
{
  char canon[PATH_MAX];
  dev_t devnum;
  int r, is;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (argc - optind != 1)
    return cli_error (CLI_EXIT_USAGE, "umount needs a directory");
  if ((r = cli_mount_dir (argv[optind], canon)) != CLI_EXIT_OK)
    return r;
  if (!cli_mount_point (canon, &devnum))
    return cli_error (CLI_EXIT_USAGE, "%s is not a mount point",
                      argv[optind]);
  if ((r = cli_is_snapshot_dev (cli, devnum, &is)) != CLI_EXIT_OK)
    return r;
  if (!is)
    return cli_error (CLI_EXIT_REFUSED, "%s is not a snapshot of this "
                      "fssnapd: not unmounting it", argv[optind]);
  return cli_unmount (canon, 0);
}
