/* SPDX-License-Identifier: MIT */
/*
 * TLS for the NBD frontend (GnuTLS): the server's credentials, loaded once
 * at start-up, and one TLS session per connection that has sent
 * NBD_OPT_STARTTLS.  A session runs over the connection's plain transport
 * (struct nbd_transport) and is itself a transport, so the handshake and
 * transmission code read and write through it without knowing about TLS.
 *
 * Credentials are either pre-shared keys (a psktool file, "user:hexkey"
 * lines) or X.509 (a directory with ca-cert.pem, server-cert.pem,
 * server-key.pem and optionally ca-crl.pem); with verify_peer a client
 * must present a certificate signed by the CA.
 */
#ifndef FSSNAP_NBD_TLS_H
#define FSSNAP_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct nbd_transport;

struct tls_config {
  const char *psk_file;         /* NULL: no PSK */
  const char *cert_dir;         /* NULL: no X.509 */
  bool verify_peer;             /* X.509 only: require a client certificate */
};

/* Immutable once loaded: shared by every connection without a lock. */
struct tls_creds;

/* Load and check the credentials of cfg (exactly one kind).  0, or a
 * negative errno with one line in err.
 */
int tls_creds_load (const struct tls_config *cfg, struct tls_creds **credsp,
                    char *err, size_t errlen);
void tls_creds_free (struct tls_creds *creds);

struct tls_session;

/* Run the server side of a TLS handshake over under, taking at most
 * timeout seconds (0: no limit of its own).  0 with *sessionp set, or a
 * negative errno with the reason in err (nothing to free).
 */
int tls_session_start (const struct tls_creds *creds,
                       const struct nbd_transport *under, unsigned timeout,
                       struct tls_session **sessionp, char *err,
                       size_t errlen);
/* The transport that reads and writes through the session.  recv may run
 * in one thread while send runs in another (the caller serialises the
 * sends); it lives as long as the session.
 */
const struct nbd_transport *tls_session_transport (struct tls_session *ts);
/* Who the peer is, for the log: the PSK user or the certificate's DN,
 * and the protocol and cipher.
 */
void tls_session_peer (struct tls_session *ts, char *buf, size_t len);
/* Send close_notify and free the session. */
void tls_session_free (struct tls_session *ts);

#endif /* FSSNAP_NBD_TLS_H */
