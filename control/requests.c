/* SPDX-License-Identifier: MIT */
/*
 * Request handlers of the control protocol: parse a request line, check
 * every field's name and type, call the engine, encode the reply.  A request
 * that fails validation never reaches the engine, so a bad request changes
 * nothing.  Thin by design: all snapshot logic is in libfssnap.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/options.h"
#include "control/proto.h"
#include "control/requests.h"

#define CTL_ERRMSG 512
/* Merged extents in one diff reply; the client asks again from "end". */
#define CTL_DIFF_MAX_EXTENTS 65536

struct ctl_request {
  const char *name;
  const char *const *fields;    /* allowed besides "request", NULL-ended */
  json_object *(*handle) (const struct ctl_context *ctx, json_object *req);
};

static void
ctl_log (const struct ctl_context *ctx, enum fssnap_log_level level,
         const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  if (!ctx->log)
    return;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  ctx->log (ctx->log_opaque, level, msg);
}

static json_object *ctl_engine_error (int r, const char *errmsg,
                                      const char *what);
static json_object *ctl_check_no_clones (const struct ctl_context *ctx,
                                         unsigned num);
static json_object *ctl_clones_of (const struct ctl_context *ctx,
                                   unsigned base);

/* ---- Field access: each returns 1 if present, 0 if absent, -1 with an
 * error reply in *reply when the field has the wrong type or value. */

static int
ctl_get_string (json_object *req, const char *key, const char **out,
                json_object **reply)
{
  json_object *v;

  if (!json_object_object_get_ex (req, key, &v))
    return 0;
  if (!json_object_is_type (v, json_type_string)) {
    *reply = ctl_reply_error (EINVAL, "\"%s\" must be a string", key);
    return -1;
  }
  *out = json_object_get_string (v);
  if (strlen (*out) != (size_t) json_object_get_string_len (v)) {
    *reply = ctl_reply_error (EINVAL, "\"%s\" contains a NUL byte", key);
    return -1;
  }
  return 1;
}

static int
ctl_get_bool (json_object *req, const char *key, bool *out,
              json_object **reply)
{
  json_object *v;

  if (!json_object_object_get_ex (req, key, &v))
    return 0;
  if (!json_object_is_type (v, json_type_boolean)) {
    *reply = ctl_reply_error (EINVAL, "\"%s\" must be true or false", key);
    return -1;
  }
  *out = json_object_get_boolean (v);
  return 1;
}

static int
ctl_get_number (json_object *req, const char *key, unsigned *out,
                json_object **reply)
{
  json_object *v;
  int64_t n;

  if (!json_object_object_get_ex (req, key, &v))
    return 0;
  errno = 0;
  n = json_object_get_int64 (v);
  if (!json_object_is_type (v, json_type_int) || errno
      || n < 0 || n > INT_MAX) {
    *reply = ctl_reply_error (EINVAL,
                              "\"%s\" must be a snapshot number (0 or more)",
                              key);
    return -1;
  }
  *out = (unsigned) n;
  return 1;
}

/* A size field: a non-negative integer or a size string such as "64k",
 * parsed by the engine's -o parser as "key=VALUE" into *tmp.
 */
static int
ctl_get_size (json_object *req, const char *key,
              struct fssnap_create_opts *tmp, json_object **reply)
{
  char opt[128], *storage = NULL, errmsg[CTL_ERRMSG] = "";
  json_object *v;
  int r;

  if (!json_object_object_get_ex (req, key, &v))
    return 0;
  if (json_object_is_type (v, json_type_int)
      && json_object_get_int64 (v) >= 0)
    snprintf (opt, sizeof opt, "%s=%" PRIu64, key,
              json_object_get_uint64 (v));
  else if (json_object_is_type (v, json_type_string)
           && json_object_get_string_len (v) > 0
           && json_object_get_string_len (v) < 64
           && !strpbrk (json_object_get_string (v), ",="))
    snprintf (opt, sizeof opt, "%s=%s", key, json_object_get_string (v));
  else {
    *reply = ctl_reply_error (EINVAL, "\"%s\" must be a size in bytes (an "
                              "integer or a string such as \"64k\")", key);
    return -1;
  }
  memset (tmp, 0, sizeof *tmp);
  r = ctl_options_parse (opt, tmp, &storage, errmsg, sizeof errmsg);
  free (storage);
  if (r < 0) {
    *reply = ctl_engine_error (r, errmsg, "bad snapshot options");
    return -1;
  }
  return 1;
}

/* Reject fields that this request does not know. */
static json_object *
ctl_check_fields (json_object *req, const struct ctl_request *r)
{
  json_object_object_foreach (req, key, val) {
    const char *const *f;
    (void) val;
    if (strcmp (key, "request") == 0)
      continue;
    for (f = r->fields; *f && strcmp (*f, key) != 0; f++)
      ;
    if (!*f)
      return ctl_reply_error (EINVAL, "unknown field \"%s\" in a %s request",
                              key, r->name);
  }
  return NULL;
}

/* ---- Encoding engine results ------------------------------------------ */

static void
ctl_add_u64 (json_object *obj, const char *key, uint64_t v)
{
  json_object_object_add (obj, key, json_object_new_uint64 (v));
}

static void
ctl_add_str (json_object *obj, const char *key, const char *v)
{
  json_object_object_add (obj, key, json_object_new_string (v));
}

static void
ctl_add_device (void *arg, const char *frontend, const char *name)
{
  json_object *obj = arg, *devices;

  if (name[0] == '/' && !json_object_object_get_ex (obj, "device", NULL))
    ctl_add_str (obj, "device", name);
  json_object_object_get_ex (obj, "devices", &devices);
  ctl_add_str (devices, frontend, name);
}

/* "devices": every frontend's names for target, by frontend; "device":
 * the first that is a path (a block device or a device file), or else the
 * NBD export name ("snap/N", "volume"), so that its last element is always
 * the snapshot number.
 */
static void
ctl_add_devices (const struct ctl_context *ctx, json_object *obj, int target)
{
  char export[32];

  json_object_object_add (obj, "devices", json_object_new_object ());
  if (ctx->devices)
    ctx->devices (ctx->devices_opaque, target, ctl_add_device, obj);
  if (json_object_object_get_ex (obj, "device", NULL))
    return;
  if (target == FSSNAP_VOLUME)
    snprintf (export, sizeof export, "volume");
  else
    snprintf (export, sizeof export, "snap/%d", target);
  ctl_add_str (obj, "device", export);
}

static json_object *
ctl_short_info_json (const struct ctl_context *ctx,
                     const struct fssnap_snapshot_info *info)
{
  json_object *obj = json_object_new_object ();

  ctl_add_u64 (obj, "number", info->number);
  ctl_add_str (obj, "uuid", info->uuid);
  ctl_add_devices (ctx, obj, (int) info->number);
  ctl_add_str (obj, "state", fssnap_state_name (info->state));
  ctl_add_str (obj, "reason", info->reason);
  json_object_object_add (obj, "create_time",
                          json_object_new_int64 (info->create_time));
  ctl_add_str (obj, "group", info->group);
  json_object_object_add (obj, "clones",
                          ctl_clones_of (ctx, info->number));
  return obj;
}

static json_object *
ctl_info_json (const struct ctl_context *ctx,
               const struct fssnap_snapshot_info *info)
{
  json_object *obj = ctl_short_info_json (ctx, info);

  ctl_add_str (obj, "mountpoint", info->mountpoint);
  ctl_add_str (obj, "backing_store", info->backing_path);
  ctl_add_u64 (obj, "backing_store_size", info->backing_bytes);
  ctl_add_u64 (obj, "backing_files", info->backing_files);
  ctl_add_u64 (obj, "maxsize", info->maxsize);
  ctl_add_u64 (obj, "maxfilesize", info->max_backfile_size);
  ctl_add_u64 (obj, "chunksize", info->chunksize);
  ctl_add_u64 (obj, "chunks", info->chunks);
  ctl_add_u64 (obj, "candidate_chunks", info->candidate_chunks);
  ctl_add_u64 (obj, "preserved_chunks", info->preserved_chunks);
  ctl_add_u64 (obj, "owned_chunks", info->owned_chunks);
  ctl_add_u64 (obj, "open_count", info->open_count);
  json_object_object_add (obj, "transient",
                          json_object_new_boolean (info->transient));
  json_object_object_add (obj, "unlinked",
                          json_object_new_boolean (info->unlinked));
  ctl_add_u64 (obj, "seq", info->seq);
  return obj;
}

static json_object *
ctl_engine_error (int r, const char *errmsg, const char *what)
{
  return ctl_reply_error (-r, "%s: %s", what,
                          errmsg && *errmsg ? errmsg : strerror (-r));
}

/* ---- create ------------------------------------------------------------ */

static const char *const ctl_create_fields[] = {
  "options", "backing-store", "maxsize", "chunksize", "maxfilesize",
  "unlink", "transient", "mount", "group", NULL
};

/* A group UUID: 36 characters of hex digits and dashes (8-4-4-4-12). */
static bool
ctl_group_valid (const char *g)
{
  size_t i;

  if (strlen (g) != FSSNAP_UUID_STRLEN - 1)
    return false;
  for (i = 0; g[i]; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? g[i] != '-' : !strchr ("0123456789abcdefABCDEF", g[i]))
      return false;
  }
  return true;
}

/* Fill opts from the request; fields override "options".  *storage is
 * freed by the caller.
 */
static json_object *
ctl_create_opts (json_object *req, struct fssnap_create_opts *opts,
                 char **storage)
{
  struct fssnap_create_opts tmp;
  const char *options = "", *str;
  char errmsg[CTL_ERRMSG] = "";
  json_object *reply = NULL;
  bool flag;
  int r;

  if (ctl_get_string (req, "options", &options, &reply) < 0)
    return reply;
  r = ctl_options_parse (options, opts, storage, errmsg, sizeof errmsg);
  if (r < 0)
    return ctl_engine_error (r, errmsg, "bad snapshot options");
  if ((r = ctl_get_size (req, "maxsize", &tmp, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->maxsize = tmp.maxsize;
  if ((r = ctl_get_size (req, "chunksize", &tmp, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->chunksize = tmp.chunksize;
  if ((r = ctl_get_size (req, "maxfilesize", &tmp, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->max_backfile_size = tmp.max_backfile_size;
  if ((r = ctl_get_string (req, "backing-store", &str, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->backing_store = str;
  if ((r = ctl_get_string (req, "mount", &str, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->mountpoint = str;
  if ((r = ctl_get_string (req, "group", &str, &reply)) < 0)
    return reply;
  if (r > 0 && !ctl_group_valid (str))
    return ctl_reply_error (EINVAL, "\"group\" must be a UUID "
                            "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
  if (r > 0)
    opts->group = str;
  if ((r = ctl_get_bool (req, "unlink", &flag, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->unlink = flag;
  if ((r = ctl_get_bool (req, "transient", &flag, &reply)) < 0)
    return reply;
  if (r > 0)
    opts->transient = flag;
  return NULL;
}

static json_object *
ctl_create (const struct ctl_context *ctx, json_object *req)
{
  struct fssnap_create_opts opts;
  struct fssnap_snapshot_info info;
  char *storage = NULL, errmsg[CTL_ERRMSG] = "";
  json_object *reply;
  unsigned num;
  int r;

  memset (&opts, 0, sizeof opts);
  reply = ctl_create_opts (req, &opts, &storage);
  if (reply) {
    free (storage);
    return reply;
  }
  opts.candidates = ctx->candidates;
  opts.candidates_opaque = ctx->candidates_opaque;
  r = 0;
  if (ctx->check_create)
    r = ctx->check_create (ctx->check_opaque, &opts, errmsg, sizeof errmsg);
  if (r == 0)
    r = fssnap_snapshot_create (ctx->origin, &opts, &num, errmsg,
                                sizeof errmsg);
  free (storage);
  if (r < 0) {
    ctl_log (ctx, FSSNAP_LOG_INFO, "control: create refused: %s",
             *errmsg ? errmsg : strerror (-r));
    return ctl_engine_error (r, errmsg, "cannot create snapshot");
  }
  if (ctx->created)
    ctx->created (ctx->hooks_opaque, num);
  r = fssnap_snapshot_info (ctx->origin, num, &info);
  if (r < 0)
    return ctl_engine_error (r, NULL, "snapshot created but vanished");
  reply = ctl_reply_ok ();
  json_object_object_add (reply, "snapshot", ctl_info_json (ctx, &info));
  return reply;
}

/* ---- delete ------------------------------------------------------------ */

static const char *const ctl_delete_fields[] = { "number", "force", NULL };

static json_object *
ctl_delete (const struct ctl_context *ctx, json_object *req)
{
  json_object *reply = NULL;
  struct fssnap_snapshot_info info;
  char errmsg[CTL_ERRMSG] = "";
  bool force = false;
  unsigned num;
  int r;

  r = ctl_get_number (req, "number", &num, &reply);
  if (r < 0)
    return reply;
  if (r == 0)
    return ctl_reply_error (EINVAL, "delete needs \"number\"");
  if ((reply = ctl_check_no_clones (ctx, num)))
    return reply;
  if (ctx->rollback_status) {
    struct ctl_rollback_status st;
    ctx->rollback_status (ctx->rollback_opaque, &st);
    if (strcmp (st.state, "running") == 0 && st.progress.number == num)
      return ctl_reply_error (EBUSY, "the volume is being rolled back to "
                              "snapshot %u", num);
  }
  if (ctl_get_bool (req, "force", &force, &reply) < 0)
    return reply;
  if (ctx->check_delete) {
    r = ctx->check_delete (ctx->hooks_opaque, num, force, errmsg,
                           sizeof errmsg);
    if (r < 0)
      return ctl_engine_error (r, errmsg, "cannot delete snapshot");
  }
  r = fssnap_snapshot_delete (ctx->origin, num);
  if (r == -ENOENT)
    return ctl_reply_error (ENOENT, "no snapshot %u", num);
  if (r == -EBUSY && fssnap_snapshot_info (ctx->origin, num, &info) == 0
      && info.state == FSSNAP_STATE_OFFLINE)
    return ctl_reply_error (EBUSY, "snapshot %u is offline (%s): it can be "
                            "deleted once a restart can read its files", num,
                            info.reason);
  if (r < 0)
    return ctl_engine_error (r, NULL, "cannot delete snapshot");
  if (ctx->deleted)
    ctx->deleted (ctx->hooks_opaque, num);
  reply = ctl_reply_ok ();
  ctl_add_u64 (reply, "number", num);
  return reply;
}

/* ---- clones ------------------------------------------------------------ */

static const char *const ctl_clone_fields[] = { "number", NULL };
static const char *const ctl_delete_clone_fields[] = { "number", "force",
                                                       NULL };

static json_object *
ctl_clone_json (const struct ctl_context *ctx,
                const struct fssnap_clone_info *info)
{
  json_object *obj = json_object_new_object ();
  char export[32];

  ctl_add_u64 (obj, "number", info->number);
  ctl_add_u64 (obj, "base", info->base);
  ctl_add_str (obj, "base_uuid", info->base_uuid);
  json_object_object_add (obj, "devices", json_object_new_object ());
  if (ctx->clone_devices)
    ctx->clone_devices (ctx->devices_opaque, info->number,
                        ctl_add_device, obj);
  if (!json_object_object_get_ex (obj, "device", NULL)) {
    snprintf (export, sizeof export, "clone/%u", info->number);
    ctl_add_str (obj, "device", export);
  }
  ctl_add_u64 (obj, "size", info->size);
  ctl_add_u64 (obj, "chunksize", info->chunksize);
  ctl_add_u64 (obj, "written_chunks", info->written_chunks);
  json_object_object_add (obj, "create_time",
                          json_object_new_int64 (info->create_time));
  ctl_add_str (obj, "overlay", info->overlay_path);
  return obj;
}

/* The info object of every clone of snapshot base (every clone when base
 * is FSSNAP_MAX_SNAPSHOTS), ascending.
 */
static json_object *
ctl_clones_of (const struct ctl_context *ctx, unsigned base)
{
  unsigned nums[FSSNAP_MAX_CLONES];
  json_object *arr = json_object_new_array ();
  int n = ctx->clones ? fssnap_clones_list (ctx->clones, nums,
                                            FSSNAP_MAX_CLONES) : 0;

  for (int i = 0; i < n && i < FSSNAP_MAX_CLONES; i++) {
    struct fssnap_clone_info info;
    if (fssnap_clones_info (ctx->clones, nums[i], &info) == 0
        && (base == FSSNAP_MAX_SNAPSHOTS || info.base == base))
      json_object_array_add (arr, ctl_clone_json (ctx, &info));
  }
  return arr;
}

static json_object *
ctl_all_clones (const struct ctl_context *ctx)
{
  return ctl_clones_of (ctx, FSSNAP_MAX_SNAPSHOTS);
}

static json_object *
ctl_clone (const struct ctl_context *ctx, json_object *req)
{
  struct fssnap_clone_info info;
  char errmsg[CTL_ERRMSG] = "";
  json_object *reply = NULL;
  unsigned num, k;
  int r;

  if (!ctx->clones)
    return ctl_reply_error (EOPNOTSUPP, "this fssnapd has no clones");
  if ((r = ctl_get_number (req, "number", &num, &reply)) < 0)
    return reply;
  if (r == 0)
    return ctl_reply_error (EINVAL, "clone needs \"number\"");
  r = fssnap_clones_create (ctx->clones, num, &k, errmsg, sizeof errmsg);
  if (r < 0)
    return ctl_engine_error (r, errmsg, "cannot clone");
  if (ctx->clone_created)
    ctx->clone_created (ctx->hooks_opaque, k);
  if (fssnap_clones_info (ctx->clones, k, &info) < 0)
    return ctl_reply_error (ENOENT, "clone %u vanished", k);
  ctl_log (ctx, FSSNAP_LOG_INFO, "control: clone %u of snapshot %u created",
           k, num);
  reply = ctl_reply_ok ();
  json_object_object_add (reply, "clone", ctl_clone_json (ctx, &info));
  return reply;
}

static json_object *
ctl_delete_clone (const struct ctl_context *ctx, json_object *req)
{
  json_object *reply = NULL;
  char errmsg[CTL_ERRMSG] = "";
  bool force = false;
  unsigned num;
  int r;

  if (!ctx->clones)
    return ctl_reply_error (EOPNOTSUPP, "this fssnapd has no clones");
  if ((r = ctl_get_number (req, "number", &num, &reply)) < 0)
    return reply;
  if (r == 0)
    return ctl_reply_error (EINVAL, "delete-clone needs \"number\"");
  if (ctl_get_bool (req, "force", &force, &reply) < 0)
    return reply;
  if (ctx->clone_check_delete
      && (r = ctx->clone_check_delete (ctx->hooks_opaque, num, force, errmsg,
                                       sizeof errmsg)) < 0)
    return ctl_engine_error (r, errmsg, "cannot delete the clone");
  r = fssnap_clones_delete (ctx->clones, num);
  if (r == -ENOENT)
    return ctl_reply_error (ENOENT, "no clone %u", num);
  if (r < 0)
    return ctl_engine_error (r, NULL, "cannot delete the clone");
  if (ctx->clone_deleted)
    ctx->clone_deleted (ctx->hooks_opaque, num);
  ctl_log (ctx, FSSNAP_LOG_INFO, "control: clone %u deleted", num);
  reply = ctl_reply_ok ();
  ctl_add_u64 (reply, "number", num);
  return reply;
}

/* 0, or an error reply when snapshot num is the base of a clone. */
static json_object *
ctl_check_no_clones (const struct ctl_context *ctx, unsigned num)
{
  unsigned nums[FSSNAP_MAX_CLONES];
  int n = ctx->clones ? fssnap_clones_list (ctx->clones, nums,
                                            FSSNAP_MAX_CLONES) : 0;

  for (int i = 0; i < n && i < FSSNAP_MAX_CLONES; i++) {
    struct fssnap_clone_info info;
    if (fssnap_clones_info (ctx->clones, nums[i], &info) == 0
        && info.base == num)
      return ctl_reply_error (EBUSY, "snapshot %u has clone %u: delete it "
                              "first (fssnap delete-clone %u)", num,
                              info.number, info.number);
  }
  return NULL;
}

/* ---- list and info ---------------------------------------------------- */

static const char *const ctl_list_fields[] = { NULL };
static const char *const ctl_info_fields[] = { "number", NULL };

/* The numbers in use, ascending, in a malloc'd array; -errno on failure. */
static int
ctl_numbers (const struct ctl_context *ctx, unsigned **numsp)
{
  size_t max = FSSNAP_MAX_SNAPSHOTS;

  for (;;) {
    unsigned *nums = malloc (max * sizeof *nums);
    int n;

    if (!nums)
      return -ENOMEM;
    n = fssnap_snapshot_list (ctx->origin, nums, max);
    if (n >= 0 && (size_t) n <= max) {
      *numsp = nums;
      return n;
    }
    free (nums);
    if (n < 0)
      return n;
    max = n;
  }
}

/* The live volume: its size and devices. */
static json_object *
ctl_volume_json (const struct ctl_context *ctx)
{
  json_object *obj = json_object_new_object ();

  ctl_add_u64 (obj, "size", fssnap_origin_size (ctx->origin));
  ctl_add_devices (ctx, obj, FSSNAP_VOLUME);
  return obj;
}

/* Every snapshot as an array of (short or full) info objects, and the
 * volume.
 */
static json_object *
ctl_all_snapshots (const struct ctl_context *ctx, bool full)
{
  json_object *reply, *arr;
  unsigned *nums;
  int n, i;

  n = ctl_numbers (ctx, &nums);
  if (n < 0)
    return ctl_engine_error (n, NULL, "cannot list snapshots");
  arr = json_object_new_array ();
  for (i = 0; i < n; i++) {
    struct fssnap_snapshot_info info;
    if (fssnap_snapshot_info (ctx->origin, nums[i], &info) < 0)
      continue;                 /* deleted meanwhile */
    json_object_array_add (arr, full ? ctl_info_json (ctx, &info)
                                     : ctl_short_info_json (ctx, &info));
  }
  free (nums);
  reply = ctl_reply_ok ();
  json_object_object_add (reply, "snapshots", arr);
  json_object_object_add (reply, "volume", ctl_volume_json (ctx));
  json_object_object_add (reply, "clones", ctl_all_clones (ctx));
  return reply;
}

static json_object *
ctl_list (const struct ctl_context *ctx, json_object *req)
{
  (void) req;
  return ctl_all_snapshots (ctx, false);
}

static json_object *
ctl_info (const struct ctl_context *ctx, json_object *req)
{
  struct fssnap_snapshot_info info;
  json_object *reply = NULL, *arr;
  unsigned num;
  int r;

  r = ctl_get_number (req, "number", &num, &reply);
  if (r < 0)
    return reply;
  if (r == 0)
    return ctl_all_snapshots (ctx, true);
  r = fssnap_snapshot_info (ctx->origin, num, &info);
  if (r == -ENOENT)
    return ctl_reply_error (ENOENT, "no snapshot %u", num);
  if (r < 0)
    return ctl_engine_error (r, NULL, "cannot read snapshot info");
  arr = json_object_new_array ();
  json_object_array_add (arr, ctl_info_json (ctx, &info));
  reply = ctl_reply_ok ();
  json_object_object_add (reply, "snapshots", arr);
  return reply;
}

/* ---- stats ------------------------------------------------------------- */

static const char *const ctl_stats_fields[] = { NULL };

static json_object *
ctl_stats (const struct ctl_context *ctx, json_object *req)
{
  struct fssnap_stats st;
  json_object *reply = ctl_reply_ok (), *obj = json_object_new_object ();

  (void) req;
  fssnap_origin_stats (ctx->origin, &st);
  ctl_add_u64 (obj, "size", st.size);
  ctl_add_u64 (obj, "chunksize", st.chunksize);
  ctl_add_u64 (obj, "snapshots", st.snapshots);
  ctl_add_u64 (obj, "retained", st.retained);
  json_object_object_add (obj, "highest_number",
                          json_object_new_int (st.highest_number));
  ctl_add_u64 (obj, "chunks_copied", st.chunks_copied);
  ctl_add_u64 (obj, "bytes_copied", st.bytes_copied);
  ctl_add_u64 (obj, "throttle_waits", st.throttle_waits);
  ctl_add_u64 (obj, "mem_chunks", st.mem_chunks);
  ctl_add_u64 (obj, "mem_chunks_peak", st.mem_chunks_peak);
  ctl_add_u64 (obj, "max_mem_chunks", st.max_mem_chunks);
  ctl_add_u64 (obj, "store_errors", st.store_errors);
  ctl_add_u64 (obj, "origin_opened_elsewhere", st.opened_elsewhere);
  ctl_add_u64 (obj, "staged_bytes", st.staged_bytes);
  ctl_add_u64 (obj, "staged_bytes_peak", st.staged_bytes_peak);
  ctl_add_u64 (obj, "max_staged_bytes", st.max_staged_bytes);
  ctl_add_u64 (obj, "staged_writes", st.staged_writes);
  ctl_add_u64 (obj, "staging_waits", st.staging_waits);
  json_object_object_add (reply, "stats", obj);
  return reply;
}

/* ---- rollback ---------------------------------------------------------- */

static const char *const ctl_rollback_fields[] = { "number", "force", NULL };
static const char *const ctl_rollback_status_fields[] = { NULL };

static json_object *
ctl_rollback_json (const struct ctl_rollback_status *st)
{
  json_object *obj = json_object_new_object ();

  ctl_add_str (obj, "state", st->state);
  if (strcmp (st->state, "none") != 0) {
    ctl_add_u64 (obj, "number", st->progress.number);
    ctl_add_str (obj, "uuid", st->progress.uuid);
  }
  ctl_add_u64 (obj, "chunks", st->progress.chunks);
  ctl_add_u64 (obj, "examined", st->progress.examined);
  ctl_add_u64 (obj, "moved", st->progress.moved);
  ctl_add_str (obj, "error", st->error);
  if (st->err)
    ctl_add_str (obj, "errno", ctl_errno_name (st->err));
  return obj;
}

static json_object *
ctl_rollback_reply (const struct ctl_context *ctx)
{
  struct ctl_rollback_status st;
  json_object *reply = ctl_reply_ok ();

  ctx->rollback_status (ctx->rollback_opaque, &st);
  json_object_object_add (reply, "rollback", ctl_rollback_json (&st));
  return reply;
}

static json_object *
ctl_rollback (const struct ctl_context *ctx, json_object *req)
{
  char errmsg[CTL_ERRMSG] = "";
  json_object *reply = NULL;
  bool force = false;
  unsigned num;
  int r;

  if (!ctx->rollback)
    return ctl_reply_error (EOPNOTSUPP, "this fssnapd does not roll back");
  if ((r = ctl_get_number (req, "number", &num, &reply)) < 0)
    return reply;
  if (r == 0)
    return ctl_reply_error (EINVAL, "rollback needs \"number\"");
  if (ctl_get_bool (req, "force", &force, &reply) < 0)
    return reply;
  r = ctx->rollback (ctx->rollback_opaque, num, force, errmsg,
                     sizeof errmsg);
  if (r < 0) {
    ctl_log (ctx, FSSNAP_LOG_INFO, "control: rollback refused: %s",
             *errmsg ? errmsg : strerror (-r));
    return ctl_engine_error (r, errmsg, "cannot roll back");
  }
  return ctl_rollback_reply (ctx);
}

static json_object *
ctl_rollback_status (const struct ctl_context *ctx, json_object *req)
{
  (void) req;
  if (!ctx->rollback_status)
    return ctl_reply_error (EOPNOTSUPP, "this fssnapd does not roll back");
  return ctl_rollback_reply (ctx);
}

/* ---- diff -------------------------------------------------------------- */

static const char *const ctl_diff_fields[] = { "a", "b", "offset", "length",
                                               "exact", NULL };

/* One side of a diff: a snapshot number or "volume" (FSSNAP_VOLUME). */
static int
ctl_get_side (json_object *req, const char *key, int *out,
              json_object **reply)
{
  json_object *v;
  unsigned num;
  int r;

  if (!json_object_object_get_ex (req, key, &v)) {
    *reply = ctl_reply_error (EINVAL, "diff needs \"%s\"", key);
    return -1;
  }
  if (json_object_is_type (v, json_type_string)
      && strcmp (json_object_get_string (v), "volume") == 0) {
    *out = FSSNAP_VOLUME;
    return 1;
  }
  r = ctl_get_number (req, key, &num, reply);
  if (r < 0) {
    json_object_put (*reply);
    *reply = ctl_reply_error (EINVAL, "\"%s\" must be a snapshot number or "
                              "\"volume\"", key);
    return -1;
  }
  *out = (int) num;
  return 1;
}

/* An optional byte offset or length: a non-negative integer. */
static int
ctl_get_u64 (json_object *req, const char *key, uint64_t *out,
             json_object **reply)
{
  json_object *v;

  if (!json_object_object_get_ex (req, key, &v))
    return 0;
  if (!json_object_is_type (v, json_type_int)
      || json_object_get_int64 (v) < 0) {
    *reply = ctl_reply_error (EINVAL, "\"%s\" must be a byte count (0 or "
                              "more)", key);
    return -1;
  }
  *out = json_object_get_uint64 (v);
  return 1;
}

static json_object *
ctl_side_json (int side)
{
  if (side == FSSNAP_VOLUME)
    return json_object_new_string ("volume");
  return json_object_new_int (side);
}

/* "snapshot N" or "the volume", in buf[32]. */
static const char *
ctl_side_name (int side, char *buf)
{
  if (side == FSSNAP_VOLUME)
    return "the volume";
  snprintf (buf, 32, "snapshot %d", side);
  return buf;
}

/* The creation sequence of one side (0 for the volume), so that a number
 * deleted and reused during the diff is noticed.  Fills uuid too.
 */
static int
ctl_side_identity (const struct ctl_context *ctx, int side, uint64_t *seq,
                   char *uuid)
{
  struct fssnap_snapshot_info info;
  int r;

  *seq = 0;
  *uuid = '\0';
  if (side == FSSNAP_VOLUME)
    return 0;
  r = fssnap_snapshot_info (ctx->origin, (unsigned) side, &info);
  if (r < 0)
    return r;
  *seq = info.seq;
  memcpy (uuid, info.uuid, FSSNAP_UUID_STRLEN);
  return 0;
}

/* Extents that may differ, merged, as they come from the engine. */
struct ctl_diff {
  json_object *extents;
  uint64_t start, len;          /* the pending merged extent */
  uint64_t bytes;               /* changed bytes in this reply */
  uint64_t end;                 /* described up to here */
  size_t count;
};

static void
ctl_diff_flush (struct ctl_diff *d)
{
  json_object *e;

  if (d->len == 0)
    return;
  e = json_object_new_object ();
  ctl_add_u64 (e, "offset", d->start);
  ctl_add_u64 (e, "length", d->len);
  json_object_array_add (d->extents, e);
  d->bytes += d->len;
  d->count++;
  d->len = 0;
}

/* fssnap_extent_fn: merge adjacent changed extents; stop before starting
 * one more than CTL_DIFF_MAX_EXTENTS.
 */
static int
ctl_diff_extent (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct ctl_diff *d = opaque;

  if (!hole && d->len > 0 && d->start + d->len == off)
    d->len += len;
  else if (!hole) {
    ctl_diff_flush (d);
    if (d->count == CTL_DIFF_MAX_EXTENTS)
      return 1;
    d->start = off;
    d->len = len;
  }
  d->end = off + len;
  return 0;
}

/* Run the comparison of [off, off+len): an ok reply with "extents",
 * "bytes" and "end", or an error reply.
 */
static json_object *
ctl_diff_run (const struct ctl_context *ctx, int a, int b, uint64_t off,
              uint64_t len, bool exact)
{
  struct ctl_diff d = { .extents = json_object_new_array (), .end = off };
  char errmsg[CTL_ERRMSG] = "", name_a[32], name_b[32];
  json_object *reply;
  int r;

  r = (exact ? fssnap_changes_exact : fssnap_changes)
        (ctx->origin, a, b, off, len, ctl_diff_extent, &d, errmsg,
         sizeof errmsg);
  if (r < 0) {
    json_object_put (d.extents);
    if (r == -ENOENT)
      return ctl_reply_error (ENOENT, "a snapshot was deleted during the "
                              "comparison");
    if (r == -ESTALE)
      return ctl_reply_error (ESTALE, "cannot compare %s with %s: %s; take "
                              "a full copy", ctl_side_name (a, name_a),
                              ctl_side_name (b, name_b),
                              *errmsg ? errmsg : "the change maps cannot "
                              "be trusted for this pair");
    return ctl_engine_error (r, errmsg, "cannot compare");
  }
  ctl_diff_flush (&d);
  if (r == 0)
    d.end = off + len;
  reply = ctl_reply_ok ();
  json_object_object_add (reply, "extents", d.extents);
  ctl_add_u64 (reply, "bytes", d.bytes);
  ctl_add_u64 (reply, "end", d.end);
  return reply;
}

/* Both sides exist: fills their sequences and UUIDs, or an error reply. */
static json_object *
ctl_diff_sides (const struct ctl_context *ctx, int a, int b, uint64_t *seq_a,
                uint64_t *seq_b, char *uuid_a, char *uuid_b)
{
  int r = ctl_side_identity (ctx, a, seq_a, uuid_a), side = a;

  if (r == 0) {
    r = ctl_side_identity (ctx, b, seq_b, uuid_b);
    side = b;
  }
  if (r == -ENOENT)
    return ctl_reply_error (ENOENT, "no snapshot %d", side);
  if (r < 0)
    return ctl_engine_error (r, NULL, "cannot compare");
  return NULL;
}

static json_object *
ctl_diff (const struct ctl_context *ctx, json_object *req)
{
  uint64_t size = fssnap_origin_size (ctx->origin), off = 0, len;
  uint64_t seq_a, seq_b, seq2_a, seq2_b;
  char uuid_a[FSSNAP_UUID_STRLEN], uuid_b[FSSNAP_UUID_STRLEN];
  char uuid2[FSSNAP_UUID_STRLEN];
  json_object *reply = NULL;
  bool exact = false;
  int a, b;

  if (ctl_get_side (req, "a", &a, &reply) < 0
      || ctl_get_side (req, "b", &b, &reply) < 0
      || ctl_get_u64 (req, "offset", &off, &reply) < 0
      || ctl_get_bool (req, "exact", &exact, &reply) < 0)
    return reply;
  if (ctx->diff_exact && ctx->diff_exact (ctx->rollback_opaque, a, b))
    exact = true;
  len = off < size ? size - off : 0;
  if (ctl_get_u64 (req, "length", &len, &reply) < 0)
    return reply;
  if (off > size || len > size - off)
    return ctl_reply_error (EINVAL, "range %" PRIu64 "+%" PRIu64 " is "
                            "beyond the end of the volume (%" PRIu64
                            " bytes)", off, len, size);
  reply = ctl_diff_sides (ctx, a, b, &seq_a, &seq_b, uuid_a, uuid_b);
  if (reply)
    return reply;
  reply = ctl_diff_run (ctx, a, b, off, len, exact);
  if (!json_object_get_boolean (json_object_object_get (reply, "ok")))
    return reply;
  /* The same creation sequences after as before: a number deleted and
   * reused meanwhile would have a new one, as sequences never repeat.
   */
  if (ctl_side_identity (ctx, a, &seq2_a, uuid2) < 0 || seq2_a != seq_a
      || ctl_side_identity (ctx, b, &seq2_b, uuid2) < 0 || seq2_b != seq_b) {
    json_object_put (reply);
    return ctl_reply_error (ENOENT, "a snapshot was deleted during the "
                            "comparison");
  }
  json_object_object_add (reply, "a", ctl_side_json (a));
  json_object_object_add (reply, "b", ctl_side_json (b));
  if (*uuid_a)
    ctl_add_str (reply, "a_uuid", uuid_a);
  if (*uuid_b)
    ctl_add_str (reply, "b_uuid", uuid_b);
  ctl_add_u64 (reply, "size", size);
  ctl_add_u64 (reply, "chunksize", fssnap_origin_chunksize (ctx->origin));
  json_object_object_add (reply, "exact", json_object_new_boolean (exact));
  return reply;
}

/* ---- Dispatch ---------------------------------------------------------- */

static const struct ctl_request ctl_requests[] = {
  { "create", ctl_create_fields, ctl_create },
  { "delete", ctl_delete_fields, ctl_delete },
  { "list", ctl_list_fields, ctl_list },
  { "info", ctl_info_fields, ctl_info },
  { "stats", ctl_stats_fields, ctl_stats },
  { "diff", ctl_diff_fields, ctl_diff },
  { "rollback", ctl_rollback_fields, ctl_rollback },
  { "clone", ctl_clone_fields, ctl_clone },
  { "delete-clone", ctl_delete_clone_fields, ctl_delete_clone },
  { "rollback-status", ctl_rollback_status_fields, ctl_rollback_status },
};

static json_object *
ctl_dispatch (const struct ctl_context *ctx, json_object *req)
{
  json_object *reply = NULL;
  const char *name;
  size_t i;

  if (ctl_get_string (req, "request", &name, &reply) < 0)
    return reply;
  if (!json_object_object_get_ex (req, "request", NULL))
    return ctl_reply_error (EINVAL, "missing \"request\"");
  for (i = 0; i < sizeof ctl_requests / sizeof ctl_requests[0]; i++) {
    const struct ctl_request *r = &ctl_requests[i];
    if (strcmp (r->name, name) != 0)
      continue;
    reply = ctl_check_fields (req, r);
    return reply ? reply : r->handle (ctx, req);
  }
  return ctl_reply_error (EOPNOTSUPP, "unknown request \"%.64s\"", name);
}

json_object *
ctl_handle_line (const struct ctl_context *ctx, const char *line, size_t len)
{
  char err[256];
  json_object *req = ctl_parse_line (line, len, err, sizeof err);
  json_object *reply;

  if (!req)
    return ctl_reply_error (EINVAL, "%s", err);
  reply = ctl_dispatch (ctx, req);
  json_object_put (req);
  return reply;
}
