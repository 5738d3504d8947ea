/* SPDX-License-Identifier: MIT */
/*
 * Which file system is on the origin (libblkid), and the candidate
 * callback that dispatches: the GETFSMAP map of a frozen mount point
 * (fsmap.c), libext2fs for ext2/3/4 (ext4.c).  Unknown means every chunk
 * is a candidate: a snapshot must never lose data it could not classify.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <blkid/blkid.h>

#include "common/log.h"
#include "fs/fs.h"

/* Probe on fd if it is not -1 (libblkid reads it, opening nothing), else
 * on path.
 */
static int
fs_detect_on (const char *path, int fd, char *type, size_t len)
{
  blkid_probe pr;
  const char *value;
  int rc;

  if (len > 0)
    type[0] = '\0';
  if (fd < 0)
    pr = blkid_new_probe_from_filename (path);
  else if ((pr = blkid_new_probe ()) != NULL
           && blkid_probe_set_device (pr, fd, 0, 0) != 0) {
    blkid_free_probe (pr);
    return -EIO;
  }
  if (pr == NULL)
    return errno ? -errno : -EIO;
  blkid_probe_enable_superblocks (pr, 1);
  blkid_probe_set_superblocks_flags (pr, BLKID_SUBLKS_TYPE);
  rc = blkid_do_safeprobe (pr);
  /* 1: nothing found; -2: several signatures, which we treat as unknown. */
  if (rc == 0 && blkid_probe_lookup_value (pr, "TYPE", &value, NULL) == 0)
    snprintf (type, len, "%s", value);
  blkid_free_probe (pr);
  return rc == -1 ? -EIO : 0;
}

int
fs_detect (const char *path, char *type, size_t len)
{
  return fs_detect_on (path, -1, type, len);
}

int
fs_type_is_ext (const char *type)
{
  return strcmp (type, "ext2") == 0 || strcmp (type, "ext3") == 0 ||
    strcmp (type, "ext4") == 0;
}

static void
fs_log (struct fs_candidates_ctx *ctx, enum fssnap_log_level level,
        const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static void
fs_log (struct fs_candidates_ctx *ctx, enum fssnap_log_level level,
        const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vsend (ctx->log, ctx->log_opaque, "fssnap", level, fmt, ap);
  va_end (ap);
}

/* The map of the frozen mount point, if one was given and it can be
 * used; 0 when it was.
 */
static int
fs_candidates_fsmap (struct fs_candidates_ctx *ctx,
                     struct fssnap_candidates *cands)
{
  const char *mnt = fssnap_candidates_mountpoint (cands);
  char errmsg[512];
  uint64_t free_bytes;

  if (mnt == NULL)
    return -ENOENT;
  if (fsmap_candidates (mnt, ctx->volume_files, cands, &free_bytes, errmsg,
                        sizeof errmsg) < 0) {
    fs_log (ctx, FSSNAP_LOG_INFO, "%s: allocation map not used (%s)", mnt,
            errmsg);
    return -1;
  }
  ctx->fsmap = 1;
  fs_log (ctx, FSSNAP_LOG_INFO, "%s: %s, candidates from its GETFSMAP map "
          "(%" PRIu64 " MiB free)", mnt,
          ctx->type[0] ? ctx->type : "a mounted file system",
          free_bytes >> 20);
  return 0;
}

int
fs_candidates (void *opaque, struct fssnap_candidates *cands)
{
  struct fs_candidates_ctx *ctx = opaque;
  const char *path = fssnap_candidates_origin_path (cands);
  char errmsg[256];
  int rc;

  ctx->all = 0;
  ctx->fsmap = 0;
  rc = fs_detect_on (path, fssnap_candidates_origin_fd (cands), ctx->type,
                     sizeof ctx->type);
  if (fs_candidates_fsmap (ctx, cands) == 0)
    return 0;
  if (rc < 0)
    fs_log (ctx, FSSNAP_LOG_WARN, "%s: cannot probe for a file system (%s), "
            "every chunk is a candidate", path, strerror (-rc));
  else if (!fs_type_is_ext (ctx->type))
    fs_log (ctx, FSSNAP_LOG_INFO, "%s: %s, every chunk is a candidate%s",
            path, ctx->type[0] ? ctx->type : "no file system found",
            ctx->type[0] && !fssnap_candidates_mountpoint (cands)
              ? " (create --mount reads the map of a mounted one)" : "");
  else {
    rc = ext4_candidates (cands, errmsg, sizeof errmsg);
    if (rc == 0)
      return 0;
    fs_log (ctx, FSSNAP_LOG_WARN, "%s: %s: %s, every chunk is a candidate",
            path, ctx->type, errmsg);
  }
  fssnap_candidates_mark_all (cands);
  ctx->all = 1;
  return 0;
}
