/* SPDX-License-Identifier: MIT */
/*
 * fssnap create --mount: freeze the file system on the volume, have
 * fssnapd create the snapshot, thaw whatever happens.
 *
 * "Whatever happens" includes fssnap being killed while the file system
 * is frozen, which would leave every writer on it hanging.  So before
 * freezing, fssnap forks a watchdog in a session of its own (a ^C to the
 * terminal does not reach it) holding the read end of a pipe.  fssnap
 * writes one byte once it has thawed; if instead the pipe closes without
 * that byte (fssnap died) or fssnap takes longer than CLI_FREEZE_TIMEOUT,
 * the watchdog thaws.  A pipe's end of file cannot be missed, unlike a
 * parent-death signal sent before the handler is in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/fs.h>

#include "cli/devices.h"
#include "fs/fs.h"

#define CLI_FREEZE_TIMEOUT 60   /* seconds a file system may stay frozen */

/* In the watchdog: wait for fssnap's byte, else thaw. */
static void __attribute__ ((noreturn))
cli_watchdog (int rfd, const char *mountpoint, int dirfd)
{
  struct pollfd p = { .fd = rfd, .events = POLLIN };
  char c;
  int devnull = open ("/dev/null", O_RDWR);

  setsid ();
  signal (SIGINT, SIG_IGN);
  signal (SIGTERM, SIG_IGN);
  signal (SIGHUP, SIG_IGN);
  /* Let $(fssnap create ...) return without waiting for us. */
  if (devnull >= 0) {
    dup2 (devnull, STDIN_FILENO);
    dup2 (devnull, STDOUT_FILENO);
  }
  if (poll (&p, 1, CLI_FREEZE_TIMEOUT * 1000) == 1 && read (rfd, &c, 1) == 1)
    _exit (0);
  if (ioctl (dirfd, FITHAW, 0) == 0)
    fprintf (stderr, "fssnap: watchdog: thawed %s\n", mountpoint);
  _exit (0);
}

/* Fork the watchdog; *wfdp is fssnap's end of the pipe. */
int
cli_watchdog_start (const char *mountpoint, int *wfdp, pid_t *pidp)
{
  int p[2], dirfd;
  pid_t pid;

  dirfd = open (mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd == -1 || pipe2 (p, O_CLOEXEC) == -1)
    return cli_error (CLI_EXIT_USAGE, "%s: %s", mountpoint, strerror (errno));
  pid = fork ();
  if (pid == 0) {
    close (p[1]);
    cli_watchdog (p[0], mountpoint, dirfd);
  }
  close (p[0]);
  close (dirfd);
  if (pid == -1) {
    close (p[1]);
    return cli_error (CLI_EXIT_USAGE, "fork: %s", strerror (errno));
  }
  *wfdp = p[1];
  *pidp = pid;
  return CLI_EXIT_OK;
}

void
cli_watchdog_stop (int wfd, pid_t pid)
{
  if (write (wfd, "t", 1) != 1)
    fprintf (stderr, "fssnap: watchdog: %s\n", strerror (errno));
  close (wfd);
  waitpid (pid, NULL, 0);
}

int
cli_freeze_error (const char *mountpoint, int rc)
{
  if (rc == -EINVAL)
    return cli_error (CLI_EXIT_USAGE, "%s is not a mount point", mountpoint);
  if (rc == -EBUSY)
    return cli_error (CLI_EXIT_REFUSED, "%s is already frozen", mountpoint);
  return cli_error (CLI_EXIT_REFUSED, "cannot freeze %s: %s", mountpoint,
                    strerror (-rc));
}

int
cli_request_frozen (struct cli *cli, const char *mountpoint,
                    json_object *req, json_object **replyp)
{
  int r, rc, fd, wfd = -1;
  pid_t pid = -1;

  r = cli_watchdog_start (mountpoint, &wfd, &pid);
  if (r != CLI_EXIT_OK) {
    json_object_put (req);
    return r;
  }
  rc = fs_freeze (mountpoint, &fd);
  if (rc < 0) {
    cli_watchdog_stop (wfd, pid);
    json_object_put (req);
    return cli_freeze_error (mountpoint, rc);
  }
  r = cli_request (cli, req, replyp);
  rc = fs_thaw (fd);
  cli_watchdog_stop (wfd, pid);
  if (rc < 0 && r == CLI_EXIT_OK) {
    /* The watchdog thawed before fssnapd answered. */
    json_object_put (*replyp);
    return cli_error (CLI_EXIT_REFUSED, "%s was thawed before the snapshot "
                      "was complete (%s): delete it and try again",
                      mountpoint, strerror (-rc));
  }
  return r;
}
