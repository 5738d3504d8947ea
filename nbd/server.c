/* SPDX-License-Identifier: MIT */
/*
 * The NBD server object: listening sockets, one acceptor thread each, and
 * one thread per client that runs nbd_session_run() over the client's
 * socket.  Client threads are joinable: an acceptor reaps those that have
 * finished before it accepts again, and nbd_server_stop() joins the rest.
 *
 * Stop: the acceptors are woken through a pipe and joined; each client
 * socket is shut down for reading, so readers see the end of the stream
 * while workers still send the replies of requests in flight.  Clients
 * still there after NBD_STOP_GRACE seconds (a peer that does not read its
 * replies) are shut down both ways.
 *
 * Each listener has its TLS policy (nbd_server_add_listener_tls); a
 * client's session gets a copy of the server's environment with it.
 *
 * Locks: server->lock guards the client list, the counts and the
 * stopping flag; it is never held while a session runs.  A client's fd is
 * closed under server->lock so that stop never shuts down a reused fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nbd/internal.h"
#include "nbd/nbd.h"

#define NBD_DEFAULT_MAX_CLIENTS 64
#define NBD_HANDSHAKE_TIMEOUT   30    /* seconds */
#define NBD_STOP_GRACE          10   /* seconds */

struct nbd_client {
  struct nbd_client *next;
  struct nbd_server *server;
  struct nbd_env env;           /* the server's, with its listener's TLS */
  int fd;                       /* -1 once closed; under server->lock */
  pthread_t thread;
  bool done;                    /* session over; under server->lock */
};

struct nbd_listener {
  struct nbd_listener *next;
  struct nbd_server *server;
  int fd;
  enum nbd_tls tls;
  pthread_t thread;
};

struct nbd_server {
  struct nbd_env env;
  unsigned max_clients;
  int stop_pipe[2];             /* readable once stop begins */
  pthread_mutex_t lock;
  pthread_cond_t idle_cv;       /* a client finished */
  struct nbd_client *clients;   /* under lock */
  struct nbd_listener *listeners; /* under lock */
  unsigned live;                /* clients not done; under lock */
  bool stopping;                /* under lock */
  _Atomic unsigned volume_sessions;     /* env.volume_sessions */
};

/* ---- Socket transport ------------------------------------------------ */

static ssize_t
nbd_fd_recv (void *opaque, void *buf, size_t len)
{
  struct nbd_client *cl = opaque;
  ssize_t r = recv (cl->fd, buf, len, 0);
  return r < 0 ? -errno : r;
}

static ssize_t
nbd_fd_send (void *opaque, const void *buf, size_t len, bool more)
{
  struct nbd_client *cl = opaque;
  ssize_t r = send (cl->fd, buf, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
  return r < 0 ? -errno : r;
}

static void
nbd_fd_shutdown (void *opaque)
{
  struct nbd_client *cl = opaque;
  shutdown (cl->fd, SHUT_RDWR);
}

static void
nbd_fd_set_timeout (void *opaque, unsigned seconds)
{
  struct nbd_client *cl = opaque;
  struct timeval tv = { .tv_sec = seconds };
  setsockopt (cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int
nbd_fd_wait_readable (void *opaque, unsigned ms)
{
  struct nbd_client *cl = opaque;
  struct pollfd p = { .fd = cl->fd, .events = POLLIN };
  int r = poll (&p, 1, ms > INT_MAX ? -1 : (int) ms);

  return r < 0 ? -errno : r;
}

/* ---- Clients --------------------------------------------------------- */

/* Client thread.  Takes server->lock at the end only. */
static void *
nbd_client_thread (void *opaque)
{
  struct nbd_client *cl = opaque;
  struct nbd_server *server = cl->server;
  struct nbd_transport t = {
    .opaque = cl, .recv = nbd_fd_recv, .send = nbd_fd_send,
    .shutdown = nbd_fd_shutdown, .set_timeout = nbd_fd_set_timeout,
    .wait_readable = nbd_fd_wait_readable,
  };
  int one = 1;

  /* Replies are whole messages: send them at once (fails on unix). */
  setsockopt (cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  nbd_session_run (&cl->env, &t);
  pthread_mutex_lock (&server->lock);
  close (cl->fd);
  cl->fd = -1;
  cl->done = true;
  server->live--;
  pthread_cond_broadcast (&server->idle_cv);
  pthread_mutex_unlock (&server->lock);
  return NULL;
}

/* Join and free finished clients.  The caller holds server->lock. */
static void
nbd_reap_clients (struct nbd_server *server)
{
  struct nbd_client **pp = &server->clients, *cl;

  while ((cl = *pp) != NULL) {
    if (!cl->done) {
      pp = &cl->next;
      continue;
    }
    *pp = cl->next;
    pthread_join (cl->thread, NULL);
    free (cl);
  }
}

/* Start a session for an accepted socket, or close it.  Takes
 * server->lock.
 */
static void
nbd_start_client (struct nbd_server *server, enum nbd_tls tls, int fd)
{
  struct nbd_client *cl = calloc (1, sizeof *cl);
  const char *why = NULL;

  pthread_mutex_lock (&server->lock);
  nbd_reap_clients (server);
  if (!cl)
    why = "out of memory";
  else if (server->stopping)
    why = "server stopping";
  else if (server->live >= server->max_clients)
    why = "too many clients";
  if (!why) {
    cl->server = server;
    cl->env = server->env;
    cl->env.tls = tls;
    cl->fd = fd;
    if (pthread_create (&cl->thread, NULL, nbd_client_thread, cl) == 0) {
      cl->next = server->clients;
      server->clients = cl;
      server->live++;
    } else
      why = "cannot start a thread";
  }
  pthread_mutex_unlock (&server->lock);
  if (why) {
    nbd_log (&server->env, FSSNAP_LOG_WARN, "nbd: client refused: %s", why);
    close (fd);
    free (cl);
  }
}

/* ---- Listeners ------------------------------------------------------- */

/* Wait for a client or for stop: the accepted fd, -1 to retry, -2 to end. */
static int
nbd_accept_one (struct nbd_listener *l)
{
  struct pollfd fds[2] = {
    { .fd = l->fd, .events = POLLIN },
    { .fd = l->server->stop_pipe[0], .events = POLLIN },
  };
  int fd;

  if (poll (fds, 2, -1) < 0)
    return errno == EINTR ? -1 : -2;
  if (fds[1].revents)
    return -2;
  if (!fds[0].revents)
    return -1;
  fd = accept4 (l->fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0)
    return fd;
  switch (errno) {
  case EINTR: case EAGAIN: case ECONNABORTED: case EPROTO:
    return -1;
  case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
    nbd_log (&l->server->env, FSSNAP_LOG_WARN, "nbd: accept: %s",
             strerror (errno));
    poll (NULL, 0, 100);        /* let some client go first */
    return -1;
  default:
    nbd_log (&l->server->env, FSSNAP_LOG_ERR, "nbd: accept: %s",
             strerror (errno));
    return -2;
  }
}

static void *
nbd_listener_thread (void *opaque)
{
  struct nbd_listener *l = opaque;
  int fd;

  while ((fd = nbd_accept_one (l)) != -2)
    if (fd >= 0)
      nbd_start_client (l->server, l->tls, fd);
  return NULL;
}

/* ---- Public API ------------------------------------------------------ */

int
nbd_server_new (const struct nbd_server_opts *opts,
                struct nbd_server **serverp)
{
  struct nbd_server *server;

  if (!opts->origin)
    return -EINVAL;
  server = calloc (1, sizeof *server);
  if (!server)
    return -ENOMEM;
  if (pipe2 (server->stop_pipe, O_CLOEXEC) < 0) {
    int e = -errno;
    free (server);
    return e;
  }
  server->env.origin = opts->origin;
  server->env.clones = opts->clones;
  server->env.log = opts->log;
  server->env.log_opaque = opts->log_opaque;
  server->env.volume_sessions = &server->volume_sessions;
  server->env.tls_creds = opts->tls_creds;
  server->env.handshake_timeout = opts->handshake_timeout
                                  ? opts->handshake_timeout
                                  : NBD_HANDSHAKE_TIMEOUT;
  server->max_clients = opts->max_clients ? opts->max_clients
                                          : NBD_DEFAULT_MAX_CLIENTS;
  pthread_mutex_init (&server->lock, NULL);
  pthread_cond_init (&server->idle_cv, NULL);
  *serverp = server;
  return 0;
}

unsigned
nbd_server_volume_clients (struct nbd_server *server)
{
  return atomic_load (&server->volume_sessions);
}

int
nbd_server_add_listener (struct nbd_server *server, int listen_fd)
{
  return nbd_server_add_listener_tls (server, listen_fd, NBD_TLS_OFF);
}

/* Takes server->lock. */
int
nbd_server_add_listener_tls (struct nbd_server *server, int listen_fd,
                             enum nbd_tls tls)
{
  struct nbd_listener *l = calloc (1, sizeof *l);
  int r = 0;

  if (!l || (tls != NBD_TLS_OFF && !server->env.tls_creds)) {
    close (listen_fd);
    free (l);
    return l ? -EINVAL : -ENOMEM;
  }
  l->server = server;
  l->fd = listen_fd;
  l->tls = tls;
  pthread_mutex_lock (&server->lock);
  if (server->stopping)
    r = -ESHUTDOWN;
  else if (pthread_create (&l->thread, NULL, nbd_listener_thread, l) != 0)
    r = -EAGAIN;
  else {
    l->next = server->listeners;
    server->listeners = l;
  }
  pthread_mutex_unlock (&server->lock);
  if (r < 0) {
    close (listen_fd);
    free (l);
  }
  return r;
}

/* Shut down the sockets of live clients.  The caller holds server->lock. */
static void
nbd_shutdown_clients (struct nbd_server *server, int how)
{
  struct nbd_client *cl;

  for (cl = server->clients; cl; cl = cl->next)
    if (cl->fd >= 0)
      shutdown (cl->fd, how);
}

/* Wait for every client, shutting the stubborn ones down both ways after
 * the grace period.  Takes server->lock.
 */
static void
nbd_drain_clients (struct nbd_server *server)
{
  struct timespec deadline;
  bool forced = false;

  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += NBD_STOP_GRACE;
  pthread_mutex_lock (&server->lock);
  nbd_shutdown_clients (server, SHUT_RD);
  while (server->live > 0) {
    if (forced)
      pthread_cond_wait (&server->idle_cv, &server->lock);
    else if (pthread_cond_timedwait (&server->idle_cv, &server->lock,
                                     &deadline) == ETIMEDOUT) {
      nbd_log (&server->env, FSSNAP_LOG_WARN,
               "nbd: %u client(s) still busy, disconnecting them",
               server->live);
      nbd_shutdown_clients (server, SHUT_RDWR);
      forced = true;
    }
  }
  nbd_reap_clients (server);
  pthread_mutex_unlock (&server->lock);
}

/* Takes server->lock. */
void
nbd_server_stop (struct nbd_server *server)
{
  struct nbd_listener *l;
  char b = 0;

  pthread_mutex_lock (&server->lock);
  if (server->stopping) {
    pthread_mutex_unlock (&server->lock);
    return;
  }
  server->stopping = true;
  pthread_mutex_unlock (&server->lock);
  if (write (server->stop_pipe[1], &b, 1) < 0)
    nbd_log (&server->env, FSSNAP_LOG_ERR, "nbd: stop: %s", strerror (errno));
  /* No listener is added once stopping is set: the list is ours. */
  while ((l = server->listeners) != NULL) {
    server->listeners = l->next;
    pthread_join (l->thread, NULL);
    close (l->fd);
    free (l);
  }
  nbd_drain_clients (server);
}

void
nbd_server_free (struct nbd_server *server)
{
  if (!server)
    return;
  nbd_server_stop (server);
  close (server->stop_pipe[0]);
  close (server->stop_pipe[1]);
  pthread_cond_destroy (&server->idle_cv);
  pthread_mutex_destroy (&server->lock);
  free (server);
}
