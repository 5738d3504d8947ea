/* SPDX-License-Identifier: MIT */
/*
 * Shared by the parts of the ublk frontend: the control ring (ctrl.c), a
 * device (dev.c) and its queues (queue.c).
 *
 * Locks: ctrl.lock serialises control commands and nothing else.  A queue's
 * ring, buffers and counters belong to its thread alone; the device's other
 * fields are set before the queue threads start and read-only after.
 */
#ifndef FSSNAP_UBLK_INTERNAL_H
#define FSSNAP_UBLK_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "ublk/compat.h"
#include "ublk/ublk.h"

struct ublk_ctrl {
  int fd;                       /* /dev/ublk-control */
  struct io_uring ring;         /* under lock */
  pthread_mutex_t lock;
  bool ioctl_encode;            /* UBLK_U_* opcodes */
  uint64_t features;            /* UBLK_F_* this kernel knows */
  fssnap_log_fn log;
  void *log_opaque;
};

#define UBLK_KINDS 2            /* reads and writes, judged apart (queue.c) */

struct ublk_queue {
  struct ublk_dev *dev;
  unsigned id;
  pthread_t thread;
  bool started;
  struct io_uring ring;
  bool ring_ok;
  const struct ublksrv_io_desc *iods;   /* mmap of /dev/ublkcN */
  size_t iods_len;
  char *bufs;                   /* depth * max_io_buf_bytes */
  size_t bufs_len;
  int stop_fd;                  /* eventfd: leave now */
  unsigned owned;               /* tags the kernel holds */
  unsigned busy;                /* tags with the workers */
  bool leaving;
  /* Quick ones in a row, counted by whichever thread ran them (queue.c). */
  atomic_uint quick_run[UBLK_KINDS];
  uint64_t ran_here, handed_off;        /* for the log */

  /* The workers run requests off the queue thread, so that a queue has
   * several engine calls in flight (blk-mq sends all of one CPU's I/O to
   * one queue).  Only the queue thread may answer the kernel: workers put
   * the tag on done and poke done_fd.  Under lock: todo, done, results,
   * kinds, quit.
   */
  pthread_mutex_t lock;
  pthread_cond_t work;
  unsigned *todo;               /* ring of depth tags */
  unsigned todo_head, ntodo;
  unsigned *done;
  unsigned ndone;
  int *results;                 /* per tag */
  unsigned char *kinds;         /* per tag handed over: its kind (queue.c) */
  bool quit;
  int done_fd;                  /* eventfd: workers -> queue thread */
  uint64_t done_count;          /* read buffer for done_fd */
  pthread_t *workers;
  unsigned nworkers;
  int setup_error;              /* reported to ublk_dev_start */
  pthread_mutex_t *ready_lock;
  pthread_cond_t *ready_cond;
  unsigned *nready;
};

struct ublk_dev {
  struct ublk_ctrl *ctrl;
  struct ublksrv_ctrl_dev_info info;    /* as the kernel granted it */
  struct fssnap_origin *origin;
  struct fssnap_snapshot *snap;         /* NULL: the volume or a clone */
  struct fssnap_clone *clone;           /* NULL: the volume or a snapshot */
  uint64_t size;
  int cdev_fd;                          /* /dev/ublkcN */
  char path[32];                        /* /dev/ublkbN */
  struct ublk_queue *queues;
};

void ublk_log (struct ublk_ctrl *ctrl, enum fssnap_log_level level,
               const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* One control command each; a negative errno on failure. */
int ublk_ctrl_add (struct ublk_ctrl *ctrl, struct ublksrv_ctrl_dev_info *info);
int ublk_ctrl_info (struct ublk_ctrl *ctrl, int id,
                    struct ublksrv_ctrl_dev_info *info);
int ublk_ctrl_set_params (struct ublk_ctrl *ctrl, int id,
                          struct ublk_params *params);
/* START_DEV, or END_USER_RECOVERY when recovery. */
int ublk_ctrl_start (struct ublk_ctrl *ctrl, int id, bool recovery);
int ublk_ctrl_start_recovery (struct ublk_ctrl *ctrl, int id);
int ublk_ctrl_stop (struct ublk_ctrl *ctrl, int id);
/* DEL_DEV_ASYNC where the kernel has it (6.9): a device a process still
 * holds open goes when it closes; else DEL_DEV, which waits for that.
 */
int ublk_ctrl_del (struct ublk_ctrl *ctrl, int id);

/* Start queue q's thread; it maps the descriptors, fetches every tag and
 * counts itself ready.  ublk_queue_leave wakes it to exit (the kernel's
 * aborts or our eventfd), ublk_queue_join waits and frees.
 */
int ublk_queue_start (struct ublk_queue *q);
void ublk_queue_leave (struct ublk_queue *q);
void ublk_queue_join (struct ublk_queue *q);

#endif /* FSSNAP_UBLK_INTERNAL_H */
