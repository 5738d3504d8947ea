/* SPDX-License-Identifier: MIT */
/*
 * TLS for the NBD frontend, with GnuTLS.  See nbd/tls.h for the parts.
 *
 * Credentials are checked entirely at load time (files present and
 * readable, every PSK line well formed, the key matching the
 * certificate), so that fssnapd refuses to start with one line rather
 * than failing each client later.
 *
 * A session's GnuTLS object reads and writes through the connection's
 * plain transport (tls_pull/tls_push), never through the socket behind
 * its back; so whatever a client sent after NBD_OPT_STARTTLS, in the same
 * packet or not, is read by GnuTLS as handshake data and never as
 * plaintext (a plain recv of the option takes exactly its bytes).
 *
 * Sends: "more" corks a message's parts (a reply header and a payload up
 * to TLS_CORK_MAX), so they leave as full records in one sendmsg
 * (tls_vec_push) rather than as a small record and one syscall per 16 KiB
 * record; a larger payload is sent after the cork is flushed rather than
 * copied into it.  Only one thread sends at a time
 * (conn->send_lock); one other thread may receive meanwhile, which
 * GnuTLS allows.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "nbd/internal.h"
#include "nbd/tls.h"

/* TLS 1.3 ties an external PSK to SHA-256, which rules out AES-256-GCM
 * (a SHA-384 suite): without this order the next in NORMAL, CHACHA20,
 * would win, an order of magnitude slower than AES-GCM on a CPU with AES
 * instructions.
 */
#define TLS_PRIORITY_PSK  "NORMAL:%SERVER_PRECEDENCE:-CIPHER-ALL:" \
                          "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:" \
                          "+AES-128-CCM:+AES-256-CCM:+AES-128-CBC:" \
                          "+AES-256-CBC:+ECDHE-PSK:+DHE-PSK:+PSK"
#define TLS_PRIORITY_X509 "NORMAL"
#define TLS_CORK_MAX      (1u << 20)  /* larger sends bypass the cork */

struct tls_creds {
  gnutls_psk_server_credentials_t psk;          /* one of these two */
  gnutls_certificate_credentials_t x509;
  bool verify_peer;
  gnutls_priority_t priority;
};

struct tls_session {
  gnutls_session_t gs;
  const struct tls_creds *creds;
  const struct nbd_transport *under;
  struct nbd_transport t;       /* over gs */
  bool corked;                  /* under the caller's send lock */
  struct timespec deadline;     /* of the handshake; tv_sec 0 once done */
  bool timed_out;
};

/* One line into err, without the final period GnuTLS's messages have. */
static void __attribute__ ((format (printf, 3, 4)))
tls_err (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  size_t n;

  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
  n = strlen (err);
  while (n > 0 && (err[n - 1] == '.' || err[n - 1] == ' '))
    err[--n] = '\0';
}

/* ---- Credentials ------------------------------------------------------ */

/* One psktool line: a non-empty user without ':', then an even,
 * non-empty run of hex digits.
 */
static bool
tls_psk_line_ok (const char *line)
{
  const char *colon = strchr (line, ':');
  size_t n;

  if (!colon || colon == line)
    return false;
  n = strlen (colon + 1);
  return n > 0 && n % 2 == 0 && strspn (colon + 1, "0123456789abcdefABCDEF")
                                  == n;
}

static int
tls_check_psk_file (const char *path, char *err, size_t errlen)
{
  FILE *f = fopen (path, "re");
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned lineno = 0, users = 0;
  int r = 0;

  if (!f) {
    r = -errno;
    tls_err (err, errlen, "--tls-psk %s: %s", path, strerror (-r));
    return r;
  }
  while (r == 0 && (n = getline (&line, &cap, f)) >= 0) {
    lineno++;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
      line[--n] = '\0';
    if (n == 0)
      continue;
    if (!tls_psk_line_ok (line)) {
      tls_err (err, errlen, "--tls-psk %s: line %u is not \"user:hexkey\" "
               "(as psktool writes)", path, lineno);
      r = -EINVAL;
    }
    users++;
  }
  free (line);
  fclose (f);
  if (r == 0 && users == 0) {
    tls_err (err, errlen, "--tls-psk %s: %s", path, "no key in the file");
    r = -EINVAL;
  }
  return r;
}

static int
tls_load_psk (struct tls_creds *c, const char *path, char *err,
              size_t errlen)
{
  int r = tls_check_psk_file (path, err, errlen);

  if (r < 0)
    return r;
  if (gnutls_psk_allocate_server_credentials (&c->psk) < 0
      || gnutls_psk_set_server_credentials_file (c->psk, path) < 0
      || gnutls_psk_set_server_known_dh_params (c->psk,
                                                GNUTLS_SEC_PARAM_MEDIUM) < 0) {
    tls_err (err, errlen, "--tls-psk %s: %s", path,
             "GnuTLS cannot use the file");
    return -EINVAL;
  }
  return 0;
}

/* DIR/name must be a readable file; its path in path[len]. */
static int
tls_cert_file (const char *dir, const char *name, char *path, size_t len,
               char *err, size_t errlen)
{
  snprintf (path, len, "%s/%s", dir, name);
  if (access (path, R_OK) == 0)
    return 0;
  int r = -errno;
  tls_err (err, errlen, "--tls-certificates: %s: %s", path, strerror (-r));
  return r;
}

static int
tls_load_x509 (struct tls_creds *c, const char *dir, char *err,
               size_t errlen)
{
  char ca[4096], cert[4096], key[4096], crl[4096];
  int r;

  if ((r = tls_cert_file (dir, "ca-cert.pem", ca, sizeof ca, err, errlen)) < 0
      || (r = tls_cert_file (dir, "server-cert.pem", cert, sizeof cert, err,
                             errlen)) < 0
      || (r = tls_cert_file (dir, "server-key.pem", key, sizeof key, err,
                             errlen)) < 0)
    return r;
  if (gnutls_certificate_allocate_credentials (&c->x509) < 0) {
    tls_err (err, errlen, "out of memory");
    return -ENOMEM;
  }
  r = gnutls_certificate_set_x509_trust_file (c->x509, ca,
                                              GNUTLS_X509_FMT_PEM);
  if (r <= 0) {
    tls_err (err, errlen, "--tls-certificates: %s: %s", ca,
             r < 0 ? gnutls_strerror (r) : "no certificate in the file");
    return -EINVAL;
  }
  r = gnutls_certificate_set_x509_key_file (c->x509, cert, key,
                                            GNUTLS_X509_FMT_PEM);
  if (r < 0) {
    tls_err (err, errlen, "--tls-certificates: server-cert.pem and "
             "server-key.pem in %s: %s", dir, gnutls_strerror (r));
    return -EINVAL;
  }
  snprintf (crl, sizeof crl, "%s/ca-crl.pem", dir);
  if (access (crl, F_OK) == 0) {
    r = gnutls_certificate_set_x509_crl_file (c->x509, crl,
                                              GNUTLS_X509_FMT_PEM);
    if (r < 0) {
      tls_err (err, errlen, "--tls-certificates: %s: %s", crl,
               gnutls_strerror (r));
      return -EINVAL;
    }
  }
  return 0;
}

int
tls_creds_load (const struct tls_config *cfg, struct tls_creds **credsp,
                char *err, size_t errlen)
{
  struct tls_creds *c;
  const char *prio;
  int r;

  if (!cfg->psk_file == !cfg->cert_dir) {
    tls_err (err, errlen, "%s", "give one of --tls-psk and "
             "--tls-certificates");
    return -EINVAL;
  }
  c = calloc (1, sizeof *c);
  if (!c) {
    tls_err (err, errlen, "out of memory");
    return -ENOMEM;
  }
  c->verify_peer = cfg->verify_peer;
  r = cfg->psk_file ? tls_load_psk (c, cfg->psk_file, err, errlen)
                    : tls_load_x509 (c, cfg->cert_dir, err, errlen);
  prio = cfg->psk_file ? TLS_PRIORITY_PSK : TLS_PRIORITY_X509;
  if (r == 0 && gnutls_priority_init (&c->priority, prio, NULL) < 0) {
    tls_err (err, errlen, "GnuTLS refuses the priority string %s", prio);
    r = -EINVAL;
  }
  if (r < 0) {
    tls_creds_free (c);
    return r;
  }
  *credsp = c;
  return 0;
}

void
tls_creds_free (struct tls_creds *c)
{
  if (!c)
    return;
  if (c->priority)
    gnutls_priority_deinit (c->priority);
  if (c->psk)
    gnutls_psk_free_server_credentials (c->psk);
  if (c->x509)
    gnutls_certificate_free_credentials (c->x509);
  free (c);
}

/* ---- GnuTLS over the plain transport ---------------------------------- */

/* Milliseconds left before the handshake deadline (at least 0). */
static unsigned
tls_ms_left (const struct tls_session *ts)
{
  struct timespec now;
  int64_t ms;

  clock_gettime (CLOCK_MONOTONIC, &now);
  ms = (int64_t) (ts->deadline.tv_sec - now.tv_sec) * 1000
       + (ts->deadline.tv_nsec - now.tv_nsec) / 1000000;
  return ms > 0 ? (unsigned) ms : 0;
}

/* During the handshake every read waits only until the deadline, so that
 * a client trickling bytes cannot stretch it (GnuTLS's own handshake
 * timeout is not checked between the reads of one record).
 */
static bool
tls_handshake_expired (struct tls_session *ts)
{
  unsigned left;

  if (ts->deadline.tv_sec == 0)
    return false;
  left = tls_ms_left (ts);
  if (left > 0 && (!ts->under->wait_readable
                   || ts->under->wait_readable (ts->under->opaque, left) != 0))
    return false;
  ts->timed_out = true;
  return true;
}

static ssize_t
tls_pull (gnutls_transport_ptr_t p, void *buf, size_t len)
{
  struct tls_session *ts = p;
  ssize_t r;

  if (tls_handshake_expired (ts)) {
    gnutls_transport_set_errno (ts->gs, ETIMEDOUT);
    return -1;
  }
  do
    r = ts->under->recv (ts->under->opaque, buf, len);
  while (r == -EINTR);
  if (r < 0) {
    gnutls_transport_set_errno (ts->gs, (int) -r);
    return -1;
  }
  return r;
}

static ssize_t
tls_push (gnutls_transport_ptr_t p, const void *buf, size_t len)
{
  struct tls_session *ts = p;
  ssize_t r;

  do
    r = ts->under->send (ts->under->opaque, buf, len, false);
  while (r == -EINTR);
  if (r < 0) {
    gnutls_transport_set_errno (ts->gs, (int) -r);
    return -1;
  }
  return r;
}

/* Several records at once (a flushed cork): one sendmsg. */
static ssize_t
tls_vec_push (gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
  struct tls_session *ts = p;
  ssize_t done = 0;
  int i;

  for (i = 0; i < iovcnt; i++) {
    ssize_t r;
    do
      r = ts->under->send (ts->under->opaque, iov[i].iov_base, iov[i].iov_len,
                           i + 1 < iovcnt);
    while (r == -EINTR);
    if (r < 0) {
      if (done > 0)
        return done;
      gnutls_transport_set_errno (ts->gs, (int) -r);
      return -1;
    }
    done += r;
    if ((size_t) r < iov[i].iov_len)
      break;
  }
  return done;
}

/* GnuTLS waits for data with this when a timeout is set (the handshake's). */
static int
tls_pull_timeout (gnutls_transport_ptr_t p, unsigned int ms)
{
  struct tls_session *ts = p;
  int r;

  if (!ts->under->wait_readable)
    return 1;                   /* a buffer: data or end, never waits */
  r = ts->under->wait_readable (ts->under->opaque, ms);
  if (r < 0) {
    gnutls_transport_set_errno (ts->gs, -r);
    return -1;
  }
  return r;
}

/* GnuTLS error -> negative errno for the NBD code. */
static ssize_t
tls_errno (ssize_t r)
{
  switch (r) {
  case GNUTLS_E_INTERRUPTED: return -EINTR;
  case GNUTLS_E_AGAIN: return -EAGAIN;
  case GNUTLS_E_TIMEDOUT: return -ETIMEDOUT;
  case GNUTLS_E_PREMATURE_TERMINATION: return -ECONNRESET;
  default: return -EPROTO;
  }
}

/* ---- The session as a transport --------------------------------------- */

static ssize_t
tls_recv (void *opaque, void *buf, size_t len)
{
  struct tls_session *ts = opaque;
  ssize_t r = gnutls_record_recv (ts->gs, buf, len);

  return r >= 0 ? r : tls_errno (r);
}

static ssize_t
tls_flush (struct tls_session *ts)
{
  ssize_t r;

  ts->corked = false;
  r = gnutls_record_uncork (ts->gs, GNUTLS_RECORD_WAIT);
  return r >= 0 ? 0 : tls_errno (r);
}

static ssize_t
tls_send (void *opaque, const void *buf, size_t len, bool more)
{
  struct tls_session *ts = opaque;
  bool cork = len <= TLS_CORK_MAX;
  ssize_t r;

  if (ts->corked && !cork && (r = tls_flush (ts)) < 0)
    return r;
  if (cork && !ts->corked) {
    gnutls_record_cork (ts->gs);
    ts->corked = true;
  }
  r = gnutls_record_send (ts->gs, buf, len);
  if (r < 0)
    return tls_errno (r);
  if (ts->corked && !more) {
    ssize_t f = tls_flush (ts);
    if (f < 0)
      return f;
  }
  return r;
}

static void
tls_shutdown (void *opaque)
{
  struct tls_session *ts = opaque;

  if (ts->under->shutdown)
    ts->under->shutdown (ts->under->opaque);
}

static void
tls_set_timeout (void *opaque, unsigned seconds)
{
  struct tls_session *ts = opaque;

  if (ts->under->set_timeout)
    ts->under->set_timeout (ts->under->opaque, seconds);
}

static int
tls_wait_readable (void *opaque, unsigned ms)
{
  struct tls_session *ts = opaque;

  if (gnutls_record_check_pending (ts->gs) > 0)
    return 1;
  return ts->under->wait_readable
         ? ts->under->wait_readable (ts->under->opaque, ms) : 1;
}

/* ---- Handshake -------------------------------------------------------- */

static int
tls_session_setup (struct tls_session *ts, unsigned timeout)
{
  const struct tls_creds *c = ts->creds;
  int r;

  r = gnutls_init (&ts->gs, GNUTLS_SERVER);
  if (r < 0)
    return r;
  r = gnutls_priority_set (ts->gs, c->priority);
  if (r == 0)
    r = c->psk ? gnutls_credentials_set (ts->gs, GNUTLS_CRD_PSK, c->psk)
               : gnutls_credentials_set (ts->gs, GNUTLS_CRD_CERTIFICATE,
                                         c->x509);
  if (r < 0)
    return r;
  if (c->x509)
    gnutls_certificate_server_set_request (ts->gs, c->verify_peer
                                                   ? GNUTLS_CERT_REQUIRE
                                                   : GNUTLS_CERT_IGNORE);
  gnutls_transport_set_ptr (ts->gs, ts);
  gnutls_transport_set_pull_function (ts->gs, tls_pull);
  gnutls_transport_set_push_function (ts->gs, tls_push);
  gnutls_transport_set_vec_push_function (ts->gs, tls_vec_push);
  gnutls_transport_set_pull_timeout_function (ts->gs, tls_pull_timeout);
  gnutls_handshake_set_timeout (ts->gs, timeout ? timeout * 1000u
                                        : GNUTLS_INDEFINITE_TIMEOUT);
  if (timeout) {
    clock_gettime (CLOCK_MONOTONIC, &ts->deadline);
    ts->deadline.tv_sec += timeout;
  }
  return 0;
}

/* With --tls-verify-peer, the client's certificate must chain to the CA
 * (and not be revoked): 0, or a GnuTLS error with the reason in err.
 */
static int
tls_verify_client (struct tls_session *ts, char *err, size_t errlen)
{
  gnutls_datum_t why = { NULL, 0 };
  unsigned status = 0;
  int r;

  if (!ts->creds->x509 || !ts->creds->verify_peer)
    return 0;
  r = gnutls_certificate_verify_peers2 (ts->gs, &status);
  if (r < 0) {
    tls_err (err, errlen, "client certificate: %s", gnutls_strerror (r));
    return r;
  }
  if (status == 0)
    return 0;
  gnutls_certificate_verification_status_print (status,
                                                GNUTLS_CRT_X509, &why, 0);
  tls_err (err, errlen, "client certificate refused: %s",
           why.data ? (const char *) why.data : "not trusted");
  gnutls_free (why.data);
  return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
}

int
tls_session_start (const struct tls_creds *creds,
                   const struct nbd_transport *under, unsigned timeout,
                   struct tls_session **sessionp, char *err, size_t errlen)
{
  struct tls_session *ts = calloc (1, sizeof *ts);
  int r;

  if (!ts) {
    tls_err (err, errlen, "out of memory");
    return -ENOMEM;
  }
  ts->creds = creds;
  ts->under = under;
  ts->t = (struct nbd_transport) {
    .opaque = ts, .recv = tls_recv, .send = tls_send,
    .shutdown = tls_shutdown, .set_timeout = tls_set_timeout,
    .wait_readable = tls_wait_readable,
  };
  r = tls_session_setup (ts, timeout);
  if (r < 0)
    tls_err (err, errlen, "TLS set-up: %s", gnutls_strerror (r));
  else {
    do
      r = gnutls_handshake (ts->gs);
    while (r == GNUTLS_E_INTERRUPTED);
    ts->deadline.tv_sec = 0;
    if (r < 0 && ts->timed_out)
      tls_err (err, errlen, "TLS handshake: not done within %u s", timeout);
    else if (r < 0)
      tls_err (err, errlen, "TLS handshake: %s", gnutls_strerror (r));
    else
      r = tls_verify_client (ts, err, errlen);
  }
  if (r < 0) {
    bool late = r == GNUTLS_E_TIMEDOUT || ts->timed_out;
    if (ts->gs)
      gnutls_deinit (ts->gs);
    free (ts);
    return late ? -ETIMEDOUT : -EPROTO;
  }
  *sessionp = ts;
  return 0;
}

const struct nbd_transport *
tls_session_transport (struct tls_session *ts)
{
  return &ts->t;
}

/* The peer's identity into buf. */
static void
tls_session_who (struct tls_session *ts, char *buf, size_t len)
{
  const gnutls_datum_t *certs;
  gnutls_x509_crt_t crt;
  unsigned n = 0;
  size_t dnlen = len;

  snprintf (buf, len, "anonymous client");
  if (ts->creds->psk) {
    const char *user = gnutls_psk_server_get_username (ts->gs);
    snprintf (buf, len, "PSK user \"%s\"", user ? user : "");
    return;
  }
  certs = gnutls_certificate_get_peers (ts->gs, &n);
  if (!certs || n == 0 || len == 0 || gnutls_x509_crt_init (&crt) < 0)
    return;
  if (gnutls_x509_crt_import (crt, &certs[0], GNUTLS_X509_FMT_DER) < 0
      || gnutls_x509_crt_get_dn (crt, buf, &dnlen) < 0)
    snprintf (buf, len, "client with an unreadable certificate");
  gnutls_x509_crt_deinit (crt);
}

void
tls_session_peer (struct tls_session *ts, char *buf, size_t len)
{
  char *desc = gnutls_session_get_desc (ts->gs);
  size_t n;

  tls_session_who (ts, buf, len);
  n = strlen (buf);
  if (desc && n + 3 < len)
    snprintf (buf + n, len - n, ", %s", desc);
  gnutls_free (desc);
}

void
tls_session_free (struct tls_session *ts)
{
  if (!ts)
    return;
  gnutls_bye (ts->gs, GNUTLS_SHUT_WR);
  gnutls_deinit (ts->gs);
  free (ts);
}
