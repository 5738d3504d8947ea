/* SPDX-License-Identifier: MIT */
/*
 * sd_notify glue of fssnapd (notify.c): readiness and stop for systemd.
 */
#ifndef FSSNAP_DAEMON_NOTIFY_H
#define FSSNAP_DAEMON_NOTIFY_H

/* Every frontend serves: READY=1, with status as the unit's STATUS. */
void daemon_notify_ready (const char *status);
/* A stop signal came: STOPPING=1. */
void daemon_notify_stopping (void);

#endif /* FSSNAP_DAEMON_NOTIFY_H */
