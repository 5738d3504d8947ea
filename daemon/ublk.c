/* SPDX-License-Identifier: MIT */
/*
 * fssnapd's ublk devices: which exist, their names, their ids on disk.
 *
 * One slot per snapshot number, one for the volume and one per writable
 * clone number, each knowing its kind, its number and what it serves (a
 * snapshot's UUID; a clone's base UUID and creation time), so that one set
 * of functions serves, drops, records, resumes and reaps them all.  A slot
 * with a device has its /dev/fssnap/NAME/... symlink and a line in
 * STATE_DIR/ublk-devices:
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
/* The slots: snapshots 0.., the volume, clones 0.. */
#define UBLK_VOLUME     FSSNAP_MAX_SNAPSHOTS
#define UBLK_CLONE0     (UBLK_VOLUME + 1)
#define UBLK_NSLOTS     (UBLK_CLONE0 + FSSNAP_MAX_CLONES)
#define UBLK_WATCH_MS   1000    /* how often the watcher looks */

enum daemon_ublk_kind { UBLK_KIND_VOLUME, UBLK_KIND_SNAP, UBLK_KIND_CLONE };

/* The device of the volume, of a snapshot or of a writable clone. */
struct daemon_ublk_slot {
  enum daemon_ublk_kind kind;   /* these three fixed at start */
  unsigned num;                 /* the snapshot's or clone's number */
  char name[24];                /* "the volume", "snapshot N", "clone K" */
  struct ublk_dev *dev;         /* NULL: none, or left for the next server */
  int id;                       /* device id; -1: no device */
  /* What it serves: a snapshot's UUID; a clone's base snapshot UUID and
   * creation time ("" and 0 for the rest).
   */
  char uuid[FSSNAP_UUID_STRLEN];
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
  pthread_t watcher;            /* daemon_ublk_watch */
  bool watching;
  bool quit;                    /* under lock: the watcher leaves */
  pthread_cond_t wake;          /* for the watcher, with lock */
};

/* A line of the state file. */
struct daemon_ublk_entry {
  int id;
  char uuid[FSSNAP_UUID_STRLEN];
  long long create_time;
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

/* ---- Slots ------------------------------------------------------------- */

static void
daemon_ublk_slot_init (struct daemon_ublk_slot *s, size_t i)
{
  s->id = -1;
  if (i == UBLK_VOLUME) {
    s->kind = UBLK_KIND_VOLUME;
    snprintf (s->name, sizeof s->name, "the volume");
  }
  else {
    s->kind = i < UBLK_VOLUME ? UBLK_KIND_SNAP : UBLK_KIND_CLONE;
    s->num = (unsigned) (i < UBLK_VOLUME ? i : i - UBLK_CLONE0);
    snprintf (s->name, sizeof s->name, "%s %u",
              i < UBLK_VOLUME ? "snapshot" : "clone", s->num);
  }
}

/* The slot of snapshot or clone num, or the volume's; NULL when there is
 * none (num out of range, or no u).
 */
static struct daemon_ublk_slot *
daemon_ublk_slot (struct daemon_ublk *u, enum daemon_ublk_kind kind,
                  unsigned num)
{
  if (!u)
    return NULL;
  if (kind == UBLK_KIND_VOLUME)
    return &u->slots[UBLK_VOLUME];
  if (kind == UBLK_KIND_SNAP)
    return num < FSSNAP_MAX_SNAPSHOTS ? &u->slots[num] : NULL;
  return num < FSSNAP_MAX_CLONES ? &u->slots[UBLK_CLONE0 + num] : NULL;
}

/* dir/volume, dir/snap/N or dir/clone/K. */
static void
daemon_ublk_link_path (struct daemon_ublk *u,
                       const struct daemon_ublk_slot *s, char *path,
                       size_t len)
{
  if (s->kind == UBLK_KIND_VOLUME)
    snprintf (path, len, "%s/volume", u->dir);
  else
    snprintf (path, len, "%s/%s/%u", u->dir,
              s->kind == UBLK_KIND_SNAP ? "snap" : "clone", s->num);
}

static void
daemon_ublk_link (struct daemon_ublk *u, const struct daemon_ublk_slot *s)
{
  char link[PATH_MAX], tmp[PATH_MAX + 8];

  daemon_ublk_link_path (u, s, link, sizeof link);
  snprintf (tmp, sizeof tmp, "%s.new", link);
  unlink (tmp);
  if (symlink (ublk_dev_path (s->dev), tmp) < 0 || rename (tmp, link) < 0)
    daemon_ublk_log (u, FSSNAP_LOG_ERR, "cannot make %s: %s", link,
                     strerror (errno));
}

/* ---- What the slots serve ---------------------------------------------- */

static bool
daemon_ublk_snap_target (struct daemon_ublk *u, unsigned num, char *uuid)
{
  struct fssnap_snapshot_info *info = malloc (sizeof *info);
  bool ok = info && fssnap_snapshot_info (u->origin, num, info) == 0
            && (info->state == FSSNAP_STATE_IDLE
                || info->state == FSSNAP_STATE_ACTIVE);

  if (ok)
    snprintf (uuid, FSSNAP_UUID_STRLEN, "%s", info->uuid);
  free (info);
  return ok;
}

static bool
daemon_ublk_clone_target (struct daemon_ublk *u, unsigned num, char *uuid,
                          int64_t *create_time)
{
  struct fssnap_clone_info *info = malloc (sizeof *info);
  bool ok = info && u->clones
            && fssnap_clones_info (u->clones, num, info) == 0;

  if (ok) {
    snprintf (uuid, FSSNAP_UUID_STRLEN, "%s", info->base_uuid);
    *create_time = info->create_time;
  }
  free (info);
  return ok;
}

/* Is s's volume, snapshot or clone there to be served?  What it is in
 * uuid and *create_time (as in struct daemon_ublk_slot).
 */
static bool
daemon_ublk_target (struct daemon_ublk *u, const struct daemon_ublk_slot *s,
                    char *uuid, int64_t *create_time)
{
  *uuid = '\0';
  *create_time = 0;
  if (s->kind == UBLK_KIND_SNAP)
    return daemon_ublk_snap_target (u, s->num, uuid);
  if (s->kind == UBLK_KIND_CLONE)
    return daemon_ublk_clone_target (u, s->num, uuid, create_time);
  return true;
}

/* Is s's target there, and the one with this uuid and create_time? */
static bool
daemon_ublk_is (struct daemon_ublk *u, const struct daemon_ublk_slot *s,
                const char *uuid, int64_t create_time)
{
  char now[FSSNAP_UUID_STRLEN];
  int64_t now_time;

  return daemon_ublk_target (u, s, now, &now_time)
         && strcmp (now, uuid) == 0 && now_time == create_time;
}

/* ---- Devices ----------------------------------------------------------- */

/* Open s's snapshot or clone into opts, noting what it is in s.  Called
 * with ublk.lock held (or before anyone else can take it).
 */
static int
daemon_ublk_open (struct daemon_ublk *u, struct daemon_ublk_slot *s,
                  struct ublk_dev_opts *opts, char *err, size_t errlen)
{
  int r = 0;

  if (!daemon_ublk_target (u, s, s->uuid, &s->create_time)
      || (s->kind == UBLK_KIND_CLONE
          && fssnap_clone_get (u->clones, s->num, &opts->clone) < 0)) {
    snprintf (err, errlen, "%s cannot be served", s->name);
    return -ENOENT;
  }
  if (s->kind == UBLK_KIND_SNAP
      && (r = fssnap_snapshot_open (u->origin, s->num, &opts->snap)) < 0)
    snprintf (err, errlen, "%s: %s", s->name, strerror (-r));
  return r;
}

/* Serve s's target on device id (-1: any), recovering it if asked.
 * Called with ublk.lock held (or before anyone else can take it).
 */
static int
daemon_ublk_serve (struct daemon_ublk *u, struct daemon_ublk_slot *s, int id,
                   bool recover, char *err, size_t errlen)
{
  struct ublk_dev_opts opts = { .origin = u->origin, .id = id,
                                .recover = recover };
  int r = daemon_ublk_open (u, s, &opts, err, errlen);

  if (r == 0 && (r = ublk_dev_start (u->ctrl, &opts, &s->dev, err,
                                     errlen)) < 0) {
    if (opts.snap)
      fssnap_snapshot_close (opts.snap);
    if (opts.clone)
      fssnap_clone_put (opts.clone);
  }
  if (r < 0)
    return r;
  s->id = ublk_dev_id (s->dev);
  daemon_ublk_link (u, s);
  daemon_ublk_log (u, FSSNAP_LOG_INFO, "%s %s as %s",
                   recover ? "recovered" : "serving", s->name,
                   ublk_dev_path (s->dev));
  return 0;
}

/* Delete s's device and its name.  Called with ublk.lock held. */
static void
daemon_ublk_drop (struct daemon_ublk *u, struct daemon_ublk_slot *s)
{
  char link[PATH_MAX];

  if (s->dev)
    ublk_dev_delete (s->dev);
  else if (s->id >= 0)
    ublk_ctrl_remove (u->ctrl, s->id);
  daemon_ublk_link_path (u, s, link, sizeof link);
  unlink (link);
  s->dev = NULL;
  s->id = -1;
  s->uuid[0] = '\0';
  s->create_time = 0;
}

/* At stop: leave s's device to the next fssnapd if it is in use and can
 * be taken over, else drop it.  Called with ublk.lock held.
 */
static void
daemon_ublk_leave (struct daemon_ublk *u, struct daemon_ublk_slot *s)
{
  char what[PATH_MAX + 64];

  if (!ublk_dev_recoverable (s->dev)
      || ublk_dev_in_use (s->dev, what, sizeof what) <= 0) {
    daemon_ublk_drop (u, s);
    return;
  }
  daemon_ublk_log (u, FSSNAP_LOG_WARN, "%s is %s: left for the next "
                   "fssnapd, which takes it over; its I/O waits until "
                   "then", ublk_dev_path (s->dev), what);
  ublk_dev_abandon (s->dev);
  s->dev = NULL;
}

/* Devices whose snapshot the engine deleted or disabled by itself, unless
 * in use; whether there were any.  Called with ublk.lock held.
 */
static bool
daemon_ublk_reap (struct daemon_ublk *u)
{
  char what[PATH_MAX + 64];
  bool dropped = false;

  for (size_t i = 0; i < FSSNAP_MAX_SNAPSHOTS; i++) {
    struct daemon_ublk_slot *s = &u->slots[i];
    if (!s->dev || daemon_ublk_is (u, s, s->uuid, s->create_time)
        || ublk_dev_in_use (s->dev, what, sizeof what) != 0)
      continue;
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "removing %s: %s is no "
                     "longer served", ublk_dev_path (s->dev), s->name);
    daemon_ublk_drop (u, s);
    dropped = true;
  }
  return dropped;
}

/* ---- The state file ---------------------------------------------------- */

/* s's line, if it has a device; whether it has. */
static bool
daemon_ublk_save_line (FILE *f, const struct daemon_ublk_slot *s)
{
  if (s->id < 0)
    return false;
  if (s->kind == UBLK_KIND_VOLUME)
    fprintf (f, "volume %d\n", s->id);
  else if (s->kind == UBLK_KIND_SNAP)
    fprintf (f, "snap %u %s %d\n", s->num, s->uuid, s->id);
  else
    fprintf (f, "clone %u %s %lld %d\n", s->num, s->uuid,
             (long long) s->create_time, s->id);
  return true;
}

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
  for (i = 0; i < UBLK_NSLOTS; i++)
    n += daemon_ublk_save_line (f, &u->slots[i]);
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

/* The slot a line of the state file names, the rest in *e; NULL: none. */
static struct daemon_ublk_slot *
daemon_ublk_parse (struct daemon_ublk *u, const char *line,
                   struct daemon_ublk_entry *e)
{
  unsigned num;

  memset (e, 0, sizeof *e);
  if (sscanf (line, "volume %d", &e->id) == 1)
    return daemon_ublk_slot (u, UBLK_KIND_VOLUME, 0);
  if (sscanf (line, "snap %u %36s %d", &num, e->uuid, &e->id) == 3)
    return daemon_ublk_slot (u, UBLK_KIND_SNAP, num);
  if (sscanf (line, "clone %u %36s %lld %d", &num, e->uuid, &e->create_time,
              &e->id) == 4)
    return daemon_ublk_slot (u, UBLK_KIND_CLONE, num);
  return NULL;
}

/* A device a dead fssnapd recorded for s: take it over, remove it, or
 * note its id for a new one in *want_id.  Fails only when a device in use
 * cannot be recovered.  Before anyone else can take ublk.lock.
 */
static int
daemon_ublk_resume (struct daemon_ublk *u, struct daemon_ublk_slot *s,
                    const struct daemon_ublk_entry *e, int *want_id,
                    char *err, size_t errlen)
{
  struct ublk_dev_state st;

  if (ublk_ctrl_dev_state (u->ctrl, e->id, &st) < 0) {
    *want_id = e->id;           /* gone (a reboot): a new one, same id */
    return 0;
  }
  if (st.server_pid > 0 && st.server_pid != getpid ()
      && kill (st.server_pid, 0) == 0) {
    daemon_ublk_log (u, FSSNAP_LOG_WARN, "ublk device %d, recorded in %s, "
                     "is served by process %d: not ours", e->id,
                     u->state_file, st.server_pid);
    return 0;
  }
  if (!daemon_ublk_is (u, s, e->uuid, e->create_time)) {
    daemon_ublk_log (u, FSSNAP_LOG_INFO, "removing /dev/ublkb%d: its %s is "
                     "gone", e->id,
                     s->kind == UBLK_KIND_CLONE ? "clone" : "snapshot");
    ublk_ctrl_remove (u->ctrl, e->id);
    return 0;
  }
  if (st.dead || !st.recoverable) {
    ublk_ctrl_remove (u->ctrl, e->id);
    *want_id = e->id;
    return 0;
  }
  return daemon_ublk_serve (u, s, e->id, true, err, errlen);
}

/* Resume every device the state file names (want_id: by slot).  Fails
 * only when a device in use cannot be recovered.  Before anyone else can
 * take ublk.lock.
 */
static int
daemon_ublk_load (struct daemon_ublk *u, int *want_id, char *err,
                  size_t errlen)
{
  struct daemon_ublk_entry e;
  struct daemon_ublk_slot *s;
  char line[256];
  int r = 0;
  FILE *f = fopen (u->state_file, "re");

  while (f && r == 0 && fgets (line, sizeof line, f)) {
    s = daemon_ublk_parse (u, line, &e);
    if (!s)
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "%s: ignoring \"%.*s\"",
                       u->state_file, (int) strcspn (line, "\n"), line);
    else if (e.id >= 0 && s->id < 0)
      r = daemon_ublk_resume (u, s, &e, &want_id[s - u->slots], err,
                              errlen);
  }
  if (f)
    fclose (f);
  return r;
}

/* Serve every snapshot (or every clone) without a device, under the id
 * want_id has for its slot, if any.  Before anyone else can take
 * ublk.lock.
 */
static void
daemon_ublk_serve_rest (struct daemon_ublk *u, enum daemon_ublk_kind kind,
                        const int *want_id)
{
  size_t max = kind == UBLK_KIND_SNAP ? FSSNAP_MAX_SNAPSHOTS
               : FSSNAP_MAX_CLONES;
  unsigned nums[UBLK_NSLOTS];
  int n = kind == UBLK_KIND_SNAP ? fssnap_snapshot_list (u->origin, nums, max)
          : u->clones ? fssnap_clones_list (u->clones, nums, max) : 0;
  struct daemon_ublk_slot *s;
  char why[256];

  for (size_t i = 0; n > 0 && i < (size_t) n && i < max; i++) {
    s = daemon_ublk_slot (u, kind, nums[i]);
    if (s && s->id < 0
        && daemon_ublk_serve (u, s, want_id[s - u->slots], false, why,
                              sizeof why) < 0)
      daemon_ublk_log (u, FSSNAP_LOG_WARN, "no ublk device for %s: %s",
                       s->name, why);
  }
}

/* Names a dead fssnapd left for devices we do not serve.  Called before
 * anyone else can take ublk.lock.
 */
static void
daemon_ublk_sweep (struct daemon_ublk *u)
{
  char link[PATH_MAX];

  for (size_t i = 0; i < UBLK_NSLOTS; i++)
    if (u->slots[i].id < 0) {
      daemon_ublk_link_path (u, &u->slots[i], link, sizeof link);
      unlink (link);
    }
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
    if (!u->quit && daemon_ublk_reap (u))
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
  int want_id[UBLK_NSLOTS];
  size_t i;
  int r;

  if (!u)
    return -ENOMEM;
  u->origin = origin;
  u->clones = clones;
  u->log = log;
  pthread_mutex_init (&u->lock, NULL);
  daemon_ublk_watch_init (u);
  snprintf (u->state_file, sizeof u->state_file, "%s/%s", state_dir,
            UBLK_STATE_FILE);
  snprintf (u->dir, sizeof u->dir, "%s/%s", UBLK_DEV_DIR, name);
  for (i = 0; i < UBLK_NSLOTS; i++) {
    daemon_ublk_slot_init (&u->slots[i], i);
    want_id[i] = -1;
  }
  daemon_ublk_link_path (u, &u->slots[UBLK_VOLUME], u->volume_link,
                         sizeof u->volume_link);
  r = ublk_ctrl_open (&u->ctrl, log, NULL, err, errlen);
  if (r == 0)
    r = daemon_ublk_dirs (u, err, errlen);
  if (r == 0)
    r = daemon_ublk_load (u, want_id, err, errlen);
  if (r == 0 && u->slots[UBLK_VOLUME].id < 0)
    r = daemon_ublk_serve (u, &u->slots[UBLK_VOLUME], want_id[UBLK_VOLUME],
                           false, err, errlen);
  if (r == 0) {
    daemon_ublk_serve_rest (u, UBLK_KIND_SNAP, want_id);
    daemon_ublk_serve_rest (u, UBLK_KIND_CLONE, want_id);
  }
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
  char dir[PATH_MAX + 8];

  if (!u)
    return;
  daemon_ublk_watch_stop (u);
  pthread_mutex_lock (&u->lock);
  for (size_t i = 0; i < UBLK_NSLOTS; i++)
    if (u->slots[i].dev)
      daemon_ublk_leave (u, &u->slots[i]);
  daemon_ublk_save (u);
  snprintf (dir, sizeof dir, "%s/snap", u->dir);
  rmdir (dir);
  snprintf (dir, sizeof dir, "%s/clone", u->dir);
  if (rmdir (dir) == 0 && rmdir (u->dir) == 0)
    rmdir (UBLK_DEV_DIR);       /* only if empty: other volumes may be there */
  pthread_mutex_unlock (&u->lock);
  ublk_ctrl_close (u->ctrl);
  pthread_cond_destroy (&u->wake);
  pthread_mutex_destroy (&u->lock);
  free (u);
}

/* ---- Hooks ------------------------------------------------------------- */

/* Tell fn of s's device, if it has one.  Takes ublk.lock. */
static void
daemon_ublk_name (struct daemon_ublk *u, const struct daemon_ublk_slot *s,
                  ctl_device_fn fn, void *arg)
{
  char link[PATH_MAX];
  bool have;

  if (!s)
    return;
  pthread_mutex_lock (&u->lock);
  have = s->dev != NULL;
  pthread_mutex_unlock (&u->lock);
  if (!have)
    return;
  daemon_ublk_link_path (u, s, link, sizeof link);
  fn (arg, "ublk", link);
}

/* A device for s's new snapshot or clone.  Takes ublk.lock. */
static void
daemon_ublk_add (struct daemon_ublk *u, struct daemon_ublk_slot *s)
{
  char err[512];

  if (!s)
    return;
  pthread_mutex_lock (&u->lock);
  if (s->kind == UBLK_KIND_SNAP)
    daemon_ublk_reap (u);
  if (s->id >= 0)               /* a dead device of a reused number */
    daemon_ublk_drop (u, s);
  if (daemon_ublk_serve (u, s, -1, false, err, sizeof err) < 0)
    daemon_ublk_log (u, FSSNAP_LOG_ERR, "no ublk device for %s: %s",
                     s->name, err);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}

/* -EBUSY with the reason when s's device may not go: mounted or held,
 * always; open, unless force.  Called with ublk.lock held.
 */
static int
daemon_ublk_refuse_busy (struct daemon_ublk *u,
                         const struct daemon_ublk_slot *s, bool force,
                         char *err, size_t errlen)
{
  char what[PATH_MAX + 64], link[PATH_MAX];
  int busy = ublk_dev_in_use (s->dev, what, sizeof what);

  daemon_ublk_link_path (u, s, link, sizeof link);
  if (busy == 1) {
    snprintf (err, errlen, "%s is %s (%s): unmount it first "
              "(--force does not unmount)", s->name, what, link);
    return -EBUSY;
  }
  if (busy == 2 && !force) {
    snprintf (err, errlen, "%s's device %s is %s: close it first "
              "or use --force", s->name, link, what);
    return -EBUSY;
  }
  return 0;
}

/* Whether s's snapshot or clone may be deleted.  Takes ublk.lock. */
static int
daemon_ublk_may_delete (struct daemon_ublk *u, struct daemon_ublk_slot *s,
                        bool force, char *err, size_t errlen)
{
  int r = 0;

  if (!s)
    return 0;
  pthread_mutex_lock (&u->lock);
  if (s->dev)
    r = daemon_ublk_refuse_busy (u, s, force, err, errlen);
  pthread_mutex_unlock (&u->lock);
  return r;
}

/* s's snapshot or clone is gone: so is its device.  Takes ublk.lock. */
static void
daemon_ublk_remove (struct daemon_ublk *u, struct daemon_ublk_slot *s)
{
  if (!s)
    return;
  pthread_mutex_lock (&u->lock);
  if (s->id >= 0)
    daemon_ublk_drop (u, s);
  if (s->kind == UBLK_KIND_SNAP)
    daemon_ublk_reap (u);
  daemon_ublk_save (u);
  pthread_mutex_unlock (&u->lock);
}

const char *
daemon_ublk_volume_device (struct daemon_ublk *u)
{
  return u ? u->volume_link : NULL;
}

void
daemon_ublk_devices (struct daemon_ublk *u, int target, ctl_device_fn fn,
                     void *arg)
{
  daemon_ublk_name (u, target == FSSNAP_VOLUME
                       ? daemon_ublk_slot (u, UBLK_KIND_VOLUME, 0)
                       : daemon_ublk_slot (u, UBLK_KIND_SNAP,
                                           (unsigned) target), fn, arg);
}

void
daemon_ublk_created (struct daemon_ublk *u, unsigned num)
{
  daemon_ublk_add (u, daemon_ublk_slot (u, UBLK_KIND_SNAP, num));
}

int
daemon_ublk_check_delete (struct daemon_ublk *u, unsigned num, bool force,
                          char *err, size_t errlen)
{
  return daemon_ublk_may_delete (u, daemon_ublk_slot (u, UBLK_KIND_SNAP, num),
                                 force, err, errlen);
}

void
daemon_ublk_deleted (struct daemon_ublk *u, unsigned num)
{
  daemon_ublk_remove (u, daemon_ublk_slot (u, UBLK_KIND_SNAP, num));
}

void
daemon_ublk_clone_devices (struct daemon_ublk *u, unsigned k,
                           ctl_device_fn fn, void *arg)
{
  daemon_ublk_name (u, daemon_ublk_slot (u, UBLK_KIND_CLONE, k), fn, arg);
}

void
daemon_ublk_clone_created (struct daemon_ublk *u, unsigned k)
{
  daemon_ublk_add (u, daemon_ublk_slot (u, UBLK_KIND_CLONE, k));
}

int
daemon_ublk_clone_check_delete (struct daemon_ublk *u, unsigned k,
                                bool force, char *err, size_t errlen)
{
  return daemon_ublk_may_delete (u, daemon_ublk_slot (u, UBLK_KIND_CLONE, k),
                                 force, err, errlen);
}

void
daemon_ublk_clone_deleted (struct daemon_ublk *u, unsigned k)
{
  daemon_ublk_remove (u, daemon_ublk_slot (u, UBLK_KIND_CLONE, k));
}
