/* SPDX-License-Identifier: MIT */
/*
 * fssnap exec [-o OPTIONS] [--mount PATH] [--] CMD [ARG...]: one command
 * for a file-level backup.  Create a snapshot (freezing PATH), mount it
 * read-only at a private directory (mkdtemp in fssnapd's run dir), run
 * CMD with $FSSNAP_ROOT, $FSSNAP_SNAPSHOT, $FSSNAP_UUID and $FSSNAP_DEVICE
 * in its environment, then unmount, drop the loop device and delete the
 * snapshot, whatever CMD did.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked from the start and
 * taken with sigwaitinfo, so that fssnap always lives to clean up.  One
 * sent with kill(2) (systemd, a supervisor, a user) is forwarded to CMD;
 * one from the terminal (^C, si_code SI_KERNEL) already reached CMD in
 * the same foreground process group and is not sent twice.  A signal that
 * arrives before CMD starts means CMD never runs.  Only SIGKILL of fssnap
 * itself leaves the snapshot and its mount behind.
 *
 * Exit status: CMD's; 128+N if CMD was killed by signal N (or fssnap by N
 * before CMD started); 125 for a failure of fssnap's own, before CMD
 * (nothing is left behind) or while cleaning up (the message names what
 * is left); 126/127 when CMD cannot be run or is not found, as env(1).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/devices.h"
#include "cli/mount.h"

enum { CLI_EXEC_MOUNT = 256 };

struct cli_exec {
  char *options;                /* -o, joined */
  char mount[PATH_MAX];         /* --mount, canonical; "" if none */
  long num;                     /* the snapshot, -1 before create */
  char uuid[64];
  char dir[PATH_MAX];           /* the private mount point; "" if none */
  int mounted;
  char dev[PATH_MAX];
  sigset_t sigs;                /* SIGINT, SIGTERM, SIGHUP, SIGCHLD */
  sigset_t oldmask;
};

static int
cli_exec_args (struct cli_exec *x, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "mount", required_argument, NULL, CLI_EXEC_MOUNT },
    { NULL, 0, NULL, 0 },
  };
  int c, r = CLI_EXIT_OK;

  while (r == CLI_EXIT_OK
         && (c = getopt_long (argc, argv, "+:o:", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': r = cli_add_options (&x->options, optarg); break;
    case CLI_EXEC_MOUNT:
      if (!realpath (optarg, x->mount))
        r = cli_error (CLI_EXIT_USAGE, "mount point %s: %s", optarg,
                       strerror (errno));
      break;
    default: r = cli_bad_option (c, argv);
    }
  }
  if (r == CLI_EXIT_OK && optind == argc)
    r = cli_error (CLI_EXIT_USAGE, "exec needs a command to run");
  return r;
}

/* Take the snapshot; keep its number and UUID. */
static int
cli_exec_create (struct cli *cli, struct cli_exec *x, json_object **snapp)
{
  json_object *req, *reply, *snap;
  int r;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("create"));
  if (x->options)
    json_object_object_add (req, "options",
                            json_object_new_string (x->options));
  if (*x->mount) {
    json_object_object_add (req, "mount", json_object_new_string (x->mount));
    r = cli_request_frozen (cli, x->mount, req, &reply);
  } else
    r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "snapshot", &snap)
      || (x->num = cli_parse_number (cli_field (snap, "number"))) < 0) {
    json_object_put (reply);
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                      "snapshot");
  }
  snprintf (x->uuid, sizeof x->uuid, "%s", cli_field (snap, "uuid"));
  *snapp = json_object_get (snap);
  json_object_put (reply);
  return CLI_EXIT_OK;
}

/* The private mount point, in fssnapd's run dir. */
static int
cli_exec_mkdir (struct cli *cli, struct cli_exec *x)
{
  char run[PATH_MAX];
  int r;

  if ((r = cli_run_dir (cli, run, sizeof run)) != CLI_EXIT_OK)
    return r;
  if ((size_t) snprintf (x->dir, sizeof x->dir, "%.*s/exec.XXXXXX",
                         (int) sizeof run - 16, run) >= sizeof x->dir
      || !mkdtemp (x->dir)) {
    r = cli_error (CLI_EXIT_REFUSED, "cannot make a directory in %s: %s",
                   run, strerror (errno));
    *x->dir = '\0';
  }
  return r;
}

/* In the child: CMD with the snapshot in its environment. */
static void __attribute__ ((noreturn))
cli_exec_child (struct cli_exec *x, char **cmd)
{
  char num[32];
  int e;

  sigprocmask (SIG_SETMASK, &x->oldmask, NULL);
  snprintf (num, sizeof num, "%ld", x->num);
  if (setenv ("FSSNAP_ROOT", x->dir, 1) < 0
      || setenv ("FSSNAP_SNAPSHOT", num, 1) < 0
      || setenv ("FSSNAP_UUID", x->uuid, 1) < 0
      || setenv ("FSSNAP_DEVICE", x->dev, 1) < 0)
    _exit (CLI_EXIT_EXEC_FAILED);
  execvp (cmd[0], cmd);
  e = errno;
  cli_error (0, "exec: %s: %s", cmd[0], strerror (e));
  _exit (e == ENOENT ? CLI_EXIT_EXEC_NOT_FOUND : CLI_EXIT_EXEC_CANNOT_RUN);
}

/* A stop signal already pending (before CMD starts), or 0. */
static int
cli_exec_pending (void)
{
  static const int stops[] = { SIGINT, SIGTERM, SIGHUP };
  sigset_t pending;
  size_t i;

  sigpending (&pending);
  for (i = 0; i < sizeof stops / sizeof stops[0]; i++)
    if (sigismember (&pending, stops[i]))
      return stops[i];
  return 0;
}

/* Run CMD, forwarding stop signals; its exit status (128+N if killed). */
static int
cli_exec_run (struct cli_exec *x, char **cmd)
{
  siginfo_t si;
  pid_t pid;
  int status;

  fflush (NULL);
  pid = fork ();
  if (pid < 0)
    return cli_error (CLI_EXIT_EXEC_FAILED, "fork: %s", strerror (errno));
  if (pid == 0)
    cli_exec_child (x, cmd);
  for (;;) {
    if (sigwaitinfo (&x->sigs, &si) < 0)
      continue;
    if (si.si_signo != SIGCHLD) {
      if (si.si_code != SI_KERNEL)      /* the terminal's reached CMD */
        kill (pid, si.si_signo);
      continue;
    }
    if (waitpid (pid, &status, WNOHANG) == pid)
      break;
  }
  if (WIFSIGNALED (status))
    return 128 + WTERMSIG (status);
  return WEXITSTATUS (status);
}

/* Delete the snapshot, unless its number now belongs to another one. */
static int
cli_exec_delete (struct cli *cli, struct cli_exec *x)
{
  json_object *snap, *req, *reply;
  int r, same;

  r = cli_snapshot_info (cli, x->num, &snap);
  if (r == CLI_EXIT_NOSNAP)
    return cli_error (CLI_EXIT_EXEC_FAILED, "snapshot %ld was deleted "
                      "meanwhile", x->num);
  if (r != CLI_EXIT_OK)
    return CLI_EXIT_EXEC_FAILED;
  same = strcmp (cli_field (snap, "uuid"), x->uuid) == 0;
  json_object_put (snap);
  if (!same)
    return cli_error (CLI_EXIT_EXEC_FAILED, "snapshot %ld was replaced "
                      "meanwhile: not deleting it", x->num);
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("delete"));
  json_object_object_add (req, "number", json_object_new_int64 (x->num));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return CLI_EXIT_EXEC_FAILED;
  json_object_put (reply);
  return CLI_EXIT_OK;
}

/* Undo whatever was done; CLI_EXIT_OK or CLI_EXIT_EXEC_FAILED. */
static int
cli_exec_cleanup (struct cli *cli, struct cli_exec *x)
{
  int r = CLI_EXIT_OK;

  if (x->mounted && cli_unmount (x->dir, 1) != CLI_EXIT_OK) {
    cli_error (0, "snapshot %ld stays mounted on %s", x->num, x->dir);
    return CLI_EXIT_EXEC_FAILED;
  }
  if (*x->dir && rmdir (x->dir) < 0)
    r = cli_error (CLI_EXIT_EXEC_FAILED, "cannot remove %s: %s", x->dir,
                   strerror (errno));
  if (x->num >= 0 && cli_exec_delete (cli, x) != CLI_EXIT_OK)
    r = CLI_EXIT_EXEC_FAILED;
  return r;
}

int
cli_cmd_exec (struct cli *cli, int argc, char **argv)
{
  struct cli_exec x = { .num = -1 };
  json_object *snap = NULL;
  int r, status = CLI_EXIT_EXEC_FAILED, sig, ran = 0;

  r = cli_exec_args (&x, argc, argv);
  if (r != CLI_EXIT_OK) {
    free (x.options);
    return r;
  }
  sigemptyset (&x.sigs);
  sigaddset (&x.sigs, SIGINT);
  sigaddset (&x.sigs, SIGTERM);
  sigaddset (&x.sigs, SIGHUP);
  sigaddset (&x.sigs, SIGCHLD);
  sigprocmask (SIG_BLOCK, &x.sigs, &x.oldmask);

  r = cli_exec_create (cli, &x, &snap);
  if (r == CLI_EXIT_OK)
    r = cli_exec_mkdir (cli, &x);
  if (r == CLI_EXIT_OK) {
    r = cli_mount_snapshot (snap, x.dir, x.dev, sizeof x.dev);
    x.mounted = r == CLI_EXIT_OK;
  }
  if (r == CLI_EXIT_OK && (sig = cli_exec_pending ())) {
    cli_error (0, "exec: %s before the command started: not running it",
               strsignal (sig));
    status = 128 + sig;
  } else if (r == CLI_EXIT_OK) {
    status = cli_exec_run (&x, argv + optind);
    ran = 1;
  }
  json_object_put (snap);
  free (x.options);
  if (cli_exec_cleanup (cli, &x) != CLI_EXIT_OK) {
    if (ran)
      cli_error (0, "exec: the command had exited with status %d", status);
    status = CLI_EXIT_EXEC_FAILED;
  }
  return status;
}
