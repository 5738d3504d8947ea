/* SPDX-License-Identifier: MIT */
/* Engine logging: to the opener's callback, or to stderr. */
#include <stdarg.h>
#include <stdio.h>

#include "common/log.h"
#include "engine/internal.h"

void
engine_log (struct fssnap_origin *o, enum fssnap_log_level level,
            const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  log_vsend (o->log, o->log_opaque, "libfssnap", level, fmt, ap);
  va_end (ap);
}
