/* SPDX-License-Identifier: MIT */
/*
 * fssnap create --mount A --mount B ...: snapshots of several volumes,
 * served by different fssnapd, in one instant, so that an application
 * with its data on one volume and its log on another is consistent across
 * both.
 *
 * Each mount point is matched to the fssnapd serving its volume: the file
 * system's device (st_dev of the mount point) is one of the volume's
 * block devices, or a loop device over one of its device files (asked
 * through each run dir's "list").  Then, in a fixed order (mount points
 * sorted by path): every file system is frozen (each with its watchdog),
 * a snapshot is created on each volume with the same "group" UUID, and
 * every file system is thawed in reverse order, whatever happened.  If
 * one create fails, the snapshots already made are deleted before the
 * thaw: no partial group is left.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/devices.h"
#include "fs/fs.h"
#include "fs/loop.h"

/* One member of the group. */
struct cli_member {
  char mount[PATH_MAX];
  char run_dir[PATH_MAX];
  int fd;                       /* frozen: fs_thaw takes it; else -1 */
  int wfd;                      /* its watchdog */
  pid_t wpid;
  long snap;                    /* created; else -1 */
  json_object *info;            /* the create reply's snapshot */
};

/* Whether the volume behind run dir dir (its "list" reply) holds the file
 * system on device dev.
 */
static bool
cli_volume_has (json_object *reply, dev_t dev)
{
  json_object *vol, *devices;
  struct stat st;

  if (!json_object_object_get_ex (reply, "volume", &vol)
      || !json_object_object_get_ex (vol, "devices", &devices))
    return false;
  json_object_object_foreach (devices, frontend, v) {
    const char *name = json_object_get_string (v);
    (void) frontend;
    if (name[0] != '/' || stat (name, &st) < 0)
      continue;
    if ((S_ISBLK (st.st_mode) && st.st_rdev == dev)
        || (S_ISREG (st.st_mode) && loop_backs_dev (name, dev)))
      return true;
  }
  return false;
}

int
cli_find_volume_daemon (struct cli *cli, const char *mount, char *run_dir,
                        size_t len)
{
  const char *root = cli_run_root (cli);
  DIR *d = opendir (root);
  struct dirent *e;
  struct stat st;

  *run_dir = '\0';
  if (stat (mount, &st) < 0) {
    if (d)
      closedir (d);
    return cli_error (CLI_EXIT_USAGE, "%s: %s", mount, strerror (errno));
  }
  while (d && !*run_dir && (e = readdir (d))) {
    struct cli one = { .run_dir = NULL };
    json_object *req, *reply;
    char dir[PATH_MAX];
    int fd;
    if (e->d_name[0] == '.')
      continue;
    snprintf (dir, sizeof dir, "%s/%s", root, e->d_name);
    if ((fd = cli_connect_dir (dir)) < 0)
      continue;
    close (fd);
    one.run_dir = dir;
    req = json_object_new_object ();
    json_object_object_add (req, "request", json_object_new_string ("list"));
    if (cli_request (&one, req, &reply) != CLI_EXIT_OK)
      continue;
    if (cli_volume_has (reply, st.st_dev))
      snprintf (run_dir, len, "%s", dir);
    json_object_put (reply);
  }
  if (d)
    closedir (d);
  if (!*run_dir)
    return cli_error (CLI_EXIT_REFUSED, "no fssnapd under %s serves the "
                      "volume mounted on %s", root, mount);
  return CLI_EXIT_OK;
}

static int
cli_member_cmp (const void *a, const void *b)
{
  return strcmp (((const struct cli_member *) a)->mount,
                 ((const struct cli_member *) b)->mount);
}

/* A new random UUID (the kernel's), in out[37]. */
static int
cli_new_group (char *out)
{
  FILE *f = fopen ("/proc/sys/kernel/random/uuid", "re");
  int ok = f && fgets (out, 37, f) && strlen (out) == 36;

  if (f)
    fclose (f);
  return ok ? CLI_EXIT_OK
            : cli_error (CLI_EXIT_REFUSED, "cannot make a group UUID");
}

static int
cli_member_freeze (struct cli_member *m)
{
  int r = cli_watchdog_start (m->mount, &m->wfd, &m->wpid), rc;

  if (r != CLI_EXIT_OK)
    return r;
  rc = fs_freeze (m->mount, &m->fd);
  if (rc < 0) {
    cli_watchdog_stop (m->wfd, m->wpid);
    m->wpid = -1;
    m->fd = -1;
    return cli_freeze_error (m->mount, rc);
  }
  return CLI_EXIT_OK;
}

/* Thaw; an exit code if the watchdog had thawed it already. */
static int
cli_member_thaw (struct cli_member *m)
{
  int rc;

  if (m->fd < 0)
    return CLI_EXIT_OK;
  rc = fs_thaw (m->fd);
  m->fd = -1;
  cli_watchdog_stop (m->wfd, m->wpid);
  m->wpid = -1;
  if (rc < 0)
    return cli_error (CLI_EXIT_REFUSED, "%s was thawed before the group "
                      "was complete (%s)", m->mount, strerror (-rc));
  return CLI_EXIT_OK;
}

static int
cli_member_create (struct cli_member *m, const char *group,
                   const char *optstr)
{
  struct cli one = { .run_dir = m->run_dir };
  json_object *req = json_object_new_object (), *reply, *snap;
  int r;

  json_object_object_add (req, "request", json_object_new_string ("create"));
  json_object_object_add (req, "mount", json_object_new_string (m->mount));
  json_object_object_add (req, "group", json_object_new_string (group));
  if (optstr)
    json_object_object_add (req, "options", json_object_new_string (optstr));
  r = cli_request (&one, req, &reply);    /* says why it failed */
  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "snapshot", &snap)) {
    m->info = json_object_get (snap);
    m->snap = atol (cli_field (snap, "number"));
  } else
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                   "snapshot");
  json_object_put (reply);
  return r;
}

static void
cli_member_delete (struct cli_member *m)
{
  struct cli one = { .run_dir = m->run_dir };
  json_object *req, *reply;

  if (m->snap < 0)
    return;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("delete"));
  json_object_object_add (req, "number", json_object_new_int64 (m->snap));
  if (cli_request (&one, req, &reply) == CLI_EXIT_OK)
    json_object_put (reply);
  m->snap = -1;
}

/* Freeze all, create all, thaw all; undo the creates on any failure. */
static int
cli_group_run (struct cli_member *ms, size_t n, const char *group,
               const char *optstr)
{
  size_t i, frozen = 0;
  int r = CLI_EXIT_OK, t;

  for (i = 0; r == CLI_EXIT_OK && i < n; i++, frozen++)
    r = cli_member_freeze (&ms[i]);
  if (r != CLI_EXIT_OK)
    frozen--;                   /* the one that failed is not frozen */
  for (i = 0; r == CLI_EXIT_OK && i < n; i++)
    r = cli_member_create (&ms[i], group, optstr);
  if (r != CLI_EXIT_OK)
    for (i = 0; i < n; i++)
      cli_member_delete (&ms[i]);
  while (frozen-- > 0)
    if ((t = cli_member_thaw (&ms[frozen])) != CLI_EXIT_OK
        && r == CLI_EXIT_OK)
      r = t;
  if (r != CLI_EXIT_OK)         /* a thaw came too early: no group */
    for (i = 0; i < n; i++)
      cli_member_delete (&ms[i]);
  return r;
}

static void
cli_group_print (struct cli_member *ms, size_t n, const char *group,
                 int json)
{
  json_object *out;
  size_t i;

  if (!json) {
    for (i = 0; i < n; i++)
      printf ("%s\n", cli_field (ms[i].info, "device"));
    return;
  }
  out = json_object_new_object ();
  json_object_object_add (out, "group", json_object_new_string (group));
  json_object *arr = json_object_new_array ();
  for (i = 0; i < n; i++) {
    json_object *e = json_object_get (ms[i].info);
    json_object_object_add (e, "run_dir",
                            json_object_new_string (ms[i].run_dir));
    json_object_array_add (arr, e);
  }
  json_object_object_add (out, "snapshots", arr);
  cli_print_json (out);
  json_object_put (out);
}

int
cli_create_group (struct cli *cli, char **mounts, size_t n,
                  const char *optstr, int json)
{
  struct cli_member *ms = calloc (n, sizeof *ms);
  char group[40];
  size_t i;
  int r = ms ? CLI_EXIT_OK : cli_error (CLI_EXIT_USAGE, "out of memory");

  for (i = 0; r == CLI_EXIT_OK && i < n; i++) {
    ms[i].fd = ms[i].wfd = -1;
    ms[i].wpid = -1;
    ms[i].snap = -1;
    if (!realpath (mounts[i], ms[i].mount))
      r = cli_error (CLI_EXIT_USAGE, "mount point %s: %s", mounts[i],
                     strerror (errno));
  }
  if (r == CLI_EXIT_OK)
    qsort (ms, n, sizeof *ms, cli_member_cmp);
  for (i = 0; r == CLI_EXIT_OK && i < n; i++) {
    if (i > 0 && strcmp (ms[i].mount, ms[i - 1].mount) == 0)
      r = cli_error (CLI_EXIT_USAGE, "%s is given twice", ms[i].mount);
    else
      r = cli_find_volume_daemon (cli, ms[i].mount, ms[i].run_dir,
                                  sizeof ms[i].run_dir);
    if (r == CLI_EXIT_OK && i > 0
        && strcmp (ms[i].run_dir, ms[i - 1].run_dir) == 0)
      r = cli_error (CLI_EXIT_USAGE, "%s and %s are on the same volume",
                     ms[i - 1].mount, ms[i].mount);
  }
  if (r == CLI_EXIT_OK)
    r = cli_new_group (group);
  if (r == CLI_EXIT_OK)
    r = cli_group_run (ms, n, group, optstr);
  if (r == CLI_EXIT_OK)
    cli_group_print (ms, n, group, json);
  for (i = 0; ms && i < n; i++)
    json_object_put (ms[i].info);
  free (ms);
  return r;
}
