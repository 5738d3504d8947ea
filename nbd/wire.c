/* SPDX-License-Identifier: MIT */
/*
 * Byte-stream helpers over a struct nbd_transport (whole messages in and
 * out, short reads and writes retried) and the frontend's logging.
 * No locks: the caller serialises sends (conn->send_lock) and only one
 * thread of a connection ever receives.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "common/log.h"
#include "nbd/internal.h"

int
nbd_recv_all (const struct nbd_transport *t, void *buf, size_t len)
{
  char *p = buf;

  while (len > 0) {
    ssize_t r = t->recv (t->opaque, p, len);
    if (r == -EINTR)
      continue;
    if (r < 0)
      return (int) r;
    if (r == 0)
      return -ECONNRESET;
    p += r;
    len -= (size_t) r;
  }
  return 0;
}

int
nbd_recv_discard (const struct nbd_transport *t, uint64_t len)
{
  char buf[16384];

  while (len > 0) {
    size_t n = len < sizeof buf ? (size_t) len : sizeof buf;
    int r = nbd_recv_all (t, buf, n);
    if (r < 0)
      return r;
    len -= n;
  }
  return 0;
}

int
nbd_send_all (const struct nbd_transport *t, const void *buf, size_t len,
              bool more)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t r = t->send (t->opaque, p, len, more);
    if (r == -EINTR)
      continue;
    if (r < 0)
      return (int) r;
    if (r == 0)
      return -EPIPE;
    p += r;
    len -= (size_t) r;
  }
  return 0;
}

void
nbd_log (const struct nbd_env *env, enum fssnap_log_level level,
         const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vsend (env->log, env->log_opaque, "fssnapd", level, fmt, ap);
  va_end (ap);
}
