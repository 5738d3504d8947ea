/* SPDX-License-Identifier: MIT */
/*
 * NBD frontend of fssnapd: a thin translation of the NBD protocol (fixed
 * newstyle, structured replies, base:allocation) into libfssnap calls.
 * Export "volume" (and the default, empty name) is the origin, read-write;
 * export "snap/<N>" is snapshot N, read-only; "clone/<K>" is writable
 * clone K (see fssnap_clones_create).  The export list is read from
 * the engine on every request, so snapshots appear and vanish by themselves.
 *
 * Threads: one acceptor thread per listening socket; per client, one thread
 * reads requests and a small pool runs them, so several requests are in
 * flight per client.  All state shared between clients is the engine's.
 */
#ifndef FSSNAP_NBD_H
#define FSSNAP_NBD_H

#include "libfssnap.h"

struct nbd_server;
struct tls_creds;

/* TLS policy of one listening socket. */
enum nbd_tls {
  NBD_TLS_OFF,                  /* STARTTLS refused (NBD_REP_ERR_UNSUP) */
  NBD_TLS_ON,                   /* offered; plaintext clients served too */
  NBD_TLS_REQUIRE,              /* nothing but STARTTLS and ABORT before TLS */
};

struct nbd_server_opts {
  struct fssnap_origin *origin;
  struct fssnap_clones *clones; /* exports clone/<K>; NULL: none */
  fssnap_log_fn log;            /* NULL: stderr */
  void *log_opaque;
  unsigned max_clients;         /* 0: default (64) */
  unsigned handshake_timeout;   /* seconds a client has to choose an export
                                   (else it is dropped, the TLS handshake
                                   included); 0: default (30) */
  const struct tls_creds *tls_creds;  /* nbd/tls.h; NULL: no TLS.  The
                                   caller frees it after the server. */
};

int nbd_server_new (const struct nbd_server_opts *opts,
                    struct nbd_server **serverp);
/* Serve clients arriving on listen_fd (a bound, listening socket, unix or
 * TCP), from a thread of the server's own.  The server owns the fd.
 */
int nbd_server_add_listener (struct nbd_server *server, int listen_fd);
/* The same with a TLS policy for that socket (anything but NBD_TLS_OFF
 * needs opts.tls_creds).  nbd_server_add_listener() is NBD_TLS_OFF.
 */
int nbd_server_add_listener_tls (struct nbd_server *server, int listen_fd,
                                 enum nbd_tls tls);
/* Stop accepting, let in-flight requests finish and their replies go out,
 * disconnect every client, join every thread.
 */
void nbd_server_stop (struct nbd_server *server);
/* Clients connected to the volume export now (past the handshake): a
 * rollback refuses to run under them.  No lock; a snapshot of a counter.
 */
unsigned nbd_server_volume_clients (struct nbd_server *server);
void nbd_server_free (struct nbd_server *server);

#endif /* FSSNAP_NBD_H */
