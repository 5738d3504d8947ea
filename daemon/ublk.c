/* SPDX-License-Identifier: MIT */
/*
 * fssnapd's ublk devices: which exist, their names, their ids on disk.
 *
 * One slot per snapshot number and one for the volume, and one per
 * writable clone number.  A slot with a device has its /dev/fssnap/NAME/...
 * symlink and a line in STATE_DIR/ublk-devices:
 *
 *   volume ID
 *   snap N UUID ID
 *   clone K BASE_UUID CREATE_TIME ID
 *
 * (rewritten whole, through a temporary file, fsync and rename, on every
 * change).  At start each line is checked against the kernel: a device
 * whose server is dead and whose target still exists (the same snapshot
 * UUID; for a clone, the same base UUID and creation time) is taken over
 * with user recovery, so a file system mounted on it carries on; one whose
 * snapshot or clone is gone is removed; a device the kernel
 * no longer has is added again, under the same id when it is free.
 *
 * Snapshots and clones created and deleted at run time reach us through
 * the control server's hooks (created, check_delete, deleted, and their
 * clone_ twins).  A snapshot the engine deletes or disables by itself
 * (maxsize, store error) loses its device within a second: a watcher
 * thread looks every UBLK_WATCH_MS (and at the next create or delete),
 * unless the device is in use.
 *
 * Locks: ublk.lock guards the slots, the symlinks, the state file and
 * quit; it is held across device start and delete (control commands,
 * which never wait on the engine's locks) and never taken by the queue
 * threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/setup.h"
#include "daemon/ublk.h"
#include "ublk/ublk.h"

#define UBLK_STATE_FILE "ublk-devices"
#define UBLK_DEV_DIR    "/dev/fssnap"
#define UBLK_VOLUME     FSSNAP_MAX_SNAPSHOTS    /* the volume's slot */
#define UBLK_NSLOTS     (FSSNAP_MAX_SNAPSHOTS + 1)
#define UBLK_WATCH_MS   1000    /* how often the watcher looks */

struct daemon_ublk_slot {
  struct ublk_dev *dev;         /* NULL: none, or left for the next server */
  int id;                       /* device id; -1: no device */
  char uuid[FSSNAP_UUID_STRLEN];        /* of the snapshot it serves */
};

/* A writable clone's device. */
struct daemon_ublk_cslot {
  struct ublk_dev *dev;         /* NULL: none, or left for the next server */
  int id;                       /* device id; -1: no device */
  char base_uuid[FSSNAP_UUID_STRLEN];   /* the clone it serves */
  int64_t create_time;
};

struct daemon_ublk {
  struct fssnap_origin *origin;
  struct fssnap_clones *clones; /* NULL: no clone devices */
  struct ublk_ctrl *ctrl;
  fssnap_log_fn log;
  char state_file[PATH_MAX];
  char dir[PATH_MAX - 64];      /* /dev/fssnap/NAME */
  char volume_link[PATH_MAX];   /* dir/volume */
  pthread_mutex_t lock;
  struct daemon_ublk_slot slots[UBLK_NSLOTS];   /* under lock */
  struct daemon_ublk_cslot cslots[FSSNAP_MAX_CLONES];  /* under lock */
  pthread_t watcher;            /* daemon_ublk_watch */
  bool watching;
  bool quit;                    /* under lock: the watcher leaves */
  pthread_cond_t wake;          /* for the watcher, with lock */
};

static void __attribute__ ((format (printf, 3, 4)))
daemon_ublk_log (struct daemon_ublk *u, enum fssnap_log_level level,
                 const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  u->log (NULL, level, msg);
}

static void
daemon_ublk_link_path (struct daemon_ublk *u, size_t slot, char *path,
                       size_t len)
{
  if (slot == UBLK_VOLUME)
    snprintf (path, len, "%s/volume", u->dir);
  else
    snprintf (path, len, "%s/snap/%zu", u->dir, slot);
}

/* ---- Clone devices ----------------------------------------------------- */

static void
daemon_ublk_clone_link_path (struct daemon_ublk *u, unsigned k, char *path,
                             size_t len)
{
  snprintf (path, len, "%s/clone/%u", u->dir, k);
}

/* Is clone k there, the one created at create_time on base_uuid (NULL:
 * any)?  Its identity in *info.
 */
static bool
daemon_ublk_clone_servable (struct daemon_ublk *u, unsigned k,
                            const char *base_uuid, int64_t create_time,
                            struct fssnap_clone_info *info)
{
  return u->clones && fssnap_clones_info (u->clones, k, info) == 0
         && (!base_uuid || (strcmp (base_uuid, info->base_uuid) == 0
                            && create_time == info->create_time));
}

/* Serve clone k read-write on device id (-1: any), recovering it if
 * asked.  Called with ublk.lock held (or before anyone else can take it).
 */
static int
daemon_ublk_clone_serve (struct daemon_ublk *u, unsigned k, int id,
                         bool recover, char *err, size_t errlen)
{
  struct daemon_ublk_cslot *s = &u->cslots[k];
  struct ublk_dev_opts opts = { .origin = u->origin, .id = id,
                                .recover = recover };
  struct fssnap_clone_info *info = malloc (sizeof *info);
  char link[PATH_MAX], tmp[PATH_MAX + 8];
  int r = info ? 0 : -ENOMEM;

  if (r == 0 && (!daemon_ublk_clone_servable (u, k, NULL, 0, info)
                 || fssnap_clone_get (u->clones, k, &opts.clone) < 0))
    r = -ENOENT;
  if (r < 0)
    snprintf (err, errlen, "clone %u cannot be served", k);
  if (r == 0 && (r = ublk_dev_start (u->ctrl, &opts, &s->dev, err,
                                     errlen)) < 0)
    fssnap_clone_put (opts.clone);
  if (r == 0) {
    s->id = ublk_dev_id (s->dev);
    snprintf (s->base_uuid, sizeof s->base_uuid, "%s", info->base_uuid);
    s->create_time = info->create_time;
    daemon_ublk_clone_link_path (u, k, link, sizeof link);
    snprintf (tmp, sizeof tmp, "%s.new", link);
    unlink (tmp);
    if (symlink (ublk_dev_path (s->dev), tmp) < 0 || rename (tmp, link) < 0)
      daemon_ublk_log (u, FSSNAP_LOG_ERR, "cannot make %s: %s", link,
                       strerror (errno));
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "%s clone %u as %s",
                     recover ? "recovered" : "serving", k,
                     ublk_dev_path (s->dev));
  }
  free (info);
  return r;
}

/* Delete clone k's device and its name.  Called with ublk.lock held. */
static void
daemon_ublk_clone_drop (struct daemon_ublk *u, unsigned k)
{
  struct daemon_ublk_cslot *s = &u->cslots[k];
  char link[PATH_MAX];

  if (s->dev)
    ublk_dev_delete (s->dev);
  else if (s->id >= 0)
    ublk_ctrl_remove (u->ctrl, s->id);
  daemon_ublk_clone_link_path (u, k, link, sizeof link);
  unlink (link);
  s->dev = NULL;
  s->id = -1;
  s->base_uuid[0] = '\0';
  s->create_time = 0;
}

/* The clone lines of the state file, written by daemon_ublk_save; how
 * many.  Called with ublk.lock held.
 */
static size_t
daemon_ublk_save_clones (struct daemon_ublk *u, FILE *f)
{
  size_t n = 0;

  for (unsigned k = 0; k < FSSNAP_MAX_CLONES; k++) {
    const struct daemon_ublk_cslot *s = &u->cslots[k];
    if (s->id < 0)
      continue;
    fprintf (f, "clone %u %s %lld %d\n", k, s->base_uuid,
             (long long) s->create_time, s->id);
    n++;
  }
  return n;
}

/* A clone device a dead fssnapd recorded: take it over, remove it, or
 * make it again (same id).  Fails only when a device in use cannot be
 * recovered.  Before anyone else can take ublk.lock.
 */
static int
daemon_ublk_clone_resume (struct daemon_ublk *u, unsigned k,
                          const char *base_uuid, int64_t create_time, int id,
                          char *err, size_t errlen)
{
  struct fssnap_clone_info *info = malloc (sizeof *info);
  struct ublk_dev_state st;
  bool there;
  int r;

  if (!info)
    return -ENOMEM;
  there = daemon_ublk_clone_servable (u, k, base_uuid, create_time, info);
  free (info);
  r = ublk_ctrl_dev_state (u->ctrl, id, &st);
  if (r < 0)                    /* gone (a reboot): a new one, same id */
    return there ? daemon_ublk_clone_serve (u, k, id, false, err, errlen)
                 : 0;
  if (st.server_pid > 0 && st.server_pid != getpid ()
      && kill (st.server_pid, 0) == 0) {
    daemon_ublk_log (u, FSSNAP_LOG_WARN, "ublk device %d, recorded in %s, "
                     "is served by process %d: not ours", id, u->state_file,
                     st.server_pid);
    return 0;
  }
  if (!there) {
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "removing /dev/ublkb%d: its clone "
                     "is gone", id);
    ublk_ctrl_remove (u->ctrl, id);
    return 0;
  }
  if (st.dead || !st.recoverable) {
    ublk_ctrl_remove (u->ctrl, id);
    return daemon_ublk_clone_serve (u, k, id, false, err, errlen);
  }
  return daemon_ublk_clone_serve (u, k, id, true, err, errlen);
}

/* Recover the clone devices the state file names, then add one for every
 * other clone.  Fails only when a device in use cannot be recovered.
 * Before anyone else can take ublk.lock.
 */
static int
daemon_ublk_start_clones (struct daemon_ublk *u, char *err, size_t errlen)
{
  unsigned nums[FSSNAP_MAX_CLONES], k;
  char line[256], uuid[FSSNAP_UUID_STRLEN], why[512];
  long long ctime;
  int id, n, r = 0;
  FILE *f;

  if (!u->clones)
    return 0;
  f = fopen (u->state_file, "re");
  while (f && r == 0 && fgets (line, sizeof line, f))
    if (sscanf (line, "clone %u %36s %lld %d", &k, uuid, &ctime, &id) == 4
        && k < FSSNAP_MAX_CLONES && id >= 0 && u->cslots[k].id < 0)
      r = daemon_ublk_clone_resume (u, k, uuid, ctime, id, err, errlen);
  if (f)
    fclose (f);
  n = fssnap_clones_list (u->clones, nums, FSSNAP_MAX_CLONES);
  for (int i = 0; r == 0 && i < n && i < FSSNAP_MAX_CLONES; i++)
    if (u->cslots[nums[i]].id < 0
        && daemon_ublk_clone_serve (u, nums[i], -1, false, why,
                                    sizeof why) < 0)
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "no ublk device for clone %u: %s",
                       nums[i], why);
  return r;
}

/* Names a dead fssnapd left for clone devices we do not serve. */
static void
daemon_ublk_sweep_clones (struct daemon_ublk *u)
{
  char link[PATH_MAX];

  for (unsigned k = 0; k < FSSNAP_MAX_CLONES; k++)
    if (u->cslots[k].id < 0) {
      daemon_ublk_clone_link_path (u, k, link, sizeof link);
      unlink (link);
    }
}

/* As daemon_ublk_stop for the clones.  Called with ublk.lock held. */
static void
daemon_ublk_stop_clones (struct daemon_ublk *u)
{
  char what[PATH_MAX + 64];

  for (unsigned k = 0; k < FSSNAP_MAX_CLONES; k++) {
    struct daemon_ublk_cslot *s = &u->cslots[k];
    if (!s->dev)
      continue;
    if (ublk_dev_recoverable (s->dev)
        && ublk_dev_in_use (s->dev, what, sizeof what) > 0) {
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "%s is %s: left for the next "
                       "fssnapd, which takes it over; its I/O waits until "
                       "then", ublk_dev_path (s->dev), what);
      ublk_dev_abandon (s->dev);
      s->dev = NULL;
      continue;
    }
    daemon_ublk_clone_drop (u, k);
  }
}

/* ---- The state file ---------------------------------------------------- */

/* Called with ublk.lock held. */
static void
daemon_ublk_save (struct daemon_ublk *u)
{
  char tmp[PATH_MAX + 8];
  size_t i, n = 0;
  FILE *f;

  snprintf (tmp, sizeof tmp, "%s.tmp", u->state_file);
  f = fopen (tmp, "we");
  if (!f)
    goto fail;
  for (i = 0; i < UBLK_NSLOTS; i++) {
    const struct daemon_ublk_slot *s = &u->slots[i];
    if (s->id < 0)
      continue;
    n++;
    if (i == UBLK_VOLUME)
      fprintf (f, "volume %d\n", s->id);
    else
      fprintf (f, "snap %zu %s %d\n", i, s->uuid, s->id);
  }
  n += daemon_ublk_save_clones (u, f);
  if (fflush (f) != 0 || fsync (fileno (f)) < 0) {
    fclose (f);
    goto fail;
  }
  fclose (f);
  if (n == 0) {
    unlink (tmp);
    unlink (u->state_file);
    return;
  }
  if (rename (tmp, u->state_file) == 0)
    return;
fail:
  daemon_ublk_log (u, FSSNAP_LOG_ERR, "cannot record the ublk devices in "
                   "%s: %s (a restart after a crash will not find them)",
                   u->state_file, strerror (errno));
}

struct daemon_ublk_entry {
  size_t slot;
  int id;
  char uuid[FSSNAP_UUID_STRLEN];
};

/* The devices a previous fssnapd recorded; how many (at most max). */
static size_t
daemon_ublk_load (struct daemon_ublk *u, struct daemon_ublk_entry *e,
                  size_t max)
{
  char line[256];
  size_t n = 0;
  unsigned num;
  FILE *f = fopen (u->state_file, "re");

  if (!f)
    return 0;
  while (n < max && fgets (line, sizeof line, f)) {
    memset (&e[n], 0, sizeof e[n]);
    if (sscanf (line, "volume %d", &e[n].id) == 1)
      e[n].slot = UBLK_VOLUME;
    else if (sscanf (line, "snap %u %36s %d", &num, e[n].uuid, &e[n].id) == 3
             && num < FSSNAP_MAX_SNAPSHOTS)
      e[n].slot = num;
    else if (strncmp (line, "clone ", 6) == 0)
      continue;                 /* daemon_ublk_load_clones' */
    else {
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "%s: ignoring \"%.*s\"",
                       u->state_file, (int) strcspn (line, "\n"), line);
      continue;
    }
    n++;
  }
  fclose (f);
  return n;
}

/* ---- Devices ----------------------------------------------------------- */

/* Is slot's target (the volume, or the snapshot with this uuid) there to
 * be served?  Its uuid in uuid.
 */
static bool
daemon_ublk_servable (struct daemon_ublk *u, size_t slot, const char *want,
                      char *uuid)
{
  struct fssnap_snapshot_info *info;
  bool ok;

  *uuid = '\0';
  if (slot == UBLK_VOLUME)
    return true;
  info = malloc (sizeof *info);
  if (!info)
    return false;
  ok = fssnap_snapshot_info (u->origin, (unsigned) slot, info) == 0
       && (info->state == FSSNAP_STATE_IDLE
           || info->state == FSSNAP_STATE_ACTIVE)
       && (!want || strcmp (want, info->uuid) == 0);
  if (ok)
    snprintf (uuid, FSSNAP_UUID_STRLEN, "%s", info->uuid);
  free (info);
  return ok;
}

static void
daemon_ublk_link (struct daemon_ublk *u, size_t slot)
{
  char link[PATH_MAX], tmp[PATH_MAX + 8];

  daemon_ublk_link_path (u, slot, link, sizeof link);
  snprintf (tmp, sizeof tmp, "%s.new", link);
  unlink (tmp);
  if (symlink (ublk_dev_path (u->slots[slot].dev), tmp) < 0
      || rename (tmp, link) < 0)
    daemon_ublk_log (u, FSSNAP_LOG_ERR, "cannot make %s: %s", link,
                     strerror (errno));
}

/* Serve slot's target on device id (-1: any), recovering it if asked.
 * Called with ublk.lock held (or before anyone else can take it).
 */
static int
daemon_ublk_serve (struct daemon_ublk *u, size_t slot, int id, bool recover,
                   char *err, size_t errlen)
{
  struct daemon_ublk_slot *s = &u->slots[slot];
  struct ublk_dev_opts opts = { .origin = u->origin, .id = id,
                                .recover = recover };
  int r;

  if (!daemon_ublk_servable (u, slot, NULL, s->uuid)) {
    snprintf (err, errlen, "snapshot %zu cannot be served", slot);
    return -ENOENT;
  }
  if (slot != UBLK_VOLUME) {
    r = fssnap_snapshot_open (u->origin, (unsigned) slot, &opts.snap);
    if (r < 0) {
      snprintf (err, errlen, "snapshot %zu: %s", slot, strerror (-r));
      return r;
    }
  }
  r = ublk_dev_start (u->ctrl, &opts, &s->dev, err, errlen);
  if (r < 0) {
    if (opts.snap)
      fssnap_snapshot_close (opts.snap);
    return r;
  }
  s->id = ublk_dev_id (s->dev);
  daemon_ublk_link (u, slot);
  if (slot == UBLK_VOLUME)
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "%s the volume as %s",
                     recover ? "recovered" : "serving",
                     ublk_dev_path (s->dev));
  else
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "%s snapshot %zu as %s",
                     recover ? "recovered" : "serving", slot,
                     ublk_dev_path (s->dev));
  return 0;
}

/* Delete slot's device and its name.  Called with ublk.lock held. */
static void
daemon_ublk_drop (struct daemon_ublk *u, size_t slot)
{
  struct daemon_ublk_slot *s = &u->slots[slot];
  char link[PATH_MAX];

  if (s->dev)
    ublk_dev_delete (s->dev);
  else if (s->id >= 0)
    ublk_ctrl_remove (u->ctrl, s->id);
  daemon_ublk_link_path (u, slot, link, sizeof link);
  unlink (link);
  s->dev = NULL;
  s->id = -1;
  s->uuid[0] = '\0';
}

/* A device a dead fssnapd recorded: take it over, remove it, or note its
 * id for a new one.  Fails only when a device in use cannot be recovered.
 */
static int
daemon_ublk_resume (struct daemon_ublk *u, const struct daemon_ublk_entry *e,
                    int *want_id, char *err, size_t errlen)
{
  struct ublk_dev_state st;
  char uuid[FSSNAP_UUID_STRLEN];
  int r = ublk_ctrl_dev_state (u->ctrl, e->id, &st);

  if (r < 0) {                  /* gone (a reboot): a new one, same id */
    want_id[e->slot] = e->id;
    return 0;
  }
  if (st.server_pid > 0 && st.server_pid != getpid ()
      && kill (st.server_pid, 0) == 0) {
    daemon_ublk_log (u, FSSNAP_LOG_WARN, "ublk device %d, recorded in %s, "
                     "is served by process %d: not ours", e->id,
                     u->state_file, st.server_pid);
    return 0;
  }
  if (!daemon_ublk_servable (u, e->slot, e->slot == UBLK_VOLUME ? NULL
                             : e->uuid, uuid)) {
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "removing /dev/ublkb%d: its "
                     "snapshot is gone", e->id);
    ublk_ctrl_remove (u->ctrl, e->id);
    return 0;
  }
  if (st.dead || !st.recoverable) {
    ublk_ctrl_remove (u->ctrl, e->id);
    want_id[e->slot] = e->id;
    return 0;
  }
  return daemon_ublk_serve (u, e->slot, e->id, true, err, errlen);
}

/* Names a dead fssnapd left for devices we do not serve.  Called before
 * anyone else can take ublk.lock.
 */
static void
daemon_ublk_sweep (struct daemon_ublk *u)
{
  char link[PATH_MAX];
  size_t i;

  for (i = 0; i < UBLK_NSLOTS; i++) {
    if (u->slots[i].id >= 0)
      continue;
    daemon_ublk_link_path (u, i, link, sizeof link);
    unlink (link);
  }
  daemon_ublk_sweep_clones (u);
}

int
daemon_ublk_probe (char *err, size_t errlen)
{
  struct ublk_ctrl *ctrl;

  if (ublk_ctrl_open (&ctrl, NULL, NULL, err, errlen) < 0)
    return -1;
  ublk_ctrl_close (ctrl);
  return 0;
}

static int
daemon_ublk_dirs (struct daemon_ublk *u, char *err, size_t errlen)
{
  char snap[PATH_MAX + 8], clone[PATH_MAX + 8];

  snprintf (snap, sizeof snap, "%s/snap", u->dir);
  snprintf (clone, sizeof clone, "%s/clone", u->dir);
  return daemon_mkdirs (snap, 0755, err, errlen) < 0
         || daemon_mkdirs (clone, 0755, err, errlen) < 0 ? -EIO : 0;
}

/* ---- The watcher: devices of snapshots the engine removed ------------ */

static bool daemon_ublk_reap (struct daemon_ublk *u);

static bool
daemon_ublk_has_snapshot_devices (struct daemon_ublk *u)
{
  size_t i;

  for (i = 0; i < FSSNAP_MAX_SNAPSHOTS; i++)
    if (u->slots[i].dev)
      return true;
  return false;
}

/* Every UBLK_WATCH_MS, reap.  Takes ublk.lock (held but while waiting). */
static void *
daemon_ublk_watch (void *arg)
{
  struct daemon_ublk *u = arg;
  struct timespec at;

  pthread_mutex_lock (&u->lock);
  while (!u->quit) {
    clock_gettime (CLOCK_MONOTONIC, &at);
    at.tv_sec += UBLK_WATCH_MS / 1000;
    at.tv_nsec += (long) (UBLK_WATCH_MS % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
      at.tv_sec++;
      at.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait (&u->wake, &u->lock, &at);
    if (!u->quit && daemon_ublk_has_snapshot_devices (u)
        && daemon_ublk_reap (u))
      daemon_ublk_save (u);
  }
  pthread_mutex_unlock (&u->lock);
  return NULL;
}

static void
daemon_ublk_watch_init (struct daemon_ublk *u)
{
  pthread_condattr_t attr;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&u->wake, &attr);
  pthread_condattr_destroy (&attr);
}

static int
daemon_ublk_watch_start (struct daemon_ublk *u)
{
  int r;

  r = pthread_create (&u->watcher, NULL, daemon_ublk_watch, u);
  u->watching = r == 0;
  return -r;
}

/* Takes ublk.lock. */
static void
daemon_ublk_watch_stop (struct daemon_ublk *u)
{
  if (!u->watching)
    return;
  pthread_mutex_lock (&u->lock);
  u->quit = true;
  pthread_cond_signal (&u->wake);
  pthread_mutex_unlock (&u->lock);
  pthread_join (u->watcher, NULL);
  u->watching = false;
}

int
daemon_ublk_start (struct fssnap_origin *origin, struct fssnap_clones *clones,
                   const char *state_dir, const char *name, fssnap_log_fn log,
                   struct daemon_ublk **up, char *err, size_t errlen)
{
  struct daemon_ublk *u = calloc (1, sizeof *u);
  struct daemon_ublk_entry *e = calloc (UBLK_NSLOTS, sizeof *e);
  int want_id[UBLK_NSLOTS];
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  size_t i, n;
  int r, nsnaps;

  if (!u || !e) {
    free (u);
    free (e);
    return -ENOMEM;
  }
  u->origin = origin;
  u->clones = clones;
  u->log = log;
  pthread_mutex_init (&u->lock, NULL);
  daemon_ublk_watch_init (u);
  snprintf (u->state_file, sizeof u->state_file, "%s/%s", state_dir,
            UBLK_STATE_FILE);
  snprintf (u->dir, sizeof u->dir, "%s/%s", UBLK_DEV_DIR, name);
  daemon_ublk_link_path (u, UBLK_VOLUME, u->volume_link,
                         sizeof u->volume_link);
  for (i = 0; i < UBLK_NSLOTS; i++) {
    u->slots[i].id = -1;
    want_id[i] = -1;
  }
  for (i = 0; i < FSSNAP_MAX_CLONES; i++)
    u->cslots[i].id = -1;
  r = ublk_ctrl_open (&u->ctrl, log, NULL, err, errlen);
  if (r == 0)
    r = daemon_ublk_dirs (u, err, errlen);
  n = daemon_ublk_load (u, e, UBLK_NSLOTS);
  for (i = 0; r == 0 && i < n; i++)
    if (e[i].id >= 0 && u->slots[e[i].slot].id < 0)
      r = daemon_ublk_resume (u, &e[i], want_id, err, errlen);
  if (r == 0 && u->slots[UBLK_VOLUME].id < 0)
    r = daemon_ublk_serve (u, UBLK_VOLUME, want_id[UBLK_VOLUME], false,
                           err, errlen);
  nsnaps = fssnap_snapshot_list (origin, nums, FSSNAP_MAX_SNAPSHOTS);
  if (nsnaps > FSSNAP_MAX_SNAPSHOTS)
    nsnaps = FSSNAP_MAX_SNAPSHOTS;
  for (i = 0; r == 0 && nsnaps > 0 && i < (size_t) nsnaps; i++) {
    char why[256];
    if (u->slots[nums[i]].id >= 0
        || daemon_ublk_serve (u, nums[i], want_id[nums[i]], false,
                              why, sizeof why) == 0)
      continue;
    daemon_ublk_log (u, FSSNAP_LOG_WARN, "no ublk device for snapshot %u: "
                     "%s", nums[i], why);
  }
  if (r == 0)
    r = daemon_ublk_start_clones (u, err, errlen);
  free (e);
  if (u->ctrl) {
    daemon_ublk_sweep (u);
    daemon_ublk_save (u);
  }
  if (r == 0) {
    r = daemon_ublk_watch_start (u);
    if (r < 0)
      snprintf (err, errlen, "ublk watcher thread: %s", strerror (-r));
  }
  if (r < 0) {
    if (u->ctrl)
      daemon_ublk_stop (u);
    else
      free (u);
    return r;
  }
  *up = u;
  return 0;
}

void
daemon_ublk_stop (struct daemon_ublk *u)
{
  char what[PATH_MAX + 64], snap[PATH_MAX + 8];
  size_t i;

  if (!u)
    return;
  daemon_ublk_watch_stop (u);
  pthread_mutex_lock (&u->lock);
  for (i = 0; i < UBLK_NSLOTS; i++) {
    struct daemon_ublk_slot *s = &u->slots[i];
    if (!s->dev)
      continue;
    if (ublk_dev_recoverable (s->dev)
        && ublk_dev_in_use (s->dev, what, sizeof what) > 0) {
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "%s is %s: left for the next "
                       "fssnapd, which takes it over; its I/O waits until "
                       "then", ublk_dev_path (s->dev), what);
      ublk_dev_abandon (s->dev);
      s->dev = NULL;
      continue;
    }
    daemon_ublk_drop (u, i);
  }
  daemon_ublk_stop_clones (u);
  daemon_ublk_save (u);
  snprintf (snap, sizeof snap, "%s/snap", u->dir);
  rmdir (snap);
  snprintf (snap, sizeof snap, "%s/clone", u->dir);
  if (rmdir (snap) == 0 && rmdir (u->dir) == 0)
    rmdir (UBLK_DEV_DIR);       /* only if empty: other volumes may be there */
  pthread_mutex_unlock (&u->lock);
  ublk_ctrl_close (u->ctrl);
  pthread_cond_destroy (&u->wake);
  pthread_mutex_destroy (&u->lock);
  free (u);
}

/* ---- Hooks ------------------------------------------------------------- */

const char *
daemon_ublk_volume_device (struct daemon_ublk *u)
{
  return u ? u->volume_link : NULL;
}

void
daemon_ublk_devices (struct daemon_ublk *u, int target, ctl_device_fn fn,
                     void *arg)
{
  size_t slot = target == FSSNAP_VOLUME ? UBLK_VOLUME : (size_t) target;
  char link[PATH_MAX];
  bool have;

  if (!u || (target != FSSNAP_VOLUME
             && (target < 0 || target >= FSSNAP_MAX_SNAPSHOTS)))
    return;
  pthread_mutex_lock (&u->lock);
  have = u->slots[slot].dev != NULL;
  pthread_mutex_unlock (&u->lock);
  if (!have)
    return;
  daemon_ublk_link_path (u, slot, link, sizeof link);
  fn (arg, "ublk", link);
}

/* Devices whose snapshot the engine deleted or disabled by itself, unless
 * in use; whether there were any.  Called with ublk.lock held.
 */
static bool
daemon_ublk_reap (struct daemon_ublk *u)
{
  char uuid[FSSNAP_UUID_STRLEN], what[PATH_MAX + 64];
  bool dropped = false;
  size_t i;

  for (i = 0; i < FSSNAP_MAX_SNAPSHOTS; i++) {
    struct daemon_ublk_slot *s = &u->slots[i];
    if (!s->dev || daemon_ublk_servable (u, i, s->uuid, uuid)
        || ublk_dev_in_use (s->dev, what, sizeof what) != 0)
      continue;
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "removing %s: snapshot %zu is no "
                     "longer served", ublk_dev_path (s->dev), i);
    daemon_ublk_drop (u, i);
    dropped = true;
  }
  return dropped;
}

void
daemon_ublk_created (struct daemon_ublk *u, unsigned num)
{
  char err[512];

  if (!u || num >= FSSNAP_MAX_SNAPSHOTS)
    return;
  pthread_mutex_lock (&u->lock);
  daemon_ublk_reap (u);
  if (u->slots[num].id >= 0)    /* a dead device of a reused number */
    daemon_ublk_drop (u, num);
  if (daemon_ublk_serve (u, num, -1, false, err, sizeof err) < 0)
    daemon_ublk_log (u, FSSNAP_LOG_ERR, "no ublk device for snapshot %u: "
                     "%s", num, err);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}

/* -EBUSY with the reason when device DEV of KIND N (named LINK) may not go:
 * mounted or held, always; open, unless FORCE.  Called under ublk.lock. */
static int
daemon_ublk_refuse_busy (struct ublk_dev *dev, const char *kind, unsigned n,
                         const char *link, bool force, char *err,
                         size_t errlen)
{
  char what[PATH_MAX + 64];
  int busy = ublk_dev_in_use (dev, what, sizeof what);

  if (busy == 1) {
    snprintf (err, errlen, "%s %u is %s (%s): unmount it first "
              "(--force does not unmount)", kind, n, what, link);
    return -EBUSY;
  }
  if (busy == 2 && !force) {
    snprintf (err, errlen, "%s %u's device %s is %s: close it first "
              "or use --force", kind, n, link, what);
    return -EBUSY;
  }
  return 0;
}

int
daemon_ublk_check_delete (struct daemon_ublk *u, unsigned num, bool force,
                          char *err, size_t errlen)
{
  char link[PATH_MAX];
  int r = 0;

  if (!u || num >= FSSNAP_MAX_SNAPSHOTS)
    return 0;
  pthread_mutex_lock (&u->lock);
  if (u->slots[num].dev) {
    daemon_ublk_link_path (u, num, link, sizeof link);
    r = daemon_ublk_refuse_busy (u->slots[num].dev, "snapshot", num, link,
                                 force, err, errlen);
  }
  pthread_mutex_unlock (&u->lock);
  return r;
}

void
daemon_ublk_deleted (struct daemon_ublk *u, unsigned num)
{
  if (!u || num >= FSSNAP_MAX_SNAPSHOTS)
    return;
  pthread_mutex_lock (&u->lock);
  if (u->slots[num].id >= 0)
    daemon_ublk_drop (u, num);
  daemon_ublk_reap (u);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}

/* ---- Clone hooks ------------------------------------------------------- */

void
daemon_ublk_clone_devices (struct daemon_ublk *u, unsigned k,
                           ctl_device_fn fn, void *arg)
{
  char link[PATH_MAX];
  bool have;

  if (!u || k >= FSSNAP_MAX_CLONES)
    return;
  pthread_mutex_lock (&u->lock);
  have = u->cslots[k].dev != NULL;
  pthread_mutex_unlock (&u->lock);
  if (!have)
    return;
  daemon_ublk_clone_link_path (u, k, link, sizeof link);
  fn (arg, "ublk", link);
}

void
daemon_ublk_clone_created (struct daemon_ublk *u, unsigned k)
{
  char err[512];

  if (!u || k >= FSSNAP_MAX_CLONES)
    return;
  pthread_mutex_lock (&u->lock);
  if (u->cslots[k].id >= 0)     /* a dead device of a reused number */
    daemon_ublk_clone_drop (u, k);
  if (daemon_ublk_clone_serve (u, k, -1, false, err, sizeof err) < 0)
    daemon_ublk_log (u, FSSNAP_LOG_ERR, "no ublk device for clone %u: %s",
                     k, err);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}

int
daemon_ublk_clone_check_delete (struct daemon_ublk *u, unsigned k,
                                bool force, char *err, size_t errlen)
{
  char link[PATH_MAX];
  int r = 0;

  if (!u || k >= FSSNAP_MAX_CLONES)
    return 0;
  pthread_mutex_lock (&u->lock);
  if (u->cslots[k].dev) {
    daemon_ublk_clone_link_path (u, k, link, sizeof link);
    r = daemon_ublk_refuse_busy (u->cslots[k].dev, "clone", k, link, force,
                                 err, errlen);
  }
  pthread_mutex_unlock (&u->lock);
  return r;
}

void
daemon_ublk_clone_deleted (struct daemon_ublk *u, unsigned k)
{
  if (!u || k >= FSSNAP_MAX_CLONES)
    return;
  pthread_mutex_lock (&u->lock);
  if (u->cslots[k].id >= 0)
    daemon_ublk_clone_drop (u, k);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}
