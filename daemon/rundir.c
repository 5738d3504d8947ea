/* SPDX-License-Identifier: MIT */
/*
 * The run dir of fssnapd (RUN_DIR/nbd.sock, control.sock, fssnapd.lock):
 * who owns it and how stale sockets are told from live ones.  Ownership is
 * an flock on RUN_DIR/fssnapd.lock; the file also records the owner's pid
 * for messages.  The lock file is never removed, so that two daemons cannot
 * each lock a different file of the same name.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/setup.h"

static const char *const daemon_sockets[] = { DAEMON_NBD_SOCKET,
                                                DAEMON_CTL_SOCKET };

char *
daemon_abspath (const char *path)
{
  char cwd[PATH_MAX], *abs;

  if (path[0] == '/' || !getcwd (cwd, sizeof cwd))
    return strdup (path);
  if (asprintf (&abs, "%s/%s", cwd, path) < 0)
    return NULL;
  return abs;
}

int
daemon_mkdirs (const char *dir, mode_t mode, char *err, size_t errlen)
{
  char path[PATH_MAX];
  char *p;

  if (snprintf (path, sizeof path, "%s", dir) >= (int) sizeof path) {
    snprintf (err, errlen, "path too long: %s", dir);
    return -1;
  }
  for (p = path + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char c = *p;
    *p = '\0';
    if (mkdir (path, mode) < 0 && errno != EEXIST) {
      snprintf (err, errlen, "cannot create directory %s: %s", path,
                strerror (errno));
      return -1;
    }
    *p = c;
    if (c == '\0')
      return 0;
  }
}

/* Does a server answer on the unix socket at path? */
static int
daemon_socket_alive (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd, alive;

  if (strlen (path) >= sizeof sun.sun_path)
    return 0;
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  alive = connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0;
  close (fd);
  return alive;
}

static void
daemon_rundir_owner (int fd, char *pid, size_t len)
{
  ssize_t n = pread (fd, pid, len - 1, 0);

  pid[n > 0 ? n : 0] = '\0';
  pid[strcspn (pid, "\n")] = '\0';
  if (!*pid)
    snprintf (pid, len, "unknown");
}

/* Refuse if something answers on one of our sockets; else remove them. */
static int
daemon_rundir_sockets (const char *dir, char *err, size_t errlen)
{
  size_t i;

  for (i = 0; i < sizeof daemon_sockets / sizeof daemon_sockets[0]; i++) {
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", dir, daemon_sockets[i]);
    if (daemon_socket_alive (path)) {
      snprintf (err, errlen, "run dir %s is in use: a server answers on %s",
                dir, path);
      return -1;
    }
    if (unlink (path) < 0 && errno != ENOENT) {
      snprintf (err, errlen, "cannot remove stale socket %s: %s", path,
                strerror (errno));
      return -1;
    }
  }
  return 0;
}

int
daemon_rundir_take (const char *dir, int *fdp, char *err, size_t errlen)
{
  char path[PATH_MAX], pid[32];
  int fd;

  if (daemon_mkdirs (dir, 0755, err, errlen) < 0)
    return -1;
  snprintf (path, sizeof path, "%s/fssnapd.lock", dir);
  fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf (err, errlen, "cannot open %s: %s", path, strerror (errno));
    return -1;
  }
  if (flock (fd, LOCK_EX | LOCK_NB) < 0) {
    daemon_rundir_owner (fd, pid, sizeof pid);
    snprintf (err, errlen, "run dir %s is in use by fssnapd (pid %s)",
              dir, pid);
    close (fd);
    return -1;
  }
  if (daemon_rundir_sockets (dir, err, errlen) < 0) {
    close (fd);
    return -1;
  }
  daemon_rundir_set_pid (fd, getpid ());
  *fdp = fd;
  return 0;
}

void
daemon_rundir_set_pid (int lockfd, pid_t pid)
{
  char buf[32];
  int n = snprintf (buf, sizeof buf, "%ld\n", (long) pid);

  if (ftruncate (lockfd, 0) < 0 || pwrite (lockfd, buf, n, 0) != n)
    return;                     /* only used in messages */
}

void
daemon_rundir_clean (const char *dir)
{
  size_t i;

  for (i = 0; i < sizeof daemon_sockets / sizeof daemon_sockets[0]; i++) {
    char path[PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", dir, daemon_sockets[i]);
    unlink (path);
  }
}
