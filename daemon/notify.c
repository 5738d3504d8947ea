/* SPDX-License-Identifier: MIT */
/*
 * Telling systemd how fssnapd is doing (sd_notify(3), for Type=notify in
 * fssnapd@.service): READY=1 once every socket is bound and every frontend
 * serves (the device files and, where a frontend makes them, the block
 * devices exist), which is when a unit ordered after fssnapd@ may mount
 * them; STOPPING=1 when a stop signal came.  Outside systemd
 * (NOTIFY_SOCKET unset) every call does nothing.
 */
#include <stdio.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "daemon/notify.h"

void
daemon_notify_ready (const char *status)
{
  sd_notifyf (0, "READY=1\nMAINPID=%ld\nSTATUS=%s", (long) getpid (),
              status);
}

void
daemon_notify_stopping (void)
{
  sd_notify (0, "STOPPING=1\nSTATUS=stopping");
}
