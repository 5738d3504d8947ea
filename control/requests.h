/* SPDX-License-Identifier: MIT */
/*
 * The daemon's side of the control protocol: turns one request line into
 * engine calls and one reply object (see proto.h for the requests).  No
 * sockets here, so the fuzzer and the unit tests call it directly.
 */
#ifndef FSSNAP_CONTROL_REQUESTS_H
#define FSSNAP_CONTROL_REQUESTS_H

#include <json-c/json.h>
#include "libfssnap.h"

/* Called once for each frontend that serves a device: its name ("ublk",
 * "fuse", "nbd") and what a user opens (a block device, a device file, an
 * NBD URI).
 */
typedef void (*ctl_device_fn) (void *arg, const char *frontend,
                               const char *name);

/* The state of the current or last rollback (request "rollback-status"). */
struct ctl_rollback_status {
  char state[16];               /* none, running, done, stopped, failed */
  struct fssnap_rollback_progress progress;
  char error[256];              /* why it failed or stopped */
  int err;                      /* its positive errno; 0 if none */
};

struct ctl_context {
  struct fssnap_origin *origin;
  /* Name the devices serving target (FSSNAP_VOLUME or a snapshot number)
   * through fn, the one a user should open first: block devices before
   * device files before NBD.  Each frontend reports its own names; nothing
   * else builds them.  NULL: no devices.
   */
  void (*devices) (void *opaque, int target, ctl_device_fn fn, void *arg);
  /* The same for writable clone num (its own callback, so that frontends
   * without clones never see clone numbers).  NULL: no devices.
   */
  void (*clone_devices) (void *opaque, unsigned num, ctl_device_fn fn,
                         void *arg);
  void *devices_opaque;
  /* Writable clones (requests "clone", "delete-clone"; "clones" in list
   * and info).  NULL: refused.
   */
  struct fssnap_clones *clones;
  fssnap_log_fn log;            /* NULL: no log */
  void *log_opaque;
  fssnap_candidate_fn candidates;       /* NULL: every chunk */
  void *candidates_opaque;
  /* Before a create: 0, or a negative errno and a message in err to
   * refuse it.  NULL: no check.
   */
  int (*check_create) (void *opaque, const struct fssnap_create_opts *opts,
                       char *err, size_t errlen);
  void *check_opaque;
  /* Start a rollback to snapshot num (force: even while the volume is in
   * use): 0, or a negative errno and a message in err.  NULL: the
   * requests "rollback" and "rollback-status" are refused.
   */
  int (*rollback) (void *opaque, unsigned num, bool force, char *err,
                   size_t errlen);
  void (*rollback_status) (void *opaque, struct ctl_rollback_status *st);
  /* Whether diff a b compares contents where the maps say "may differ"
   * (the volume and the target of the last rollback).  NULL: never.
   */
  bool (*diff_exact) (void *opaque, int a, int b);
  void *rollback_opaque;
  /* Snapshot life-cycle hooks, for a frontend that keeps a device per
   * snapshot (NULL: none).  created: after a create, before the reply
   * names the devices.  check_delete: before a delete; a negative errno
   * and a message in err refuse it (force: the request's "force").
   * deleted: once the engine has deleted it.
   */
  void (*created) (void *opaque, unsigned num);
  int (*check_delete) (void *opaque, unsigned num, bool force, char *err,
                       size_t errlen);
  void (*deleted) (void *opaque, unsigned num);
  /* The same for writable clones (requests "clone", "delete-clone"). */
  void (*clone_created) (void *opaque, unsigned num);
  int (*clone_check_delete) (void *opaque, unsigned num, bool force,
                             char *err, size_t errlen);
  void (*clone_deleted) (void *opaque, unsigned num);
  void *hooks_opaque;
};

/* Handle one request line (without its newline).  Always returns a reply
 * object, which the caller puts.  Takes no lock of its own: the engine is
 * thread-safe, so several clients may call this at once.
 */
json_object *ctl_handle_line (const struct ctl_context *ctx,
                              const char *line, size_t len);

#endif /* FSSNAP_CONTROL_REQUESTS_H */
