/* SPDX-License-Identifier: MIT */
/*
 * The rollback job of fssnapd (see rollback.h): a thread that runs
 * fssnap_rollback and publishes its progress for the control requests
 * "rollback" and "rollback-status".  The daemon stops it before closing
 * the origin; an interrupted rollback stays recorded in the state dir and
 * resumes at the next start.
 *
 * Locks: job->lock guards the job's fields; it is never held across an
 * engine call other than the progress callback's copy.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "daemon/log.h"
#include "daemon/rollback.h"
#include "fs/loop.h"

void
rollback_job_init (struct rollback_job *job, struct fssnap_origin *origin,
                   const char *state_dir)
{
  memset (job, 0, sizeof *job);
  job->origin = origin;
  job->state_dir = state_dir;
  pthread_mutex_init (&job->lock, NULL);
  snprintf (job->st.state, sizeof job->st.state, "none");
}

/* fssnap_rollback_fn: publish the progress; stop if the daemon stops.
 * Takes job->lock.
 */
static int
rollback_progress (void *opaque, const struct fssnap_rollback_progress *p)
{
  struct rollback_job *job = opaque;
  bool stop;

  pthread_mutex_lock (&job->lock);
  job->st.progress = *p;
  stop = job->stop;
  pthread_mutex_unlock (&job->lock);
  return stop;
}

/* The job's thread.  Takes job->lock at the end. */
static void *
rollback_thread (void *opaque)
{
  struct rollback_job *job = opaque;
  char err[256] = "", uuid[FSSNAP_UUID_STRLEN] = "";
  unsigned num;
  int r;

  pthread_mutex_lock (&job->lock);
  num = job->st.progress.number;
  memcpy (uuid, job->st.progress.uuid, sizeof uuid);
  pthread_mutex_unlock (&job->lock);
  daemon_log (FSSNAP_LOG_INFO, "rollback to snapshot %u started", num);
  r = fssnap_rollback (job->origin, job->state_dir, num, *uuid ? uuid : NULL,
                       rollback_progress, job, err, sizeof err);
  pthread_mutex_lock (&job->lock);
  job->running = false;
  snprintf (job->st.state, sizeof job->st.state, "%s",
            r == 0 ? "done" : r == -EINTR ? "stopped" : "failed");
  snprintf (job->st.error, sizeof job->st.error, "%s", r == 0 ? "" : err);
  job->st.err = -r;
  pthread_mutex_unlock (&job->lock);
  if (r == 0)
    daemon_log (FSSNAP_LOG_INFO, "rollback to snapshot %u done: %llu of "
                "%llu chunks moved", num,
                (unsigned long long) job->st.progress.moved,
                (unsigned long long) job->st.progress.chunks);
  else
    daemon_log (FSSNAP_LOG_ERR, "rollback to snapshot %u: %s", num, err);
  return NULL;
}

/* Caller holds job->lock. */
static void
rollback_join_locked (struct rollback_job *job)
{
  if (job->thread_live && !job->running) {
    pthread_join (job->thread, NULL);
    job->thread_live = false;
  }
}

int
rollback_job_start (struct rollback_job *job, unsigned num, const char *uuid,
                    char *err, size_t errlen)
{
  int r = 0;

  pthread_mutex_lock (&job->lock);
  rollback_join_locked (job);
  if (job->running) {
    snprintf (err, errlen, "a rollback to snapshot %u is running",
              job->st.progress.number);
    r = -EBUSY;
  } else if (job->stop) {
    snprintf (err, errlen, "fssnapd is stopping");
    r = -ESHUTDOWN;
  }
  if (r == 0) {
    memset (&job->st, 0, sizeof job->st);
    snprintf (job->st.state, sizeof job->st.state, "running");
    job->st.progress.number = num;
    if (uuid)
      snprintf (job->st.progress.uuid, sizeof job->st.progress.uuid, "%s",
                uuid);
    job->running = true;
    r = -pthread_create (&job->thread, NULL, rollback_thread, job);
    job->thread_live = r == 0;
    job->running = r == 0;
    if (r < 0) {
      snprintf (err, errlen, "cannot start the rollback: %s", strerror (-r));
      snprintf (job->st.state, sizeof job->st.state, "none");
    }
  }
  pthread_mutex_unlock (&job->lock);
  return r;
}

int
rollback_job_resume (struct rollback_job *job)
{
  char uuid[FSSNAP_UUID_STRLEN], err[256];
  unsigned num;
  int r = fssnap_rollback_pending (job->origin, job->state_dir, &num, uuid);

  if (r == -EBADMSG) {
    daemon_log (FSSNAP_LOG_ERR, "the rollback record in %s is damaged: run "
                "fssnap rollback again", job->state_dir);
    return 0;
  }
  if (r <= 0)
    return r;
  daemon_log (FSSNAP_LOG_WARN, "resuming the unfinished rollback to "
              "snapshot %u (uuid %s)", num, uuid);
  r = rollback_job_start (job, num, uuid, err, sizeof err);
  if (r < 0)
    daemon_log (FSSNAP_LOG_ERR, "%s", err);
  return r;
}

bool
rollback_job_running (struct rollback_job *job)
{
  bool running;

  pthread_mutex_lock (&job->lock);
  running = job->running;
  pthread_mutex_unlock (&job->lock);
  return running;
}

void
rollback_job_status (struct rollback_job *job, struct ctl_rollback_status *st)
{
  pthread_mutex_lock (&job->lock);
  *st = job->st;
  pthread_mutex_unlock (&job->lock);
}

void
rollback_job_stop (struct rollback_job *job)
{
  pthread_mutex_lock (&job->lock);
  job->stop = true;
  bool live = job->thread_live;
  job->thread_live = false;
  pthread_mutex_unlock (&job->lock);
  if (live)
    pthread_join (job->thread, NULL);
}

/* Whether a file system is mounted on the block device devnum, or on a
 * loop device over file; its mount point goes in where.
 */
static bool
rollback_mounted (const char *file, dev_t devnum, char *where, size_t len)
{
  FILE *f = fopen ("/proc/self/mountinfo", "re");
  char line[8192];
  bool found = false;

  while (f && !found && fgets (line, sizeof line, f)) {
    unsigned maj, min;
    char mnt[4096];
    if (sscanf (line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) != 3)
      continue;
    dev_t d = makedev (maj, min);
    if ((devnum && d == devnum) || (file && loop_backs_dev (file, d))) {
      snprintf (where, len, "%s", mnt);
      found = true;
    }
  }
  if (f)
    fclose (f);
  return found;
}

int
rollback_check_idle (const char *const *files, unsigned nbd_clients,
                     char *err, size_t errlen)
{
  char loop[64], where[4096];
  struct stat st;

  if (nbd_clients) {
    snprintf (err, errlen, "the volume has %u NBD client%s: disconnect "
              "them first or use --force", nbd_clients,
              nbd_clients > 1 ? "s" : "");
    return -EBUSY;
  }
  for (; *files; files++) {
    bool blk = stat (*files, &st) == 0 && S_ISBLK (st.st_mode);
    if (rollback_mounted (blk ? NULL : *files, blk ? st.st_rdev : 0, where,
                          sizeof where)) {
      snprintf (err, errlen, "the volume (%s) is mounted on %s: unmount it "
                "first or use --force", *files, where);
      return -EBUSY;
    }
    if (!blk && loop_find (*files, loop, sizeof loop)) {
      snprintf (err, errlen, "the volume is attached as %s: detach it first "
                "or use --force", loop);
      return -EBUSY;
    }
  }
  return 0;
}
