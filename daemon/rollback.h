/* SPDX-License-Identifier: MIT */
/*
 * fssnapd's rollback job: one rollback at a time runs in a thread of its
 * own (fssnap_rollback does the work), so that the control request that
 * starts it returns at once and the CLI polls its progress.  A rollback
 * left unfinished by a crash or a stop is resumed when fssnapd starts.
 */
#ifndef FSSNAP_DAEMON_ROLLBACK_H
#define FSSNAP_DAEMON_ROLLBACK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "libfssnap.h"
#include "control/requests.h"

struct rollback_job {
  struct fssnap_origin *origin;
  const char *state_dir;
  pthread_mutex_t lock;         /* every field below */
  pthread_t thread;
  bool thread_live;             /* joinable */
  bool running;
  bool stop;                    /* the daemon is stopping */
  struct ctl_rollback_status st;
};

void rollback_job_init (struct rollback_job *job,
                        struct fssnap_origin *origin, const char *state_dir);
/* Start a rollback to snapshot num (uuid: the one it must be, or NULL).
 * -EBUSY with a message while one runs.  Takes job->lock.
 */
int rollback_job_start (struct rollback_job *job, unsigned num,
                        const char *uuid, char *err, size_t errlen);
/* Resume the rollback recorded in the state dir, if any (at start-up). */
int rollback_job_resume (struct rollback_job *job);
bool rollback_job_running (struct rollback_job *job);
void rollback_job_status (struct rollback_job *job,
                          struct ctl_rollback_status *st);
/* Stop a running rollback (it stays pending) and join its thread. */
void rollback_job_stop (struct rollback_job *job);

/* Refuse while the volume is in use: NBD clients on it (nbd_clients), a
 * loop device on one of its device files, or a file system mounted on
 * one of them (files: NULL-ended paths of the volume's devices).  0, or
 * -EBUSY with the reason in err.
 */
int rollback_check_idle (const char *const *files, unsigned nbd_clients,
                         char *err, size_t errlen);

#endif /* FSSNAP_DAEMON_ROLLBACK_H */
