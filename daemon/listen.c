/* SPDX-License-Identifier: MIT */
/*
 * Listening sockets of fssnapd: unix sockets in the run dir (made with
 * their final mode, never briefly open to everyone) and, only when asked,
 * TCP on loopback or a given address.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/setup.h"

#define DAEMON_BACKLOG 64

/* Runs while start-up is single-threaded: the umask is process-wide. */
int
daemon_listen_unix (const char *path, mode_t mode, int *fdp,
                    char *err, size_t errlen)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  mode_t old;
  int fd, r;

  if (strlen (path) >= sizeof sun.sun_path) {
    snprintf (err, errlen, "socket path too long (max %zu bytes): %s",
              sizeof sun.sun_path - 1, path);
    return -1;
  }
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf (err, errlen, "socket: %s", strerror (errno));
    return -1;
  }
  old = umask (0777 & ~mode);
  r = bind (fd, (struct sockaddr *) &sun, sizeof sun);
  umask (old);
  if (r < 0 || chmod (path, mode) < 0 || listen (fd, DAEMON_BACKLOG) < 0) {
    snprintf (err, errlen, "cannot listen on %s: %s", path, strerror (errno));
    close (fd);
    return -1;
  }
  *fdp = fd;
  return 0;
}

/* Split "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT"; *host NULL: loopback. */
static int
daemon_split_hostport (char *spec, char **host, char **port)
{
  char *colon;

  if (spec[0] == '[') {
    char *close = strchr (spec, ']');
    if (!close || close[1] != ':')
      return -1;
    *close = '\0';
    *host = spec + 1;
    *port = close + 2;
  }
  else if ((colon = strrchr (spec, ':'))) {
    *colon = '\0';
    *host = spec[0] ? spec : NULL;
    *port = colon + 1;
  }
  else {
    *host = NULL;
    *port = spec;
  }
  return **port ? 0 : -1;
}

static int
daemon_listen_addr (const struct addrinfo *ai)
{
  int fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                   ai->ai_protocol);
  int one = 1;

  if (fd < 0)
    return -1;
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ai->ai_family == AF_INET6)
    setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind (fd, ai->ai_addr, ai->ai_addrlen) < 0
      || listen (fd, DAEMON_BACKLOG) < 0) {
    int e = errno;
    close (fd);
    errno = e;
    return -1;
  }
  return fd;
}

int
daemon_listen_tcp (const char *spec, int *fds, size_t max, size_t *nfdsp,
                   char *err, size_t errlen)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG };
  struct addrinfo *res, *ai;
  char *copy = strdup (spec), *host, *port;
  int r, bind_errno = 0;

  *nfdsp = 0;
  if (!copy || daemon_split_hostport (copy, &host, &port) < 0) {
    snprintf (err, errlen, "bad --listen address \"%s\" (HOST:PORT)", spec);
    free (copy);
    return -1;
  }
  if (!host)
    hints.ai_flags &= ~AI_ADDRCONFIG;   /* loopback, even if offline */
  r = getaddrinfo (host, port, &hints, &res);
  if (r != 0) {
    snprintf (err, errlen, "bad --listen address \"%s\": %s", spec,
              gai_strerror (r));
    free (copy);
    return -1;
  }
  for (ai = res; ai && *nfdsp < max; ai = ai->ai_next) {
    int fd = daemon_listen_addr (ai);
    if (fd >= 0)
      fds[(*nfdsp)++] = fd;
    else
      bind_errno = errno;
  }
  freeaddrinfo (res);
  free (copy);
  if (*nfdsp == 0) {
    snprintf (err, errlen, "cannot listen on %s: %s", spec,
              strerror (bind_errno ? bind_errno : EADDRNOTAVAIL));
    return -1;
  }
  return 0;
}
