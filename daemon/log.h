/* SPDX-License-Identifier: MIT */
/*
 * Logging of fssnapd: every message goes to stderr as "fssnapd: ..." or,
 * once daemon_log_use_syslog() is called, to syslog under the ident
 * "fssnapd".  The engine and the frontends log through daemon_log_engine,
 * which has the shape of fssnap_log_fn.
 */
#ifndef FSSNAP_DAEMON_LOG_H
#define FSSNAP_DAEMON_LOG_H

#include <stdbool.h>
#include "libfssnap.h"

/* Send further messages to syslog (LOG_DAEMON) instead of stderr. */
void daemon_log_use_syslog (void);
/* Messages below this level are dropped (default FSSNAP_LOG_INFO). */
void daemon_log_set_level (enum fssnap_log_level level);

void daemon_log (enum fssnap_log_level level, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* An fssnap_log_fn; opaque is unused. */
void daemon_log_engine (void *opaque, enum fssnap_log_level level,
                        const char *msg);

#endif /* FSSNAP_DAEMON_LOG_H */
