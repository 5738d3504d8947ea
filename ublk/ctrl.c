/* SPDX-License-Identifier: MIT */
/*
 * Control commands on /dev/ublk-control.  Each is an IORING_OP_URING_CMD
 * with a struct ublksrv_ctrl_cmd in the second half of a 128-byte SQE
 * (IORING_SETUP_SQE128); liburing 2.3 has no prep helper for it, so
 * ublk_ctrl_cmd fills the SQE by hand.  One ring, one command at a time
 * under ctrl.lock: commands are rare, and START_DEV / END_USER_RECOVERY
 * block in the kernel until every queue has fetched, which the queue
 * threads do without this lock.
 *
 * Opcodes: ioctl-encoded (UBLK_U_CMD_*) when GET_FEATURES answers (6.5 and
 * later, where a kernel may refuse the legacy ones), else the legacy
 * numbers of the 6.1 header.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ublk/compat.h"
#include "ublk/internal.h"

#define UBLK_CONTROL "/dev/ublk-control"

static void
ublk_ctrl_sqe (struct io_uring_sqe *sqe, int fd, unsigned op,
               const struct ublksrv_ctrl_cmd *cmd)
{
  memset (sqe, 0, 2 * sizeof *sqe);             /* both halves (SQE128) */
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  memcpy (sqe->cmd, cmd, sizeof *cmd);
}

/* Run one command; its result (>= 0) or a negative errno.  Takes
 * ctrl.lock.
 */
static int
ublk_ctrl_run (struct ublk_ctrl *ctrl, unsigned legacy, unsigned encoded,
               struct ublksrv_ctrl_cmd *cmd)
{
  struct io_uring_cqe *cqe;
  struct io_uring_sqe *sqe;
  int r;

  pthread_mutex_lock (&ctrl->lock);
  sqe = io_uring_get_sqe (&ctrl->ring);
  if (!sqe) {
    r = -EBUSY;
    goto out;
  }
  ublk_ctrl_sqe (sqe, ctrl->fd, ctrl->ioctl_encode ? encoded : legacy, cmd);
  r = io_uring_submit (&ctrl->ring);
  if (r < 0)
    goto out;
  do
    r = io_uring_wait_cqe (&ctrl->ring, &cqe);
  while (r == -EINTR);
  if (r < 0)
    goto out;
  r = cqe->res;
  io_uring_cqe_seen (&ctrl->ring, cqe);
out:
  pthread_mutex_unlock (&ctrl->lock);
  return r;
}

#define UBLK_CTRL_RUN(ctrl, name, cmd) \
  ublk_ctrl_run ((ctrl), UBLK_CMD_##name, UBLK_U_CMD_##name, (cmd))

static struct ublksrv_ctrl_cmd
ublk_ctrl_header (int id, void *buf, size_t len)
{
  return (struct ublksrv_ctrl_cmd) { .dev_id = (uint32_t) id,
                                     .queue_id = (uint16_t) -1,
                                     .addr = (uint64_t) (uintptr_t) buf,
                                     .len = (uint16_t) len };
}

int
ublk_ctrl_open (struct ublk_ctrl **ctrlp, fssnap_log_fn log,
                void *log_opaque, char *err, size_t errlen)
{
  struct ublk_ctrl *ctrl = calloc (1, sizeof *ctrl);
  struct ublksrv_ctrl_cmd cmd;
  uint64_t features = 0;
  int r;

  if (!ctrl)
    return -ENOMEM;
  ctrl->log = log;
  ctrl->log_opaque = log_opaque;
  pthread_mutex_init (&ctrl->lock, NULL);
  ctrl->fd = open (UBLK_CONTROL, O_RDWR | O_CLOEXEC);
  if (ctrl->fd < 0) {
    r = -errno;
    if (r == -ENOENT)
      snprintf (err, errlen, "--ublk: no %s: this kernel has no ublk "
                "driver (CONFIG_BLK_DEV_UBLK; try modprobe ublk_drv)",
                UBLK_CONTROL);
    else
      snprintf (err, errlen, "--ublk: cannot open %s: %s", UBLK_CONTROL,
                strerror (-r));
    goto fail;
  }
  r = io_uring_queue_init (4, &ctrl->ring, IORING_SETUP_SQE128);
  if (r < 0) {
    snprintf (err, errlen, "--ublk: io_uring with 128-byte SQEs: %s",
              strerror (-r));
    close (ctrl->fd);
    goto fail;
  }
  /* GET_FEATURES exists only as an encoded opcode. */
  ctrl->ioctl_encode = true;
  cmd = ublk_ctrl_header (-1, &features, sizeof features);
  r = ublk_ctrl_run (ctrl, UBLK_U_CMD_GET_FEATURES, UBLK_U_CMD_GET_FEATURES,
                     &cmd);
  ctrl->ioctl_encode = r >= 0;
  ctrl->features = r >= 0 ? features
                          : UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
  *ctrlp = ctrl;
  return 0;

fail:
  pthread_mutex_destroy (&ctrl->lock);
  free (ctrl);
  return r;
}

void
ublk_ctrl_close (struct ublk_ctrl *ctrl)
{
  if (!ctrl)
    return;
  io_uring_queue_exit (&ctrl->ring);
  close (ctrl->fd);
  pthread_mutex_destroy (&ctrl->lock);
  free (ctrl);
}

void
ublk_log (struct ublk_ctrl *ctrl, enum fssnap_log_level level,
          const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (ctrl->log)
    ctrl->log (ctrl->log_opaque, level, msg);
  else
    fprintf (stderr, "ublk: %s\n", msg);
}

int
ublk_ctrl_add (struct ublk_ctrl *ctrl, struct ublksrv_ctrl_dev_info *info)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header ((int) info->dev_id, info,
                                                  sizeof *info);

  return UBLK_CTRL_RUN (ctrl, ADD_DEV, &cmd);
}

int
ublk_ctrl_info (struct ublk_ctrl *ctrl, int id,
                struct ublksrv_ctrl_dev_info *info)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, info, sizeof *info);

  memset (info, 0, sizeof *info);
  return UBLK_CTRL_RUN (ctrl, GET_DEV_INFO, &cmd);
}

int
ublk_ctrl_set_params (struct ublk_ctrl *ctrl, int id,
                      struct ublk_params *params)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, params,
                                                  sizeof *params);

  params->len = sizeof *params;
  return UBLK_CTRL_RUN (ctrl, SET_PARAMS, &cmd);
}

/* START_DEV and END_USER_RECOVERY name the server's pid in data[0]. */
int
ublk_ctrl_start (struct ublk_ctrl *ctrl, int id, bool recovery)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, NULL, 0);

  cmd.data[0] = (uint64_t) getpid ();
  return recovery ? UBLK_CTRL_RUN (ctrl, END_USER_RECOVERY, &cmd)
                  : UBLK_CTRL_RUN (ctrl, START_DEV, &cmd);
}

int
ublk_ctrl_start_recovery (struct ublk_ctrl *ctrl, int id)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, NULL, 0);

  return UBLK_CTRL_RUN (ctrl, START_USER_RECOVERY, &cmd);
}

int
ublk_ctrl_stop (struct ublk_ctrl *ctrl, int id)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, NULL, 0);

  return UBLK_CTRL_RUN (ctrl, STOP_DEV, &cmd);
}

int
ublk_ctrl_del (struct ublk_ctrl *ctrl, int id)
{
  struct ublksrv_ctrl_cmd cmd = ublk_ctrl_header (id, NULL, 0);
  int r = -EOPNOTSUPP;

  if (ctrl->ioctl_encode)
    r = ublk_ctrl_run (ctrl, UBLK_U_CMD_DEL_DEV_ASYNC,
                       UBLK_U_CMD_DEL_DEV_ASYNC, &cmd);
  if (r == -EOPNOTSUPP || r == -EINVAL)
    r = UBLK_CTRL_RUN (ctrl, DEL_DEV, &cmd);
  return r;
}

int
ublk_ctrl_dev_state (struct ublk_ctrl *ctrl, int id,
                     struct ublk_dev_state *st)
{
  struct ublksrv_ctrl_dev_info info;
  int r = ublk_ctrl_info (ctrl, id, &info);

  if (r < 0)
    return r;
  *st = (struct ublk_dev_state) {
    .dead = info.state == UBLK_S_DEV_DEAD,
    .recoverable = info.flags & UBLK_F_USER_RECOVERY,
    .server_pid = info.ublksrv_pid };
  return 0;
}

int
ublk_ctrl_remove (struct ublk_ctrl *ctrl, int id)
{
  int r = ublk_ctrl_stop (ctrl, id);

  if (r < 0 && r != -ENODEV)
    ublk_log (ctrl, FSSNAP_LOG_WARN, "ublk%d: STOP_DEV: %s", id,
              strerror (-r));
  r = ublk_ctrl_del (ctrl, id);
  return r == -ENODEV ? 0 : r;
}
