/* SPDX-License-Identifier: MIT */
/* Engine logging: to the opener's callback, or to stderr. */
#include <stdarg.h>
#include <stdio.h>

#include "engine/internal.h"

void
engine_log (struct fssnap_origin *o, enum fssnap_log_level level,
            const char *fmt, ...)
{
  static const char *const names[] = { "error", "warning", "info", "debug" };
  char msg[1024];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (o->log)
    o->log (o->log_opaque, level, msg);
  else
    fprintf (stderr, "libfssnap: %s: %s\n", names[level], msg);
}
