/* SPDX-License-Identifier: MIT */
/*
 * fssnapd --ublk: the volume, every snapshot and every writable clone as
 * ublk block devices, with stable names /dev/fssnap/NAME/volume,
 * /dev/fssnap/NAME/snap/N and /dev/fssnap/NAME/clone/K (symlinks to
 * /dev/ublkbJ), their ids kept in STATE_DIR/ublk-devices so
 * that a restarted fssnapd takes them over (user recovery) instead of
 * making new ones.  The control server tells it of snapshots and clones
 * created and deleted (the hooks of struct ctl_context).
 */
#ifndef FSSNAP_DAEMON_UBLK_H
#define FSSNAP_DAEMON_UBLK_H

#include <stdbool.h>
#include <stddef.h>
#include "libfssnap.h"
#include "control/requests.h"

struct daemon_ublk;

/* Whether ublk can be used here: 0, or -1 with a one-line reason. */
int daemon_ublk_probe (char *err, size_t errlen);

/* Serve the volume, every servable snapshot and every clone of clones
 * (NULL: none): recover the devices the state dir names, remove those
 * whose snapshot or clone is gone, add the rest.  name is NAME in
 * /dev/fssnap/NAME.
 */
int daemon_ublk_start (struct fssnap_origin *origin,
                       struct fssnap_clones *clones, const char *state_dir,
                       const char *name, fssnap_log_fn log,
                       struct daemon_ublk **up, char *err, size_t errlen);
/* Delete the devices nobody uses; leave those in use (mounted, open) to
 * the next fssnapd, their I/O held by the kernel until it comes.
 */
void daemon_ublk_stop (struct daemon_ublk *u);

/* The volume's device name (/dev/fssnap/NAME/volume); NULL when u is. */
const char *daemon_ublk_volume_device (struct daemon_ublk *u);

/* ctl_context hooks (see control/requests.h). */
void daemon_ublk_devices (struct daemon_ublk *u, int target, ctl_device_fn fn,
                          void *arg);
void daemon_ublk_created (struct daemon_ublk *u, unsigned num);
int daemon_ublk_check_delete (struct daemon_ublk *u, unsigned num,
                              bool force, char *err, size_t errlen);
void daemon_ublk_deleted (struct daemon_ublk *u, unsigned num);
/* The same for writable clone k. */
void daemon_ublk_clone_devices (struct daemon_ublk *u, unsigned k,
                                ctl_device_fn fn, void *arg);
void daemon_ublk_clone_created (struct daemon_ublk *u, unsigned k);
int daemon_ublk_clone_check_delete (struct daemon_ublk *u, unsigned k,
                                    bool force, char *err, size_t errlen);
void daemon_ublk_clone_deleted (struct daemon_ublk *u, unsigned k);

#endif /* FSSNAP_DAEMON_UBLK_H */
