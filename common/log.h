/* SPDX-License-Identifier: MIT */
/* Logging shared by the engine and the frontends: a message is formatted
 * once and handed to the owner's fssnap_log_fn, or printed on stderr.
 */
#ifndef FSSNAP_COMMON_LOG_H
#define FSSNAP_COMMON_LOG_H

#include <stdarg.h>

#include "libfssnap.h"

/* Format fmt and pass it to fn; without fn, print "PREFIX: level: msg"
 * on stderr.
 */
void log_vsend (fssnap_log_fn fn, void *opaque, const char *prefix,
                enum fssnap_log_level level, const char *fmt, va_list ap)
  __attribute__ ((format (printf, 5, 0)));

#endif /* FSSNAP_COMMON_LOG_H */
