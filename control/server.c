/* SPDX-License-Identifier: MIT */
/*
 * Control socket server: one acceptor thread, one detached thread per
 * client.  A client thread reads request lines, hands each to
 * ctl_handle_line and writes the reply; requests of different clients run
 * in parallel (the engine is thread-safe).
 *
 * Locking: server->lock guards the client list, nclients and stopping.  A
 * client closes its fd only under the lock, after leaving the list, so
 * ctl_server_stop never shuts down an fd number that was reused.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "control/proto.h"
#include "control/server.h"

#define CTL_REFUSE_WAIT 2      /* seconds */

struct ctl_client {
  struct ctl_server *server;
  int fd;
  struct ctl_client *next;
};

struct ctl_server {
  struct ctl_context ctx;
  int listen_fd;
  int wake[2];                  /* written to stop the acceptor */
  pthread_t acceptor;
  bool started;
  pthread_mutex_t lock;
  pthread_cond_t idle;          /* signalled when nclients drops to 0 */
  struct ctl_client *clients;   /* guarded by lock */
  unsigned nclients;            /* guarded by lock */
  bool stopping;                /* guarded by lock */
};

static void
ctl_server_log (struct ctl_server *server, enum fssnap_log_level level,
                const char *msg)
{
  if (server->ctx.log)
    server->ctx.log (server->ctx.log_opaque, level, msg);
}

int
ctl_server_new (const struct ctl_context *ctx, struct ctl_server **serverp)
{
  struct ctl_server *server = calloc (1, sizeof *server);

  if (!server)
    return -ENOMEM;
  if (pipe2 (server->wake, O_CLOEXEC) < 0) {
    int r = -errno;
    free (server);
    return r;
  }
  server->ctx = *ctx;
  server->listen_fd = -1;
  pthread_mutex_init (&server->lock, NULL);
  pthread_cond_init (&server->idle, NULL);
  *serverp = server;
  return 0;
}

/* Root and the daemon's own user may use the control socket. */
static bool
ctl_peer_allowed (struct ctl_client *client, uid_t *uidp)
{
  struct ucred cred;
  socklen_t len = sizeof cred;

  if (getsockopt (client->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return false;
  *uidp = cred.uid;
  return cred.uid == 0 || cred.uid == geteuid ();
}

/* Answer request lines until the client goes or the server stops. */
static void
ctl_client_serve (struct ctl_client *client)
{
  struct ctl_reader *reader = malloc (sizeof *reader);
  json_object *reply;
  char *line;
  size_t len;
  int r;

  if (!reader)
    return;
  ctl_reader_init (reader);
  while ((r = ctl_read_line (client->fd, reader, &line, &len)) != 0) {
    if (r == -E2BIG)
      reply = ctl_reply_error (E2BIG, "request line longer than %u bytes",
                               CTL_LINE_MAX);
    else if (r < 0)
      break;
    else
      reply = ctl_handle_line (&client->server->ctx, line, len);
    r = ctl_send (client->fd, reply);
    json_object_put (reply);
    if (r < 0)
      break;
  }
  free (reader);
}

/* A client that may not use the daemon: its first request (awaited for
 * at most CTL_REFUSE_WAIT seconds) gets an EACCES reply, then it is cut off.
 */
static void
ctl_client_refuse (struct ctl_client *client, uid_t uid)
{
  struct timeval wait = { .tv_sec = CTL_REFUSE_WAIT };
  struct ctl_reader *reader = malloc (sizeof *reader);
  json_object *reply;
  char msg[128], *line;
  size_t len;

  if (reader) {
    setsockopt (client->fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    ctl_reader_init (reader);
    ctl_read_line (client->fd, reader, &line, &len);
    free (reader);
  }
  reply = ctl_reply_error (EACCES, "permission denied: uid %u may not "
                           "control this fssnapd", (unsigned) uid);
  ctl_send (client->fd, reply);
  json_object_put (reply);
  snprintf (msg, sizeof msg, "control: refused a client with uid %u",
            (unsigned) uid);
  ctl_server_log (client->server, FSSNAP_LOG_WARN, msg);
}

/* Takes server->lock to leave the client list. */
static void *
ctl_client_thread (void *arg)
{
  struct ctl_client *client = arg;
  struct ctl_server *server = client->server;
  struct ctl_client **p;
  uid_t uid = 0;

  if (ctl_peer_allowed (client, &uid))
    ctl_client_serve (client);
  else
    ctl_client_refuse (client, uid);
  pthread_mutex_lock (&server->lock);
  for (p = &server->clients; *p != client; p = &(*p)->next)
    ;
  *p = client->next;
  close (client->fd);
  if (--server->nclients == 0)
    pthread_cond_broadcast (&server->idle);
  pthread_mutex_unlock (&server->lock);
  free (client);
  return NULL;
}

/* Takes server->lock to join the client list. */
static void
ctl_server_admit (struct ctl_server *server, int fd)
{
  struct ctl_client *client = calloc (1, sizeof *client);
  pthread_attr_t attr;
  pthread_t thread;

  if (!client) {
    close (fd);
    return;
  }
  client->server = server;
  client->fd = fd;
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock (&server->lock);
  if (server->stopping
      || pthread_create (&thread, &attr, ctl_client_thread, client) != 0) {
    close (fd);
    free (client);
  }
  else {
    client->next = server->clients;
    server->clients = client;
    server->nclients++;
  }
  pthread_mutex_unlock (&server->lock);
  pthread_attr_destroy (&attr);
}

static void *
ctl_acceptor_thread (void *arg)
{
  struct ctl_server *server = arg;

  for (;;) {
    struct pollfd pfd[2] = {
      { .fd = server->listen_fd, .events = POLLIN },
      { .fd = server->wake[0], .events = POLLIN },
    };
    int fd;

    if (poll (pfd, 2, -1) < 0 && errno != EINTR)
      break;
    if (pfd[1].revents)
      break;
    if (!(pfd[0].revents & POLLIN))
      continue;
    fd = accept4 (server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
      ctl_server_admit (server, fd);
  }
  return NULL;
}

int
ctl_server_start (struct ctl_server *server, int listen_fd)
{
  int r;

  server->listen_fd = listen_fd;
  r = pthread_create (&server->acceptor, NULL, ctl_acceptor_thread, server);
  if (r != 0)
    return -r;
  server->started = true;
  return 0;
}

/* Takes server->lock. */
void
ctl_server_stop (struct ctl_server *server)
{
  struct ctl_client *c;

  if (server->started) {
    if (write (server->wake[1], "x", 1) < 0)
      abort ();                 /* a pipe of our own cannot fail */
    pthread_join (server->acceptor, NULL);
    server->started = false;
  }
  pthread_mutex_lock (&server->lock);
  server->stopping = true;
  for (c = server->clients; c; c = c->next)
    shutdown (c->fd, SHUT_RD);
  while (server->nclients > 0)
    pthread_cond_wait (&server->idle, &server->lock);
  pthread_mutex_unlock (&server->lock);
}

void
ctl_server_free (struct ctl_server *server)
{
  if (!server)
    return;
  ctl_server_stop (server);
  if (server->listen_fd >= 0)
    close (server->listen_fd);
  close (server->wake[0]);
  close (server->wake[1]);
  pthread_mutex_destroy (&server->lock);
  pthread_cond_destroy (&server->idle);
  free (server);
}
