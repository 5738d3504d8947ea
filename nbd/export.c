/* SPDX-License-Identifier: MIT */
/*
 * NBD exports: "volume" (and the default, empty name) is the origin,
 * read-write; "snap/<N>" is snapshot N, read-only, through a handle the
 * connection holds open for its whole life.  This is the only file of the
 * frontend that calls the engine; it takes no locks of its own (the engine
 * is thread-safe, and a connection's export is fixed once chosen).
 *
 * Block status (base:allocation): the volume is reported as data
 * throughout (flag 0, always correct); a snapshot reports its
 * non-candidate chunks as holes that read as zeros.  Dirty bitmaps
 * (qemu:dirty-bitmap:snap/A): the engine's changed-block maps between
 * snapshot A and this export, dirty where the data may differ.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "nbd/internal.h"

#define NBD_SNAP_PREFIX "snap/"
#define NBD_CLONE_PREFIX "clone/"

int
nbd_export_parse (const char *name, enum nbd_export_kind *kind,
                  unsigned *num)
{
  const char *p;
  unsigned n = 0;

  if (strcmp (name, "") == 0 || strcmp (name, "volume") == 0) {
    *kind = NBD_EXPORT_VOLUME;
    *num = 0;
    return 0;
  }
  if (strncmp (name, NBD_SNAP_PREFIX, strlen (NBD_SNAP_PREFIX)) == 0) {
    p = name + strlen (NBD_SNAP_PREFIX);
    *kind = NBD_EXPORT_SNAPSHOT;
  } else if (strncmp (name, NBD_CLONE_PREFIX,
                      strlen (NBD_CLONE_PREFIX)) == 0) {
    p = name + strlen (NBD_CLONE_PREFIX);
    *kind = NBD_EXPORT_CLONE;
  } else
    return -ENOENT;
  /* Canonical decimal: no sign, no leading zero, small enough. */
  if (*p == '\0' || (p[0] == '0' && p[1] != '\0') || strlen (p) > 9)
    return -ENOENT;
  for (; *p; p++) {
    if (*p < '0' || *p > '9')
      return -ENOENT;
    n = n * 10 + (unsigned) (*p - '0');
  }
  *num = n;
  return 0;
}

int
nbd_export_open (const struct nbd_env *env, const char *name,
                 struct nbd_export *exp)
{
  struct fssnap_origin *origin = env->origin;
  int r;

  memset (exp, 0, sizeof *exp);
  r = nbd_export_parse (name, &exp->kind, &exp->num);
  if (r < 0)
    return r;
  exp->origin = origin;
  if (exp->kind == NBD_EXPORT_VOLUME) {
    exp->size = fssnap_origin_size (origin);
    return 0;
  }
  if (exp->kind == NBD_EXPORT_CLONE) {
    if (!env->clones)
      return -ENOENT;
    r = fssnap_clone_get (env->clones, exp->num, &exp->clone);
    if (r == 0)
      exp->size = fssnap_clone_size (exp->clone);
    return r;
  }
  r = fssnap_snapshot_open (origin, exp->num, &exp->snap);
  if (r < 0)
    return r;
  exp->size = fssnap_snapshot_size (exp->snap);
  return 0;
}

void
nbd_export_why (struct fssnap_origin *origin, const char *name, int r,
                char *buf, size_t len)
{
  struct fssnap_snapshot_info info;
  enum nbd_export_kind kind;
  unsigned num;

  if ((r == -EAGAIN || r == -EIO)
      && nbd_export_parse (name, &kind, &num) == 0
      && kind == NBD_EXPORT_SNAPSHOT
      && fssnap_snapshot_info (origin, num, &info) == 0 && info.reason[0]) {
    snprintf (buf, len, "snapshot %u is %s: %s", num,
              fssnap_state_name (info.state), info.reason);
    return;
  }
  snprintf (buf, len, "%s", strerror (-r));
}

void
nbd_export_close (struct nbd_export *exp)
{
  if (exp->snap)
    fssnap_snapshot_close (exp->snap);
  if (exp->clone)
    fssnap_clone_put (exp->clone);
  exp->snap = NULL;
  exp->clone = NULL;
}

bool
nbd_export_readonly (const struct nbd_export *exp)
{
  return exp->kind == NBD_EXPORT_SNAPSHOT;
}

uint16_t
nbd_export_flags (const struct nbd_export *exp, bool structured)
{
  /* Every connection shares the engine and its flush, so multi-conn is
   * safe on both kinds of export.
   */
  uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH
                   | NBD_FLAG_CAN_MULTI_CONN;

  if (structured)
    flags |= NBD_FLAG_SEND_DF;    /* reads are always one chunk */
  if (nbd_export_readonly (exp))
    flags |= NBD_FLAG_READ_ONLY;
  else
    flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM
             | NBD_FLAG_SEND_WRITE_ZEROES;
  return flags;
}

/* "clone K of snapshot N ...": -ENOENT once it is gone. */
static int
nbd_clone_describe (const struct nbd_env *env, unsigned num, char *buf,
                    size_t len)
{
  struct fssnap_clone_info info;
  int r = env->clones ? fssnap_clones_info (env->clones, num, &info)
                      : -ENOENT;

  if (r == 0)
    snprintf (buf, len, "clone %u of snapshot %u (uuid %s) of %s, "
              "read-write", num, info.base, info.base_uuid,
              fssnap_origin_path (env->origin));
  return r;
}

int
nbd_export_describe (const struct nbd_env *env, enum nbd_export_kind kind,
                     unsigned num, char *buf, size_t len)
{
  struct fssnap_origin *origin = env->origin;
  struct fssnap_snapshot_info info;
  char when[32] = "?";
  struct tm tm;
  time_t t;
  int r;

  if (kind == NBD_EXPORT_VOLUME) {
    snprintf (buf, len, "live volume %s, read-write",
              fssnap_origin_path (origin));
    return 0;
  }
  if (kind == NBD_EXPORT_CLONE)
    return nbd_clone_describe (env, num, buf, len);
  r = fssnap_snapshot_info (origin, num, &info);
  if (r < 0)
    return r;
  t = (time_t) info.create_time;
  if (gmtime_r (&t, &tm))
    strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  snprintf (buf, len, "snapshot %u of %s, created %s, uuid %s, %s, read-only",
            num, fssnap_origin_path (origin), when, info.uuid,
            fssnap_state_name (info.state));
  return 0;
}

int
nbd_export_read (struct nbd_export *exp, void *buf, uint32_t len,
                 uint64_t off)
{
  if (exp->snap)
    return fssnap_snapshot_read (exp->snap, buf, len, off);
  if (exp->clone)
    return fssnap_clone_read (exp->clone, buf, len, off);
  return fssnap_origin_read (exp->origin, buf, len, off);
}

int
nbd_export_write (struct nbd_export *exp, const void *buf, uint32_t len,
                  uint64_t off, bool fua)
{
  if (nbd_export_readonly (exp))
    return -EPERM;
  if (exp->clone)
    return fssnap_clone_write (exp->clone, buf, len, off,
                               fua ? FSSNAP_FUA : 0);
  return fssnap_origin_write (exp->origin, buf, len, off,
                              fua ? FSSNAP_FUA : 0);
}

int
nbd_export_zero (struct nbd_export *exp, uint32_t len, uint64_t off,
                 bool fua, bool no_hole)
{
  unsigned flags = (fua ? FSSNAP_FUA : 0) | (no_hole ? FSSNAP_ZERO_NO_HOLE : 0);

  if (nbd_export_readonly (exp))
    return -EPERM;
  if (exp->clone)
    return fssnap_clone_zero (exp->clone, len, off, flags);
  return fssnap_origin_zero (exp->origin, len, off, flags);
}

int
nbd_export_trim (struct nbd_export *exp, uint32_t len, uint64_t off,
                 bool fua)
{
  int r;

  if (nbd_export_readonly (exp))
    return -EPERM;
  if (exp->clone)
    return fssnap_clone_trim (exp->clone, len, off, fua ? FSSNAP_FUA : 0);
  r = fssnap_origin_trim (exp->origin, len, off, fua ? FSSNAP_FUA : 0);
  /* Trim is a hint: a device that cannot discard has done nothing wrong. */
  return r == -EOPNOTSUPP ? 0 : r;
}

int
nbd_export_flush (struct nbd_export *exp)
{
  if (nbd_export_readonly (exp))
    return 0;                   /* nothing is ever written through it */
  if (exp->clone)
    return fssnap_clone_flush (exp->clone);
  return fssnap_origin_flush (exp->origin);
}

/* Extents gathered for one block status chunk. */
struct nbd_extent_list {
  uint32_t *descs;
  unsigned n, max;
  uint64_t left;                /* bytes of the request not yet described */
  uint32_t hole_flags, data_flags;      /* the context's flags */
};

/* fssnap_extent_fn: append or merge one extent; stop once full. */
static int
nbd_extent_add (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct nbd_extent_list *l = opaque;
  uint32_t flags = hole ? l->hole_flags : l->data_flags;

  (void) off;
  if (len > l->left)
    len = l->left;              /* never describe more than was asked */
  if (len == 0)
    return l->left == 0;
  if (l->n > 0 && l->descs[2 * l->n - 1] == flags) {
    l->descs[2 * l->n - 2] += (uint32_t) len;   /* within a u32 request */
  } else {
    if (l->n == l->max)
      return 1;
    l->descs[2 * l->n] = (uint32_t) len;
    l->descs[2 * l->n + 1] = flags;
    l->n++;
  }
  l->left -= len;
  return 0;
}

int
nbd_export_extents (struct nbd_export *exp, uint64_t off, uint32_t len,
                    uint32_t *descs, unsigned max)
{
  struct nbd_extent_list l = { .descs = descs, .max = max, .left = len,
                               .hole_flags = NBD_STATE_HOLE | NBD_STATE_ZERO };
  int r;

  if (exp->snap) {
    r = fssnap_snapshot_extents (exp->snap, off, len, nbd_extent_add, &l);
    if (r < 0)
      return r;
  }
  if (l.n == 0) {               /* the volume, or an engine with nothing */
    descs[0] = len;
    descs[1] = 0;
    l.n = 1;
  }
  return (int) l.n;
}

/* Snapshot num's creation sequence, or a negative errno. */
static int
nbd_snapshot_seq (struct fssnap_origin *origin, unsigned num, uint64_t *seq)
{
  struct fssnap_snapshot_info info;
  int r = fssnap_snapshot_info (origin, num, &info);

  if (r == 0)
    *seq = info.seq;
  return r;
}

int
nbd_export_bitmaps (struct fssnap_origin *origin, enum nbd_export_kind kind,
                    unsigned num, struct nbd_bitmap *bms, unsigned max)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS], found = 0;
  uint64_t newest = UINT64_MAX;
  int n, i, r;

  if (kind == NBD_EXPORT_CLONE)
    return 0;                   /* no change maps for clones */
  if (kind == NBD_EXPORT_SNAPSHOT
      && (r = nbd_snapshot_seq (origin, num, &newest)) < 0)
    return r;
  n = fssnap_snapshot_list (origin, nums, FSSNAP_MAX_SNAPSHOTS);
  if (n < 0)
    return n;
  if (n > FSSNAP_MAX_SNAPSHOTS)
    n = FSSNAP_MAX_SNAPSHOTS;
  for (i = 0; i < n && found < max; i++) {
    uint64_t seq = 0;
    if (nbd_snapshot_seq (origin, nums[i], &seq) < 0 || seq >= newest)
      continue;                 /* deleted meanwhile, or not older */
    bms[found].num = nums[i];
    bms[found].seq = seq;
    found++;
  }
  return (int) found;
}

/* Is snapshot bm->num still the one chosen with the context? */
static bool
nbd_bitmap_current (struct fssnap_origin *origin, const struct nbd_bitmap *bm)
{
  uint64_t seq;

  return nbd_snapshot_seq (origin, bm->num, &seq) == 0 && seq == bm->seq;
}

int
nbd_export_changes (struct nbd_export *exp, const struct nbd_bitmap *bm,
                    uint64_t off, uint32_t len, uint32_t *descs,
                    unsigned max, char *errmsg, size_t errlen)
{
  struct nbd_extent_list l = { .descs = descs, .max = max, .left = len,
                               .data_flags = NBD_STATE_DIRTY };
  int b = exp->kind == NBD_EXPORT_VOLUME ? FSSNAP_VOLUME : (int) exp->num;
  int r;

  /* Checked before and after: sequences never repeat, so the same one
   * twice means the same snapshot A throughout.
   */
  snprintf (errmsg, errlen, "snapshot %u is gone", bm->num);
  if (!nbd_bitmap_current (exp->origin, bm))
    return -ENOENT;
  r = fssnap_changes (exp->origin, (int) bm->num, b, off, len, nbd_extent_add,
                      &l, errmsg, errlen);
  if (r < 0)
    return r;
  if (!nbd_bitmap_current (exp->origin, bm))
    return -ENOENT;
  snprintf (errmsg, errlen, "no extents from the engine");
  return l.n > 0 ? (int) l.n : -EIO;
}
