/* SPDX-License-Identifier: MIT */
/* Logging shared by the engine and the frontends: see log.h. */
#include <stdio.h>

#include "common/log.h"

void
log_vsend (fssnap_log_fn fn, void *opaque, const char *prefix,
           enum fssnap_log_level level, const char *fmt, va_list ap)
{
  static const char *const names[] = { "error", "warning", "info", "debug" };
  char msg[1024];
  vsnprintf (msg, sizeof msg, fmt, ap);
  if (fn)
    fn (opaque, level, msg);
  else
    fprintf (stderr, "%s: %s: %s\n", prefix, names[level], msg);
}
