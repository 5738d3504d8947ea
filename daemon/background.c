/* SPDX-License-Identifier: MIT */
/*
 * Going to the background without losing start-up errors: the process the
 * user started waits on a pipe until the daemon (its grandchild) reports
 * that it serves, or why it could not, and exits with that status.  Also
 * the pidfile.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/setup.h"

/* In the original process: wait for the daemon's status and exit with it. */
static void
daemon_background_wait (int fd)
{
  unsigned char status = 1;

  while (read (fd, &status, 1) < 0 && errno == EINTR)
    ;
  _exit (status);               /* EOF without a byte: it died, status 1 */
}

int
daemon_background (int *notifyfdp, char *err, size_t errlen)
{
  int pfd[2];
  pid_t pid;

  if (pipe2 (pfd, O_CLOEXEC) < 0) {
    snprintf (err, errlen, "pipe: %s", strerror (errno));
    return -1;
  }
  pid = fork ();
  if (pid < 0) {
    snprintf (err, errlen, "fork: %s", strerror (errno));
    return -1;
  }
  if (pid > 0) {
    close (pfd[1]);
    waitpid (pid, NULL, 0);
    daemon_background_wait (pfd[0]);
  }
  close (pfd[0]);
  setsid ();
  pid = fork ();
  if (pid < 0)
    _exit (1);
  if (pid > 0)
    _exit (0);                  /* the daemon is orphaned, never a leader */
  if (chdir ("/") < 0)
    _exit (1);
  int null = open ("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2 (null, STDIN_FILENO);
    close (null);
  }
  *notifyfdp = pfd[1];
  return 0;
}

void
daemon_background_done (int notifyfd, int status)
{
  unsigned char b = status;
  ssize_t n = write (notifyfd, &b, 1);
  int null;

  (void) n;                     /* if the parent is gone, nobody to tell */
  close (notifyfd);
  null = open ("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2 (null, STDOUT_FILENO);
    dup2 (null, STDERR_FILENO);
    close (null);
  }
}

int
daemon_pidfile_write (const char *path, char *err, size_t errlen)
{
  FILE *f = fopen (path, "we");
  int bad;

  if (!f) {
    snprintf (err, errlen, "cannot write pidfile %s: %s", path,
              strerror (errno));
    return -1;
  }
  bad = fprintf (f, "%ld\n", (long) getpid ()) < 0;
  if (fclose (f) != 0 || bad) {
    snprintf (err, errlen, "cannot write pidfile %s: %s", path,
              strerror (errno));
    return -1;
  }
  return 0;
}
