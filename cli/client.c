/* SPDX-License-Identifier: MIT */
/*
 * fssnap's side of the control connection: finding the run dir of the
 * fssnapd to talk to, connecting, sending one request and reading its
 * reply.  One request per process, so no state survives a call.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli.h"
#include "control/proto.h"

#define CLI_RUN_ROOT "/run/fssnap"

int
cli_error (int code, const char *fmt, ...)
{
  va_list ap;

  fputs ("fssnap: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  return code;
}

int
cli_bad_option (int c, char **argv)
{
  if (c == ':')
    return cli_error (CLI_EXIT_USAGE, "option \"%s\" needs a value",
                      argv[optind - 1]);
  if (optopt)
    return cli_error (CLI_EXIT_USAGE, "unknown option \"-%c\" (see fssnap "
                      "--help)", optopt);
  return cli_error (CLI_EXIT_USAGE, "unknown option \"%s\" (see fssnap "
                    "--help)", argv[optind - 1]);
}

const char *
cli_run_root (const struct cli *cli)
{
  return cli->run_root ? cli->run_root : CLI_RUN_ROOT;
}

/* Connect to DIR/control.sock; a negative errno on failure. */
int
cli_connect_dir (const char *dir)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  if ((size_t) snprintf (sun.sun_path, sizeof sun.sun_path, "%s/%s", dir,
                         CTL_SOCKET_NAME) >= sizeof sun.sun_path)
    return -ENAMETOOLONG;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) < 0) {
    int r = -errno;
    close (fd);
    return r;
  }
  return fd;
}

/* The one run dir under root whose control socket answers. */
static int
cli_find_run_dir (const char *root, char *dir, size_t len)
{
  DIR *d = opendir (root);
  struct dirent *e;
  char *found = NULL;
  size_t foundlen = 0;
  FILE *list;
  int n = 0, r;

  list = open_memstream (&found, &foundlen);
  while (d && list && (e = readdir (d))) {
    char path[PATH_MAX];
    int fd;
    if (e->d_name[0] == '.')
      continue;
    snprintf (path, sizeof path, "%s/%s", root, e->d_name);
    fd = cli_connect_dir (path);
    if (fd < 0)
      continue;
    close (fd);
    if (n++ == 0)
      snprintf (dir, len, "%s", path);
    fprintf (list, "%s%s", n > 1 ? ", " : "", path);
  }
  if (d)
    closedir (d);
  if (list)
    fclose (list);
  if (n == 0)
    r = cli_error (CLI_EXIT_UNREACHABLE, "no fssnapd is running under %s "
                   "(use --run-dir)", root);
  else if (n > 1)
    r = cli_error (CLI_EXIT_UNREACHABLE, "%d fssnapd run under %s (%s); "
                   "choose one with --run-dir", n, root, found);
  else
    r = CLI_EXIT_OK;
  free (found);
  return r;
}

int
cli_run_dir (struct cli *cli, char *dir, size_t len)
{
  if (!cli->run_dir)
    return cli_find_run_dir (cli_run_root (cli), dir, len);
  snprintf (dir, len, "%s", cli->run_dir);
  return CLI_EXIT_OK;
}

static int
cli_connect (struct cli *cli, int *fdp)
{
  char dir[PATH_MAX];
  int r;

  if ((r = cli_run_dir (cli, dir, sizeof dir)) != CLI_EXIT_OK)
    return r;
  r = cli_connect_dir (dir);
  if (r == -ENOENT || r == -ECONNREFUSED)
    return cli_error (CLI_EXIT_UNREACHABLE, "no fssnapd is running in %s",
                      dir);
  if (r < 0)
    return cli_error (CLI_EXIT_UNREACHABLE, "cannot connect to %s/%s: %s",
                      dir, CTL_SOCKET_NAME, strerror (-r));
  *fdp = r;
  return CLI_EXIT_OK;
}

/* Read one reply line, however long, into a malloc'd string. */
static char *
cli_read_reply (int fd)
{
  size_t len = 0, cap = 4096;
  char *buf = malloc (cap);

  while (buf) {
    ssize_t n;
    char *nl;
    if (len + 1 == cap) {
      char *bigger = realloc (buf, cap *= 2);
      if (!bigger)
        break;
      buf = bigger;
    }
    n = read (fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += n;
    buf[len] = '\0';
    if ((nl = memchr (buf, '\n', len))) {
      *nl = '\0';
      return buf;
    }
  }
  free (buf);
  return NULL;
}

/* Turn an error reply into an exit code and a message.  ENOENT means "no
 * such snapshot" only for a request that names one; ESTALE, change maps
 * that cannot be trusted.
 */
static int
cli_reply_status (json_object *reply, bool names_snapshot)
{
  json_object *ok, *err, *name;

  if (!json_object_object_get_ex (reply, "ok", &ok)
      || !json_object_is_type (ok, json_type_boolean))
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd sent a reply without "
                      "\"ok\"");
  if (json_object_get_boolean (ok))
    return CLI_EXIT_OK;
  json_object_object_get_ex (reply, "error", &err);
  json_object_object_get_ex (reply, "errno", &name);
  cli_error (CLI_EXIT_REFUSED, "%s", err ? json_object_get_string (err)
                                         : "request refused");
  if (names_snapshot && name
      && strcmp (json_object_get_string (name), "ENOENT") == 0)
    return CLI_EXIT_NOSNAP;
  if (name && strcmp (json_object_get_string (name), "ESTALE") == 0)
    return CLI_EXIT_UNTRUSTED;
  return CLI_EXIT_REFUSED;
}

int
cli_request (struct cli *cli, json_object *req, json_object **replyp)
{
  bool names_snapshot = json_object_object_get_ex (req, "number", NULL)
                        || json_object_object_get_ex (req, "a", NULL);
  json_object *reply;
  char *line;
  int fd, r, e;

  r = cli_connect (cli, &fd);
  if (r != CLI_EXIT_OK) {
    json_object_put (req);
    return r;
  }
  e = ctl_send (fd, req);       /* on EPIPE a refusal may still be there */
  json_object_put (req);
  line = cli_read_reply (fd);
  close (fd);
  if (!line && e < 0)
    return cli_error (CLI_EXIT_UNREACHABLE, "cannot send to fssnapd: %s",
                      strerror (-e));
  if (!line)
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd closed the connection "
                      "without a reply");
  reply = json_tokener_parse (line);
  free (line);
  if (!reply || !json_object_is_type (reply, json_type_object)) {
    json_object_put (reply);
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd sent a malformed reply");
  }
  r = cli_reply_status (reply, names_snapshot);
  if (r != CLI_EXIT_OK) {
    json_object_put (reply);
    return r;
  }
  *replyp = reply;
  return CLI_EXIT_OK;
}
