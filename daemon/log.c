/* SPDX-License-Identifier: MIT */
/*
 * Logging of fssnapd to stderr or syslog.  The level is set before any
 * thread exists; the destination switches to syslog once start-up is over,
 * while engine threads may already log, hence the atomic flag.  Each
 * message is one write (stderr) or one syslog call, so lines from threads
 * never interleave.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "daemon/log.h"

static atomic_bool log_syslog;
static enum fssnap_log_level log_max_level = FSSNAP_LOG_INFO;

void
daemon_log_use_syslog (void)
{
  openlog ("fssnapd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  log_syslog = true;
}

void
daemon_log_set_level (enum fssnap_log_level level)
{
  log_max_level = level;
}

static int
daemon_log_priority (enum fssnap_log_level level)
{
  switch (level) {
  case FSSNAP_LOG_ERR: return LOG_ERR;
  case FSSNAP_LOG_WARN: return LOG_WARNING;
  case FSSNAP_LOG_INFO: return LOG_INFO;
  case FSSNAP_LOG_DEBUG: return LOG_DEBUG;
  }
  return LOG_INFO;
}

static const char *
daemon_log_tag (enum fssnap_log_level level)
{
  switch (level) {
  case FSSNAP_LOG_ERR: return "error: ";
  case FSSNAP_LOG_WARN: return "warning: ";
  default: return "";
  }
}

static void
daemon_log_emit (enum fssnap_log_level level, const char *msg)
{
  char line[2048];
  int n;

  if (level > log_max_level)
    return;
  if (log_syslog) {
    syslog (daemon_log_priority (level), "%s%s", daemon_log_tag (level), msg);
    return;
  }
  n = snprintf (line, sizeof line, "fssnapd: %s%s\n",
                daemon_log_tag (level), msg);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof line) {
    n = sizeof line - 1;
    line[n - 1] = '\n';
  }
  if (write (STDERR_FILENO, line, n) < 0)
    return;                     /* nowhere left to report it */
}

void
daemon_log (enum fssnap_log_level level, const char *fmt, ...)
{
  char msg[1900];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  daemon_log_emit (level, msg);
}

void
daemon_log_engine (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  daemon_log_emit (level, msg);
}
