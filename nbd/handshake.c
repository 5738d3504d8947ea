/* SPDX-License-Identifier: MIT */
/*
 * Fixed newstyle handshake: the server greets, the client sends options
 * one at a time and waits for their final reply, until NBD_OPT_GO or
 * NBD_OPT_EXPORT_NAME chooses an export (transmission follows) or
 * NBD_OPT_ABORT ends the session.  Option data is read whole (at most
 * NBD_MAX_OPTION_DATA bytes; larger data is drained and refused), then
 * parsed with every length checked against what was received.
 *
 * A broken framing (bad magic, unknown client flags, an EXPORT_NAME we
 * cannot serve) drops the connection; everything else gets an error
 * reply and the client may go on.
 *
 * TLS (env->tls): NBD_OPT_STARTTLS is acknowledged, then the TLS
 * handshake runs on the same socket and every later byte goes through
 * the session (s->t is swapped).  A failed handshake ends the session.
 * What was negotiated before STARTTLS (structured replies, meta
 * contexts) is forgotten: a man in the middle may have chosen it.  When
 * TLS is required, every option before it but STARTTLS and ABORT gets
 * NBD_REP_ERR_TLS_REQD once its data is consumed, and EXPORT_NAME, which
 * has no error reply, drops the connection.  Bytes the client sent after
 * STARTTLS were not read with it (options are read to their exact
 * length), so they reach GnuTLS as handshake data, never the parser.
 *
 * Runs on the connection's own thread; no locks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nbd/internal.h"

enum { NBD_OPT_NEXT, NBD_OPT_TRANSMIT, NBD_OPT_END };

static int
nbd_opt_reply (struct nbd_session *s, uint32_t opt, uint32_t type,
               const void *data, uint32_t len)
{
  uint8_t h[20];
  int r;

  nbd_put64 (h, NBD_OPT_REPLY_MAGIC);
  nbd_put32 (h + 8, opt);
  nbd_put32 (h + 12, type);
  nbd_put32 (h + 16, len);
  r = nbd_send_all (s->t, h, sizeof h, len > 0);
  if (r == 0 && len > 0)
    r = nbd_send_all (s->t, data, len, false);
  return r < 0 ? r : NBD_OPT_NEXT;
}

/* An error reply with a message for humans; the session goes on. */
static int __attribute__ ((format (printf, 4, 5)))
nbd_opt_error (struct nbd_session *s, uint32_t opt, uint32_t type,
               const char *fmt, ...)
{
  char msg[256];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    n = 0;
  if ((size_t) n >= sizeof msg)
    n = sizeof msg - 1;
  nbd_log (s->env, FSSNAP_LOG_DEBUG, "nbd: option %u refused: %s", opt, msg);
  return nbd_opt_reply (s, opt, type, msg, (uint32_t) n);
}

static int
nbd_opt_invalid (struct nbd_session *s, uint32_t opt)
{
  return nbd_opt_error (s, opt, NBD_REP_ERR_INVALID,
                        "malformed data for option %u", opt);
}

/* Copy a protocol string into name[NBD_MAX_STRING + 1]; false if it is
 * too long or holds a NUL.
 */
static bool
nbd_get_string (const uint8_t *p, uint32_t len, char *name)
{
  if (len > NBD_MAX_STRING || memchr (p, '\0', len))
    return false;
  memcpy (name, p, len);
  name[len] = '\0';
  return true;
}

static void
nbd_canonical_name (const struct nbd_export *exp, char *buf, size_t len)
{
  if (exp->kind == NBD_EXPORT_VOLUME)
    snprintf (buf, len, "volume");
  else if (exp->kind == NBD_EXPORT_CLONE)
    snprintf (buf, len, "clone/%u", exp->num);
  else
    snprintf (buf, len, "snap/%u", exp->num);
}

/* The export is chosen: keep it, and keep the metadata context only if it
 * was selected for this same export.
 */
static void
nbd_choose_export (struct nbd_session *s, const struct nbd_export *exp)
{
  s->exp = *exp;
  s->have_export = true;
  if (s->meta_kind != exp->kind || s->meta_num != exp->num) {
    s->meta = false;
    s->nbitmaps = 0;
  }
}

/* ---- NBD_OPT_INFO and NBD_OPT_GO ------------------------------------- */

static int
nbd_send_info (struct nbd_session *s, uint32_t opt, uint16_t type,
               const void *data, size_t len)
{
  uint8_t buf[2 + NBD_MAX_STRING];

  if (len > NBD_MAX_STRING)
    len = NBD_MAX_STRING;
  nbd_put16 (buf, type);
  memcpy (buf + 2, data, len);
  return nbd_opt_reply (s, opt, NBD_REP_INFO, buf, 2 + (uint32_t) len);
}

static int
nbd_send_export_infos (struct nbd_session *s, uint32_t opt,
                       const struct nbd_export *exp, bool want_name,
                       bool want_desc)
{
  uint8_t buf[12];
  char text[512];
  int r;

  nbd_put64 (buf, exp->size);
  nbd_put16 (buf + 8, nbd_export_flags (exp, s->structured));
  r = nbd_send_info (s, opt, NBD_INFO_EXPORT, buf, 10);
  if (r == 0 && want_name) {
    nbd_canonical_name (exp, text, sizeof text);
    r = nbd_send_info (s, opt, NBD_INFO_NAME, text, strlen (text));
  }
  if (r == 0 && want_desc
      && nbd_export_describe (s->env, exp->kind, exp->num, text,
                              sizeof text) == 0)
    r = nbd_send_info (s, opt, NBD_INFO_DESCRIPTION, text, strlen (text));
  if (r == 0) {
    nbd_put32 (buf, 1);
    nbd_put32 (buf + 4, NBD_PREFERRED_BLOCK);
    nbd_put32 (buf + 8, NBD_MAX_PAYLOAD);
    r = nbd_send_info (s, opt, NBD_INFO_BLOCK_SIZE, buf, 12);
  }
  if (r == 0)
    r = nbd_opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
  return r;
}

static int
nbd_opt_info (struct nbd_session *s, uint32_t opt, const uint8_t *d,
              uint32_t len)
{
  char name[NBD_MAX_STRING + 1];
  bool want_name = false, want_desc = false;
  struct nbd_export exp;
  uint32_t namelen;
  uint16_t nreq, i;
  int r;

  if (len < 6)
    return nbd_opt_invalid (s, opt);
  namelen = nbd_get32 (d);
  if (namelen > len - 6)
    return nbd_opt_invalid (s, opt);
  nreq = nbd_get16 (d + 4 + namelen);
  if ((uint64_t) 6 + namelen + 2u * nreq != len
      || !nbd_get_string (d + 4, namelen, name))
    return nbd_opt_invalid (s, opt);
  for (i = 0; i < nreq; i++) {
    uint16_t type = nbd_get16 (d + 6 + namelen + 2u * i);
    want_name |= type == NBD_INFO_NAME;
    want_desc |= type == NBD_INFO_DESCRIPTION;
  }
  r = nbd_export_open (s->env, name, &exp);
  if (r < 0) {
    char why[512];
    nbd_export_why (s->env->origin, name, r, why, sizeof why);
    return nbd_opt_error (s, opt, NBD_REP_ERR_UNKNOWN,
                          "no export \"%s\": %s", name, why);
  }
  r = nbd_send_export_infos (s, opt, &exp, want_name, want_desc);
  if (r < 0 || opt == NBD_OPT_INFO) {
    nbd_export_close (&exp);
    return r;
  }
  nbd_choose_export (s, &exp);
  return NBD_OPT_TRANSMIT;
}

/* ---- NBD_OPT_EXPORT_NAME: no error reply is possible ----------------- */

static int
nbd_opt_export_name (struct nbd_session *s, const uint8_t *d, uint32_t len)
{
  char name[NBD_MAX_STRING + 1];
  struct nbd_export exp;
  uint8_t buf[8 + 2 + 124] = { 0 };
  int r;

  if (!nbd_get_string (d, len, name)) {
    nbd_log (s->env, FSSNAP_LOG_INFO, "nbd: malformed export name");
    return -EINVAL;
  }
  r = nbd_export_open (s->env, name, &exp);
  if (r < 0) {
    nbd_log (s->env, FSSNAP_LOG_INFO, "nbd: no export \"%s\": %s", name,
             strerror (-r));
    return r;
  }
  nbd_put64 (buf, exp.size);
  nbd_put16 (buf + 8, nbd_export_flags (&exp, s->structured));
  r = nbd_send_all (s->t, buf, s->no_zeroes ? 10 : sizeof buf, false);
  if (r < 0) {
    nbd_export_close (&exp);
    return r;
  }
  nbd_choose_export (s, &exp);
  return NBD_OPT_TRANSMIT;
}

/* ---- NBD_OPT_LIST ------------------------------------------------------ */

static int
nbd_send_server (struct nbd_session *s, enum nbd_export_kind kind,
                 unsigned num)
{
  struct nbd_export exp = { .kind = kind, .num = num };
  uint8_t buf[4 + 32 + 512];
  char name[32];
  size_t namelen;

  nbd_canonical_name (&exp, name, sizeof name);
  namelen = strlen (name);
  if (nbd_export_describe (s->env, kind, num,
                           (char *) buf + 4 + namelen,
                           sizeof buf - 4 - namelen) < 0)
    return NBD_OPT_NEXT;        /* deleted meanwhile: not listed */
  nbd_put32 (buf, (uint32_t) namelen);
  memcpy (buf + 4, name, namelen);
  return nbd_opt_reply (s, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                        (uint32_t) (4 + namelen
                                    + strlen ((char *) buf + 4 + namelen)));
}

static int
nbd_opt_list (struct nbd_session *s, uint32_t len)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  int n, i, r;

  if (len != 0)
    return nbd_opt_invalid (s, NBD_OPT_LIST);
  r = nbd_send_server (s, NBD_EXPORT_VOLUME, 0);
  n = fssnap_snapshot_list (s->env->origin, nums, FSSNAP_MAX_SNAPSHOTS);
  if (n > FSSNAP_MAX_SNAPSHOTS)
    n = FSSNAP_MAX_SNAPSHOTS;
  for (i = 0; r == 0 && i < n; i++)
    r = nbd_send_server (s, NBD_EXPORT_SNAPSHOT, nums[i]);
  n = s->env->clones ? fssnap_clones_list (s->env->clones, nums,
                                           FSSNAP_MAX_SNAPSHOTS) : 0;
  if (n > FSSNAP_MAX_SNAPSHOTS)
    n = FSSNAP_MAX_SNAPSHOTS;
  for (i = 0; r == 0 && i < n; i++)
    r = nbd_send_server (s, NBD_EXPORT_CLONE, nums[i]);
  if (r == 0)
    r = nbd_opt_reply (s, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
  return r;
}

/* ---- Metadata contexts ---------------------------------------------- */

/* What the queries of one LIST or SET select. */
struct nbd_meta_sel {
  bool base;                    /* base:allocation */
  struct nbd_bitmap offered[FSSNAP_MAX_SNAPSHOTS];
  bool chosen[FSSNAP_MAX_SNAPSHOTS];
  unsigned noffered;
};

static bool
nbd_query_is (const uint8_t *q, uint32_t len, const char *s)
{
  return len == strlen (s) && memcmp (q, s, len) == 0;
}

/* Apply one query.  SET takes exact names only; LIST also takes a
 * namespace ("base:", "qemu:") or the prefix "qemu:dirty-bitmap:", which
 * select every context under them.
 */
static void
nbd_meta_query (struct nbd_meta_sel *sel, uint32_t opt, const uint8_t *q,
                uint32_t len)
{
  bool list = opt == NBD_OPT_LIST_META_CONTEXT;
  size_t plen = strlen (NBD_META_DIRTY_BITMAP);
  unsigned i;

  if (nbd_query_is (q, len, NBD_META_BASE_ALLOCATION)
      || (list && nbd_query_is (q, len, "base:")))
    sel->base = true;
  if (list && (nbd_query_is (q, len, "qemu:")
               || nbd_query_is (q, len, NBD_META_DIRTY_BITMAP))) {
    for (i = 0; i < sel->noffered; i++)
      sel->chosen[i] = true;
    return;
  }
  if (len <= plen || memcmp (q, NBD_META_DIRTY_BITMAP, plen) != 0)
    return;
  for (i = 0; i < sel->noffered; i++) {
    char name[32];
    snprintf (name, sizeof name, "snap/%u", sel->offered[i].num);
    if (nbd_query_is (q + plen, len - (uint32_t) plen, name))
      sel->chosen[i] = true;
  }
}

/* Parse the queries of a LIST or SET into sel; the caller has checked
 * the export name (len >= 8, its length within len - 8).
 * Returns 0, or -1 when the data is malformed.
 */
static int
nbd_meta_parse (uint32_t opt, const uint8_t *d, uint32_t len,
                struct nbd_meta_sel *sel)
{
  uint32_t namelen = nbd_get32 (d), nq, i, p;

  nq = nbd_get32 (d + 4 + namelen);
  p = 8 + namelen;
  for (i = 0; i < nq; i++) {
    uint32_t qlen;
    if (len - p < 4)
      return -1;
    qlen = nbd_get32 (d + p);
    p += 4;
    if (qlen > len - p || qlen > NBD_MAX_STRING)
      return -1;
    nbd_meta_query (sel, opt, d + p, qlen);
    p += qlen;
  }
  if (p != len)
    return -1;
  if (opt == NBD_OPT_LIST_META_CONTEXT && nq == 0) {
    sel->base = true;
    for (i = 0; i < sel->noffered; i++)
      sel->chosen[i] = true;
  }
  return 0;
}

static int
nbd_meta_reply (struct nbd_session *s, uint32_t opt, uint32_t id,
                const char *ctx)
{
  uint8_t buf[4 + 64];
  size_t len = strlen (ctx);

  nbd_put32 (buf, opt == NBD_OPT_SET_META_CONTEXT ? id : 0);
  memcpy (buf + 4, ctx, len);
  return nbd_opt_reply (s, opt, NBD_REP_META_CONTEXT, buf,
                        (uint32_t) (4 + len));
}

/* Reply with every selected context, then ACK; SET keeps them. */
static int
nbd_meta_answer (struct nbd_session *s, uint32_t opt,
                 const struct nbd_meta_sel *sel)
{
  unsigned i;
  int r = 0;

  if (opt == NBD_OPT_SET_META_CONTEXT) {
    s->meta = sel->base;
    s->nbitmaps = 0;
  }
  if (sel->base)
    r = nbd_meta_reply (s, opt, NBD_META_ID, NBD_META_BASE_ALLOCATION);
  for (i = 0; r == 0 && i < sel->noffered; i++) {
    char ctx[64];
    if (!sel->chosen[i])
      continue;
    snprintf (ctx, sizeof ctx, "%ssnap/%u", NBD_META_DIRTY_BITMAP,
              sel->offered[i].num);
    r = nbd_meta_reply (s, opt, NBD_META_BITMAP_ID (sel->offered[i].num),
                        ctx);
    if (opt == NBD_OPT_SET_META_CONTEXT)
      s->bitmaps[s->nbitmaps++] = sel->offered[i];
  }
  if (r < 0)
    return r;
  return nbd_opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
}

static int
nbd_opt_meta (struct nbd_session *s, uint32_t opt, const uint8_t *d,
              uint32_t len)
{
  char name[NBD_MAX_STRING + 1];
  struct nbd_meta_sel *sel;
  enum nbd_export_kind kind;
  unsigned num;
  int n, r;

  if (!s->structured)
    return nbd_opt_error (s, opt, NBD_REP_ERR_INVALID,
                          "negotiate structured replies first");
  if (len < 8 || nbd_get32 (d) > len - 8
      || !nbd_get_string (d + 4, nbd_get32 (d), name))
    return nbd_opt_invalid (s, opt);
  if (nbd_export_parse (name, &kind, &num) < 0)
    return nbd_opt_error (s, opt, NBD_REP_ERR_UNKNOWN, "no export \"%s\"",
                          name);
  sel = calloc (1, sizeof *sel);
  if (!sel)
    return -ENOMEM;
  /* A snapshot that does not exist (yet) offers no bitmap. */
  n = nbd_export_bitmaps (s->env->origin, kind, num, sel->offered,
                          FSSNAP_MAX_SNAPSHOTS);
  sel->noffered = n > 0 ? (unsigned) n : 0;
  if (nbd_meta_parse (opt, d, len, sel) < 0)
    r = nbd_opt_invalid (s, opt);
  else {
    if (opt == NBD_OPT_SET_META_CONTEXT) {
      s->meta_kind = kind;
      s->meta_num = num;
    }
    r = nbd_meta_answer (s, opt, sel);
  }
  free (sel);
  return r;
}

/* ---- NBD_OPT_STARTTLS ------------------------------------------------- */

/* Must this option be refused because TLS is required and not yet on? */
static bool
nbd_tls_needed (const struct nbd_session *s, uint32_t opt)
{
  return s->env->tls == NBD_TLS_REQUIRE && !s->tls
         && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT;
}

static int
nbd_opt_tls_reqd (struct nbd_session *s, uint32_t opt)
{
  return nbd_opt_error (s, opt, NBD_REP_ERR_TLS_REQD,
                        "TLS is required: send NBD_OPT_STARTTLS first");
}

/* Seconds the TLS handshake may take: what is left of the session's
 * handshake deadline (at least 1), or 0 for no limit.
 */
static unsigned
nbd_tls_time_left (const struct nbd_session *s)
{
  struct timespec now;

  if (!s->handshake_end)
    return 0;
  clock_gettime (CLOCK_MONOTONIC, &now);
  return now.tv_sec < s->handshake_end
         ? (unsigned) (s->handshake_end - now.tv_sec) : 1;
}

static int
nbd_opt_starttls (struct nbd_session *s, uint32_t len)
{
  const uint32_t opt = NBD_OPT_STARTTLS;
  char msg[256], peer[256];
  int r;

  if (s->env->tls == NBD_TLS_OFF || !s->env->tls_creds)
    return nbd_opt_error (s, opt, NBD_REP_ERR_UNSUP,
                          "TLS is off on this socket");
  if (s->tls)
    return nbd_opt_error (s, opt, NBD_REP_ERR_INVALID,
                          "TLS is already in use");
  if (len != 0)
    return nbd_opt_invalid (s, opt);
  r = nbd_opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
  if (r < 0)
    return r;
  r = tls_session_start (s->env->tls_creds, s->t, nbd_tls_time_left (s),
                         &s->tls, msg, sizeof msg);
  if (r < 0) {
    nbd_log (s->env, FSSNAP_LOG_INFO, "nbd: %s, dropping client", msg);
    return r;
  }
  s->t = tls_session_transport (s->tls);
  s->structured = false;
  s->meta = false;
  s->nbitmaps = 0;
  tls_session_peer (s->tls, peer, sizeof peer);
  nbd_log (s->env, FSSNAP_LOG_DEBUG, "nbd: TLS session with %s", peer);
  return NBD_OPT_NEXT;
}

/* ---- Dispatch ------------------------------------------------------- */

static int
nbd_option_dispatch (struct nbd_session *s, uint32_t opt, const uint8_t *d,
                     uint32_t len)
{
  int r;

  if (nbd_tls_needed (s, opt))
    return nbd_opt_tls_reqd (s, opt);
  switch (opt) {
  case NBD_OPT_EXPORT_NAME:
    return nbd_opt_export_name (s, d, len);
  case NBD_OPT_ABORT:
    r = nbd_opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
    return r < 0 ? r : NBD_OPT_END;
  case NBD_OPT_LIST:
    return nbd_opt_list (s, len);
  case NBD_OPT_STARTTLS:
    return nbd_opt_starttls (s, len);
  case NBD_OPT_INFO:
  case NBD_OPT_GO:
    return nbd_opt_info (s, opt, d, len);
  case NBD_OPT_STRUCTURED_REPLY:
    if (len != 0)
      return nbd_opt_invalid (s, opt);
    s->structured = true;
    return nbd_opt_reply (s, opt, NBD_REP_ACK, NULL, 0);
  case NBD_OPT_LIST_META_CONTEXT:
  case NBD_OPT_SET_META_CONTEXT:
    return nbd_opt_meta (s, opt, d, len);
  default:
    return nbd_opt_error (s, opt, NBD_REP_ERR_UNSUP, "unknown option %u",
                          opt);
  }
}

/* Receive one option and answer it. */
static int
nbd_option_one (struct nbd_session *s)
{
  uint8_t h[16], *data;
  uint32_t opt, len;
  int r;

  r = nbd_recv_all (s->t, h, sizeof h);
  if (r < 0)
    return r;
  if (nbd_get64 (h) != NBD_IHAVEOPT) {
    nbd_log (s->env, FSSNAP_LOG_INFO, "nbd: bad option magic, dropping client");
    return -EPROTO;
  }
  opt = nbd_get32 (h + 8);
  len = nbd_get32 (h + 12);
  if (opt == NBD_OPT_EXPORT_NAME && nbd_tls_needed (s, opt)) {
    nbd_log (s->env, FSSNAP_LOG_INFO,
             "nbd: NBD_OPT_EXPORT_NAME before TLS, dropping client");
    return -EPROTO;
  }
  if (len > NBD_MAX_OPTION_DATA) {
    if (opt == NBD_OPT_EXPORT_NAME)
      return -EPROTO;
    r = nbd_recv_discard (s->t, len);
    if (r < 0)
      return r;
    if (nbd_tls_needed (s, opt))
      return nbd_opt_tls_reqd (s, opt);
    return nbd_opt_error (s, opt, NBD_REP_ERR_TOO_BIG,
                          "%u bytes of option data is too much", len);
  }
  data = malloc (len > 0 ? len : 1);
  if (!data)
    return -ENOMEM;
  r = nbd_recv_all (s->t, data, len);
  if (r == 0)
    r = nbd_option_dispatch (s, opt, data, len);
  free (data);
  return r;
}

int
nbd_handshake (struct nbd_session *s)
{
  uint8_t buf[18];
  uint32_t cflags;
  int r;

  nbd_put64 (buf, NBD_MAGIC);
  nbd_put64 (buf + 8, NBD_IHAVEOPT);
  nbd_put16 (buf + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  r = nbd_send_all (s->t, buf, sizeof buf, false);
  if (r == 0)
    r = nbd_recv_all (s->t, buf, 4);
  if (r < 0)
    return r;
  cflags = nbd_get32 (buf);
  if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
    nbd_log (s->env, FSSNAP_LOG_INFO,
             "nbd: unknown client flags 0x%x, dropping client", cflags);
    return -EPROTO;
  }
  s->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
  do
    r = nbd_option_one (s);
  while (r == NBD_OPT_NEXT);
  if (r < 0)
    return r;
  return r == NBD_OPT_TRANSMIT ? 1 : 0;
}
