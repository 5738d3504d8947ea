/* SPDX-License-Identifier: MIT */
/*
 * fssnap clone, delete-clone and scrub.
 *
 * A clone is a writable device whose base is a snapshot (fssnapd keeps
 * its writes in an overlay; the snapshot stays as it was).  scrub is the
 * online fsck of e2scrub(8) without LVM: snapshot the mounted file system
 * (frozen, so that it is consistent), clone the snapshot, attach the
 * clone, let e2fsck replay the journal and check it (it may write: only
 * the clone changes), report, and drop the clone and the snapshot again,
 * whatever happens: a ^C or SIGTERM during the check stops e2fsck (it
 * gets the signal too) and the clean-up still runs.  An XFS is checked
 * the same way, but xfs_repair cannot replay a log: the clone is mounted
 * (nouuid: the live one has the same UUID) and unmounted, which replays
 * it, then xfs_repair -n checks it.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/devices.h"
#include "fs/loop.h"

enum { CLI_OPT_FORCE = 256, CLI_OPT_ATTACH };

static json_object *
cli_numbered_req (const char *name, long num)
{
  json_object *req = json_object_new_object ();

  json_object_object_add (req, "request", json_object_new_string (name));
  json_object_object_add (req, "number", json_object_new_int64 (num));
  return req;
}

/* Ask for a new clone of snapshot num: its info object in *clonep (a
 * reference the caller puts).
 */
static int
cli_make_clone (struct cli *cli, long num, json_object **clonep)
{
  json_object *reply, *clone;
  int r = cli_request (cli, cli_numbered_req ("clone", num), &reply);

  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "clone", &clone))
    *clonep = json_object_get (clone);
  else
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the clone");
  json_object_put (reply);
  return r;
}

/* A clone info object's device of frontend ("fuse", "ublk"), or NULL. */
static const char *
cli_clone_device (json_object *clone, const char *frontend)
{
  json_object *devices, *v;

  if (json_object_object_get_ex (clone, "devices", &devices)
      && json_object_object_get_ex (devices, frontend, &v))
    return json_object_get_string (v);
  return NULL;
}

/* The FUSE device file of a clone info object, or NULL. */
static const char *
cli_clone_file (json_object *clone)
{
  return cli_clone_device (clone, "fuse");
}


int
cli_cmd_clone (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "json", no_argument, NULL, 'j' },
    { "attach", no_argument, NULL, CLI_OPT_ATTACH },
    { NULL, 0, NULL, 0 },
  };
  json_object *clone, *devices;
  int c, r, json = 0, attach = 0;
  long num;

  while ((c = getopt_long (argc, argv, ":", longopts, NULL)) != -1) {
    if (c == 'j')
      json = 1;
    else if (c == CLI_OPT_ATTACH)
      attach = 1;
    else
      return cli_bad_option (c, argv);
  }
  if (optind != argc - 1)
    return cli_error (CLI_EXIT_USAGE, "clone takes one snapshot number");
  if ((num = cli_parse_number (argv[optind])) < 0)
    return CLI_EXIT_USAGE;
  r = cli_make_clone (cli, num, &clone);
  if (r != CLI_EXIT_OK)
    return r;
  if (attach && json_object_object_get_ex (clone, "devices", &devices))
    r = cli_attach_devices (devices, "the clone", 0);
  else if (json)
    cli_print_json (clone);
  else
    puts (cli_field (clone, "device"));
  json_object_put (clone);
  return r;
}

/* The FUSE device file of clone num ("" if none) in path. */
static int
cli_clone_path (struct cli *cli, long num, char *path, size_t len)
{
  json_object *req = json_object_new_object (), *reply, *clones;
  int r;

  *path = '\0';
  json_object_object_add (req, "request", json_object_new_string ("list"));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "clones", &clones))
    for (size_t i = 0; i < json_object_array_length (clones); i++) {
      json_object *cl = json_object_array_get_idx (clones, i);
      if (atol (cli_field (cl, "number")) == num && cli_clone_file (cl))
        snprintf (path, len, "%s", cli_clone_file (cl));
    }
  json_object_put (reply);
  return CLI_EXIT_OK;
}

/* Drop clone num; an attached one only with force (detached first). */
static int
cli_drop_clone (struct cli *cli, long num, int force)
{
  char file[PATH_MAX], loop[64];
  json_object *reply;
  int r = cli_clone_path (cli, num, file, sizeof file);

  if (r == CLI_EXIT_OK && *file && loop_find (file, loop, sizeof loop)) {
    if (!force)
      return cli_error (CLI_EXIT_REFUSED, "clone %ld is attached as %s: "
                        "detach it first or use --force", num, loop);
    r = cli_detach_file (file);
  }
  if (r == CLI_EXIT_OK) {
    json_object *req = cli_numbered_req ("delete-clone", num);
    if (force)
      json_object_object_add (req, "force", json_object_new_boolean (1));
    r = cli_request (cli, req, &reply);
  }
  if (r == CLI_EXIT_OK)
    json_object_put (reply);
  return r;
}

int
cli_cmd_delete_clone (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "force", no_argument, NULL, CLI_OPT_FORCE },
    { NULL, 0, NULL, 0 },
  };
  const char *arg;
  int c, force = 0;
  long num;

  while ((c = getopt_long (argc, argv, ":", longopts, NULL)) != -1) {
    if (c != CLI_OPT_FORCE)
      return cli_bad_option (c, argv);
    force = 1;
  }
  if (optind != argc - 1)
    return cli_error (CLI_EXIT_USAGE, "delete-clone takes one clone number");
  arg = argv[optind];
  if (strncmp (arg, "clone/", 6) == 0)
    arg += 6;
  if ((num = cli_parse_number (arg)) < 0)
    return CLI_EXIT_USAGE;
  return cli_drop_clone (cli, num, force);
}

/* ---- scrub -------------------------------------------------------------- */

static volatile sig_atomic_t cli_scrub_stopped;

static void
cli_scrub_signal (int sig)
{
  (void) sig;
  cli_scrub_stopped = 1;
}

/* Catch the stop signals (a handler, unlike SIG_IGN, is not inherited by
 * e2fsck, which still stops on them).
 */
static void
cli_scrub_catch_signals (void)
{
  struct sigaction sa = { .sa_handler = cli_scrub_signal };

  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGHUP, &sa, NULL);
}

/* Run prog (e2fsck, xfs_repair) with args on dev; its exit status, or -1
 * if it did not run.
 */
static int
cli_run_checker (const char *prog, const char *const *args, const char *dev)
{
  const char *argv[8];
  size_t n = 0;
  pid_t pid;
  int status;

  argv[n++] = prog;
  while (*args)
    argv[n++] = *args++;
  argv[n++] = dev;
  argv[n] = NULL;
  fflush (stdout);
  pid = fork ();
  if (pid == 0) {
    dup2 (STDOUT_FILENO, STDERR_FILENO);  /* its report is our output */
    execvp (prog, (char **) argv);
    fprintf (stderr, "fssnap: cannot run %s: %s\n", prog, strerror (errno));
    _exit (127);
  }
  if (pid < 0)
    return -1;
  while (waitpid (pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (!WIFEXITED (status) || WEXITSTATUS (status) == 127)
    return -1;
  return WEXITSTATUS (status);
}

/* Replay the journal (as a mount would), then check everything, as
 * e2scrub does.  Returns an exit code of fssnap.
 */
static int
cli_scrub_check (const char *mountpoint, const char *dev)
{
  static const char *const replay[] = { "-E", "journal_only", "-p", NULL };
  static const char *const check[] = { "-f", "-y", NULL };
  int rc = cli_run_checker ("e2fsck", replay, dev);

  if (rc >= 0 && rc < 8 && !cli_scrub_stopped)
    rc = cli_run_checker ("e2fsck", check, dev);
  if (cli_scrub_stopped)
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: interrupted; its "
                      "snapshot and clone are dropped", mountpoint);
  if (rc < 0 || rc >= 8)
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: e2fsck could not "
                      "check it (exit %d)", mountpoint, rc);
  if (rc != 0)
    return cli_error (CLI_EXIT_FS_ERRORS, "scrub %s: the file system has "
                      "errors (e2fsck exit %d on a snapshot of it): unmount "
                      "it and run e2fsck", mountpoint, rc);
  printf ("scrub %s: clean\n", mountpoint);
  return CLI_EXIT_OK;
}

/* Replay the log with a mount and an unmount of dev (the clone), then
 * xfs_repair -n.  Returns an exit code of fssnap.
 */
static int
cli_scrub_check_xfs (const char *mountpoint, const char *dev)
{
  static const char *const check[] = { "-n", NULL };
  char dir[] = "/tmp/fssnap-scrub.XXXXXX";
  int rc = -1;

  if (!mkdtemp (dir))
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: mkdtemp: %s",
                      mountpoint, strerror (errno));
  if (mount (dev, dir, "xfs", 0, "nouuid") < 0) {
    rmdir (dir);
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: mounting its clone "
                      "(%s) to replay the log: %s", mountpoint, dev,
                      strerror (errno));
  }
  if (umount (dir) < 0)
    umount2 (dir, MNT_DETACH);
  rmdir (dir);
  if (!cli_scrub_stopped)
    rc = cli_run_checker ("xfs_repair", check, dev);
  if (cli_scrub_stopped)
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: interrupted; its "
                      "snapshot and clone are dropped", mountpoint);
  if (rc < 0 || rc > 1)
    return cli_error (CLI_EXIT_CHECK_FAILED, "scrub %s: xfs_repair could "
                      "not check it (exit %d)", mountpoint, rc);
  if (rc == 1)
    return cli_error (CLI_EXIT_FS_ERRORS, "scrub %s: the file system has "
                      "errors (xfs_repair -n on a snapshot of it): unmount "
                      "it and run xfs_repair", mountpoint);
  printf ("scrub %s: clean\n", mountpoint);
  return CLI_EXIT_OK;
}

/* Take the frozen snapshot of mountpoint: its number, or -1. */
static long
cli_scrub_snapshot (struct cli *cli, const char *mountpoint, int *rp)
{
  json_object *req = json_object_new_object (), *reply, *snap;
  long num = -1;

  json_object_object_add (req, "request", json_object_new_string ("create"));
  json_object_object_add (req, "mount", json_object_new_string (mountpoint));
  *rp = cli_request_frozen (cli, mountpoint, req, &reply);
  if (*rp != CLI_EXIT_OK)
    return -1;
  if (json_object_object_get_ex (reply, "snapshot", &snap))
    num = atol (cli_field (snap, "number"));
  else
    *rp = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                     "snapshot");
  json_object_put (reply);
  return num;
}

static bool
cli_scrub_is_xfs (const char *mountpoint)
{
  struct statfs st;

  return statfs (mountpoint, &st) == 0 && st.f_type == 0x58465342;
}

/* Check the clone's block device dev for scrub. */
static int
cli_scrub_check_dev (const char *mountpoint, const char *dev)
{
  return cli_scrub_is_xfs (mountpoint) ? cli_scrub_check_xfs (mountpoint, dev)
                                       : cli_scrub_check (mountpoint, dev);
}

/* Clone snapshot num, check its block device: the ublk one, or a loop
 * device attached read-write to its device file (and detached).
 */
static int
cli_scrub_clone (struct cli *cli, const char *mountpoint, long num,
                 long *clonep)
{
  json_object *clone;
  const char *file, *ublk;
  char dev[64];
  int r = cli_make_clone (cli, num, &clone), rc;

  if (r != CLI_EXIT_OK)
    return r;
  *clonep = atol (cli_field (clone, "number"));
  file = cli_clone_file (clone);
  ublk = cli_clone_device (clone, "ublk");
  if (ublk)
    r = cli_scrub_check_dev (mountpoint, ublk);
  else if (!file)
    r = cli_error (CLI_EXIT_REFUSED, "scrub needs the device files "
                   "(fssnapd runs with --no-fuse)");
  else if ((rc = loop_attach (file, 0, dev, sizeof dev)) < 0)
    r = cli_error (CLI_EXIT_REFUSED, "cannot attach %s: %s", file,
                   strerror (-rc));
  else {
    r = cli_scrub_check_dev (mountpoint, dev);
    if ((rc = loop_detach (dev)) < 0)
      fprintf (stderr, "fssnap: detaching %s: %s\n", dev, strerror (-rc));
  }
  json_object_put (clone);
  return r;
}

int
cli_cmd_scrub (struct cli *cli, int argc, char **argv)
{
  char mountpoint[PATH_MAX], run_dir[PATH_MAX];
  struct cli found = *cli;
  json_object *reply;
  long num, clone = -1;
  int r, r2;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind != argc - 1)
    return cli_error (CLI_EXIT_USAGE, "scrub needs the mount point of a "
                      "file system on the volume");
  if (!realpath (argv[optind], mountpoint))
    return cli_error (CLI_EXIT_USAGE, "mount point %s: %s", argv[optind],
                      strerror (errno));
  /* Without --run-dir: the fssnapd whose volume holds the file system. */
  if (!cli->run_dir) {
    r = cli_find_volume_daemon (cli, mountpoint, run_dir, sizeof run_dir);
    if (r != CLI_EXIT_OK)
      return r;
    found.run_dir = run_dir;
    cli = &found;
  }
  cli_scrub_catch_signals ();
  num = cli_scrub_snapshot (cli, mountpoint, &r);
  if (num < 0)
    return r;
  r = cli_scrub_clone (cli, mountpoint, num, &clone);
  /* Drop both whatever happened; the check's result comes first. */
  if (clone >= 0
      && (r2 = cli_request (cli, cli_numbered_req ("delete-clone", clone),
                            &reply)) == CLI_EXIT_OK)
    json_object_put (reply);
  if ((r2 = cli_request (cli, cli_numbered_req ("delete", num), &reply))
      == CLI_EXIT_OK)
    json_object_put (reply);
  return r != CLI_EXIT_OK ? r : r2;
}

/* ---- list and info ------------------------------------------------------ */

void
cli_print_clones (json_object *clones)
{
  size_t i, n = clones ? json_object_array_length (clones) : 0;

  if (n == 0)
    return;
  printf ("\n%-6s %-4s %-19s %-12s %-14s %s\n", "CLONE", "BASE", "CREATED",
          "ATTACHED", "WRITTEN", "DEVICE");
  for (i = 0; i < n; i++) {
    json_object *cl = json_object_array_get_idx (clones, i);
    const char *file = cli_clone_file (cl);
    char when[64], loop[64] = "-", written[32];
    if (file && !loop_find (file, loop, sizeof loop))
      snprintf (loop, sizeof loop, "-");
    cli_format_time (cl, "%Y-%m-%d %H:%M:%S", when, sizeof when);
    snprintf (written, sizeof written, "%s chunks",
              cli_field (cl, "written_chunks"));
    printf ("%-6s %-4s %-19s %-12s %-14s %s\n", cli_field (cl, "number"),
            cli_field (cl, "base"), when, loop, written,
            cli_field (cl, "device"));
  }
}

int
cli_clone_info (struct cli *cli, const char *arg, int json)
{
  json_object *req = json_object_new_object (), *reply, *clones, *found = NULL;
  long num = cli_parse_number (arg + strlen ("clone/"));
  int r;

  if (num < 0) {
    json_object_put (req);
    return CLI_EXIT_USAGE;
  }
  json_object_object_add (req, "request", json_object_new_string ("list"));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "clones", &clones))
    for (size_t i = 0; i < json_object_array_length (clones); i++) {
      json_object *cl = json_object_array_get_idx (clones, i);
      if (atol (cli_field (cl, "number")) == num)
        found = cl;
    }
  if (!found)
    r = cli_error (CLI_EXIT_NOSNAP, "no clone %ld", num);
  else if (json)
    cli_print_json (found);
  else {
    json_object_object_foreach (found, key, v) {
      if (strcmp (key, "devices") != 0)
        printf ("%-16s %s\n", key, json_object_get_string (v));
    }
  }
  json_object_put (reply);
  return r;
}
