/* SPDX-License-Identifier: MIT */
/*
 * ublk frontend of fssnapd: the live volume (read-write), one snapshot
 * (read-only) or one writable clone as a real block device /dev/ublkbN, served from user space
 * through Linux's ublk driver (drivers/block/ublk_drv.c, since 6.0).
 *
 *   /dev/ublk-control   control commands (ADD_DEV, SET_PARAMS, START_DEV,
 *                       STOP_DEV, DEL_DEV, GET_DEV_INFO, user recovery) as
 *                       io_uring URING_CMDs on one ring (ctrl.c)
 *   /dev/ublkcN         per device: one thread and one io_uring per queue;
 *                       FETCH_REQ hands a tag to the kernel, a completion
 *                       says a request waits in the shared descriptor
 *                       array, COMMIT_AND_FETCH_REQ answers it and re-arms
 *                       the tag (queue.c)
 *
 * Each request becomes one engine call (fssnap_origin_read/write/zero/trim/
 * flush, fssnap_snapshot_read, fssnap_clone_read/write/zero/flush) in a
 * queue's thread or one of its workers (queue.c); the kernel copies the
 * data between the request's pages and the tag's buffer.  Devices are
 * created with UBLK_F_USER_RECOVERY (and _REISSUE where the kernel grants
 * it): when the server dies the kernel keeps the device and holds its I/O
 * (requeueing what was in flight) until a new server takes it over with
 * START_USER_RECOVERY / END_USER_RECOVERY.  Naming the devices, persisting
 * their ids and deciding which to recover is the daemon's (daemon/ublk.c).
 */
#ifndef FSSNAP_UBLK_H
#define FSSNAP_UBLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "libfssnap.h"

struct ublk_ctrl;
struct ublk_dev;

/* Open /dev/ublk-control.  Without the driver: -ENOENT and a one-line
 * reason in err.
 */
int ublk_ctrl_open (struct ublk_ctrl **ctrlp, fssnap_log_fn log,
                    void *log_opaque, char *err, size_t errlen);
void ublk_ctrl_close (struct ublk_ctrl *ctrl);

/* What GET_DEV_INFO says of device id. */
struct ublk_dev_state {
  bool dead;                    /* stopped, or never started */
  bool recoverable;             /* created with user recovery */
  int server_pid;               /* the server that last started it */
};
/* 0, -ENODEV if there is no such device, or another negative errno. */
int ublk_ctrl_dev_state (struct ublk_ctrl *ctrl, int id,
                         struct ublk_dev_state *st);
/* Stop and delete device id, served by nobody (a leftover). */
int ublk_ctrl_remove (struct ublk_ctrl *ctrl, int id);

struct ublk_dev_opts {
  struct fssnap_origin *origin;
  /* The snapshot to serve read-only (the device keeps the handle and
   * closes it when it goes); NULL: the volume, read-write.
   */
  struct fssnap_snapshot *snap;
  /* A writable clone to serve read-write instead (the device keeps the
   * reference and puts it when it goes); at most one of snap and clone.
   */
  struct fssnap_clone *clone;
  int id;                       /* wanted device id; -1: any */
  /* The device exists and its server died: take it over (user recovery)
   * instead of adding it.
   */
  bool recover;
};

/* Add (or recover) the device and serve it; *devp is live once this
 * returns 0.  On error a one-line reason is in err and nothing is left
 * behind (a device being recovered is left for a later try).
 */
int ublk_dev_start (struct ublk_ctrl *ctrl, const struct ublk_dev_opts *opts,
                    struct ublk_dev **devp, char *err, size_t errlen);
int ublk_dev_id (const struct ublk_dev *dev);
/* The block device the kernel made, "/dev/ublkbN". */
const char *ublk_dev_path (const struct ublk_dev *dev);
/* Whether user recovery was granted (the device survives our death). */
bool ublk_dev_recoverable (const struct ublk_dev *dev);

/* STOP_DEV and DEL_DEV, then join the queues and free: I/O still sent to
 * the device fails.  Closes the snapshot handle (puts the clone).
 */
void ublk_dev_delete (struct ublk_dev *dev);
/* Let the queues go without stopping the device: with user recovery the
 * kernel holds its I/O for the next server (as after a crash, but with no
 * request half done).  Closes the snapshot handle (puts the clone) and
 * frees.
 */
void ublk_dev_abandon (struct ublk_dev *dev);

/* Whether the block device is open elsewhere: 1 mounted or held
 * exclusively (holder named in what, e.g. "mounted on /mnt"), 2 open by a
 * process (pid in what), 0 not in use, negative errno if unknown.
 */
int ublk_dev_in_use (const struct ublk_dev *dev, char *what, size_t len);

#endif /* FSSNAP_UBLK_H */
