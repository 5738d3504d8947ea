/* SPDX-License-Identifier: MIT */
/*
 * Rollback: make the live volume read exactly as snapshot N, keeping every
 * other snapshot, older and newer, exact.
 *
 * Built on the public API, its records in the state dir written through
 * the origin's I/O layer (as the rest of the engine's files).  The chunks that may differ between N and
 * the volume are those fssnap_changes (N, volume) names (all of them when
 * the maps cannot be trusted).  For each, N's contents are read and
 * compared with the volume's; a chunk that differs is written back with an
 * ordinary fssnap_origin_write (fssnap_origin_zero where N reads zeros,
 * which is also what a non-candidate chunk of N reads as).  So each move
 * is a copy-on-write write: newer snapshots first get the old contents
 * they still need, and older ones are untouched.  A final flush makes the
 * moves durable.
 *
 * Crashes: before the first move an intent (target number and UUID, with
 * a CRC-32C) is made durable in the state dir as ORIGIN.rollback, and it
 * is removed only after the final flush.  Since every step compares
 * contents against N, which never changes, running it again from the
 * start after a crash (or a kill -9) ends in the same result: the chunks
 * already moved compare equal and are skipped.
 *
 * After a rollback the change maps still say "may differ" for the chunks
 * that moved (the moves are writes).  ORIGIN.rolledback records the
 * target, and fssnap_changes_exact() compares contents where the maps
 * say changed, so that "diff N volume" is empty right after.
 *
 * Testing: FSSNAP_TEST_ROLLBACK_DELAY_MS (an integer) sleeps that long
 * after each chunk moved, so that a test can kill the daemon mid-way.
 * Nothing else reads it.
 *
 * Locks: none of its own; the engine calls are thread-safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "engine/internal.h"

#define ROLLBACK_INTENT  "rollback"
#define ROLLBACK_DONE    "rolledback"

/* A growing list of byte extents. */
struct rb_extents {
  uint64_t (*e)[2];
  size_t n, alloc;
  int err;
};

/* fssnap_extent_fn: keep the extents that may differ. */
static int
rb_collect (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct rb_extents *x = opaque;

  if (hole)
    return 0;
  if (x->n > 0 && x->e[x->n - 1][0] + x->e[x->n - 1][1] == off) {
    x->e[x->n - 1][1] += len;
    return 0;
  }
  if (x->n == x->alloc) {
    size_t alloc = x->alloc ? 2 * x->alloc : 64;
    void *p = realloc (x->e, alloc * sizeof *x->e);
    if (!p) {
      x->err = -ENOMEM;
      return 1;
    }
    x->e = p;
    x->alloc = alloc;
  }
  x->e[x->n][0] = off;
  x->e[x->n][1] = len;
  x->n++;
  return 0;
}

/* The extents of [off, off+len) that may differ between a and b; the
 * whole range when the maps cannot be trusted (*untrusted set).
 */
static int
rb_candidates (struct fssnap_origin *o, int a, int b, uint64_t off,
               uint64_t len, struct rb_extents *x, bool *untrusted,
               char *errmsg, size_t errlen)
{
  int r;

  memset (x, 0, sizeof *x);
  *untrusted = false;
  r = fssnap_changes (o, a, b, off, len, rb_collect, x, errmsg, errlen);
  if (r == -ESTALE) {
    *untrusted = true;
    x->n = 0;
    *errmsg = '\0';
    r = len ? rb_collect (x, off, len, false) : 0;
  }
  if (r > 0)
    r = x->err;
  if (r < 0) {
    free (x->e);
    x->e = NULL;
  }
  return r;
}

/* "STATE_DIR/BASENAME.EXT" of the origin. */
static void
rb_path (struct fssnap_origin *o, const char *state_dir, const char *ext,
         char *path, size_t len)
{
  const char *p = fssnap_origin_path (o), *slash = strrchr (p, '/');

  snprintf (path, len, "%s/%s.%s", state_dir, slash ? slash + 1 : p, ext);
}

/* Write "NUM UUID CRC\n" durably to path (io_replace_file). */
static int
rb_record_write (struct fssnap_origin *o, const char *path, unsigned num,
                 const char *uuid)
{
  char line[128], body[96];
  int n;

  snprintf (body, sizeof body, "%u %s", num, uuid);
  n = snprintf (line, sizeof line, "%s %08" PRIx32 "\n", body,
                crc32c (0, body, strlen (body)));
  return io_replace_file (o->io, path, line, (size_t) n);
}

/* 1 with the record's number and uuid, 0 if there is none, -EBADMSG if
 * it fails its check.
 */
static int
rb_record_read (struct fssnap_origin *o, const char *path, unsigned *num,
                char *uuid)
{
  char line[128] = "", body[96], u[FSSNAP_UUID_STRLEN];
  const struct fssnap_io *io = o->io;
  int fd = io->open (io->opaque, path, O_RDONLY | O_CLOEXEC, 0);
  ssize_t len;
  unsigned n;
  uint32_t crc;

  if (fd < 0)
    return fd == -ENOENT ? 0 : fd;
  len = io_pread_upto (io, fd, line, sizeof line - 1, 0);
  io->close (io->opaque, fd);
  if (len < 0)
    return (int) len;
  line[len] = '\0';
  if (sscanf (line, "%u %36s %" SCNx32, &n, u, &crc) != 3
      || strlen (u) != FSSNAP_UUID_STRLEN - 1)
    return -EBADMSG;
  snprintf (body, sizeof body, "%u %s", n, u);
  if (crc32c (0, body, strlen (body)) != crc)
    return -EBADMSG;
  *num = n;
  memcpy (uuid, u, FSSNAP_UUID_STRLEN);
  return 1;
}

int
fssnap_rollback_pending (struct fssnap_origin *o, const char *state_dir,
                         unsigned *num, char *uuid)
{
  char path[4096];

  rb_path (o, state_dir, ROLLBACK_INTENT, path, sizeof path);
  return rb_record_read (o, path, num, uuid);
}

int
fssnap_rollback_last (struct fssnap_origin *o, const char *state_dir,
                      unsigned *num, char *uuid)
{
  char path[4096];

  rb_path (o, state_dir, ROLLBACK_DONE, path, sizeof path);
  return rb_record_read (o, path, num, uuid);
}

static bool
rb_all_zero (const unsigned char *buf, size_t len)
{
  return len == 0 || (buf[0] == 0 && memcmp (buf, buf + 1, len - 1) == 0);
}

static unsigned
rb_test_delay_ms (void)
{
  const char *v = getenv ("FSSNAP_TEST_ROLLBACK_DELAY_MS");

  return v ? (unsigned) strtoul (v, NULL, 10) : 0;
}

/* Make [off, off+len) of the volume read as snap does (bufs of len). */
static int
rb_move (struct fssnap_origin *o, struct fssnap_snapshot *snap, uint64_t off,
         size_t len, unsigned char *want, unsigned char *have, bool *moved)
{
  int r;

  *moved = false;
  if ((r = fssnap_snapshot_read (snap, want, len, off)) < 0
      || (r = fssnap_origin_read (o, have, len, off)) < 0)
    return r;
  if (memcmp (want, have, len) == 0)
    return 0;
  *moved = true;
  if (rb_all_zero (want, len))
    return fssnap_origin_zero (o, len, off, 0);
  return fssnap_origin_write (o, want, len, off, 0);
}

/* Walk the extents chunk by chunk. */
static int
rb_run (struct fssnap_origin *o, struct fssnap_snapshot *snap,
        const struct rb_extents *x, struct fssnap_rollback_progress *p,
        fssnap_rollback_fn fn, void *opaque)
{
  uint32_t cs = fssnap_origin_chunksize (o);
  unsigned delay = rb_test_delay_ms ();
  unsigned char *want = malloc (cs), *have = malloc (cs);
  int r = want && have ? 0 : -ENOMEM;

  for (size_t i = 0; r == 0 && i < x->n; i++) {
    uint64_t off = x->e[i][0], end = off + x->e[i][1];
    while (r == 0 && off < end) {
      size_t n = cs - (off & (cs - 1));
      bool moved;
      if (n > end - off)
        n = end - off;
      r = rb_move (o, snap, off, n, want, have, &moved);
      p->examined++;
      p->moved += moved;
      off += n;
      if (r == 0 && moved && delay) {
        struct timespec ts = { delay / 1000, (delay % 1000) * 1000000L };
        nanosleep (&ts, NULL);
      }
      if (r == 0 && fn && fn (opaque, p))
        r = -EINTR;
    }
  }
  free (want);
  free (have);
  return r;
}

/* Open snapshot num, check that it is the one with uuid (if given). */
static int
rb_open_target (struct fssnap_origin *o, unsigned num, const char *uuid,
                struct fssnap_snapshot **snapp,
                struct fssnap_snapshot_info *info, char *errmsg,
                size_t errlen)
{
  int r = fssnap_snapshot_info (o, num, info);

  if (r == -ENOENT) {
    snprintf (errmsg, errlen, "no snapshot %u", num);
    return r;
  }
  if (r == 0 && uuid && strcmp (uuid, info->uuid) != 0) {
    snprintf (errmsg, errlen, "snapshot %u is no longer the one (uuid %s) "
              "the rollback started with", num, uuid);
    return -ESTALE;
  }
  if (r == 0 && info->state == FSSNAP_STATE_DISABLED) {
    snprintf (errmsg, errlen, "snapshot %u is disabled (%s)", num,
              info->reason);
    return -EIO;
  }
  if (r == 0)
    r = fssnap_snapshot_open (o, num, snapp);
  if (r < 0 && !*errmsg)
    snprintf (errmsg, errlen, "cannot open snapshot %u: %s", num,
              strerror (-r));
  return r;
}

/* Whether snapshot num with this uuid still exists. */
static bool
rb_target_exists (struct fssnap_origin *o, unsigned num, const char *uuid)
{
  struct fssnap_snapshot_info *info = malloc (sizeof *info);
  bool found = info && fssnap_snapshot_info (o, num, info) == 0
               && strcmp (info->uuid, uuid) == 0;

  free (info);
  return found;
}

int
fssnap_rollback (struct fssnap_origin *o, const char *state_dir,
                 unsigned num, const char *uuid, fssnap_rollback_fn fn,
                 void *opaque, char *errmsg, size_t errlen)
{
  struct fssnap_rollback_progress p = { .number = num };
  struct fssnap_snapshot_info *info = malloc (sizeof *info);
  struct fssnap_snapshot *snap = NULL;
  char path[4096], done[4096], pend_uuid[FSSNAP_UUID_STRLEN];
  struct rb_extents x = { 0 };
  unsigned pend_num;
  bool untrusted;
  int r;

  *errmsg = '\0';
  if (!info)
    return -ENOMEM;
  rb_path (o, state_dir, ROLLBACK_INTENT, path, sizeof path);
  rb_path (o, state_dir, ROLLBACK_DONE, done, sizeof done);
  r = rb_record_read (o, path, &pend_num, pend_uuid);
  /* Another target's unfinished rollback must finish first, unless that
   * snapshot is gone: then it never can, and this one makes the volume
   * whole again.
   */
  if (r == 1 && (pend_num != num || (uuid && strcmp (uuid, pend_uuid)))
      && rb_target_exists (o, pend_num, pend_uuid)) {
    snprintf (errmsg, errlen, "a rollback to snapshot %u (uuid %s) is "
              "unfinished; it must complete first", pend_num, pend_uuid);
    free (info);
    return -EBUSY;
  }
  if (r == 1 && !uuid && pend_num == num
      && rb_target_exists (o, pend_num, pend_uuid))
    uuid = pend_uuid;           /* the next "rollback N" resumes it */
  r = rb_open_target (o, num, uuid, &snap, info, errmsg, errlen);
  if (r < 0) {
    free (info);
    return r;
  }
  memcpy (p.uuid, info->uuid, sizeof p.uuid);
  free (info);
  r = rb_record_write (o, path, num, p.uuid);
  if (r < 0)
    snprintf (errmsg, errlen, "cannot record the rollback in %s: %s", path,
              strerror (-r));
  if (r == 0)
    r = rb_candidates (o, (int) num, FSSNAP_VOLUME, 0, fssnap_origin_size (o),
                       &x, &untrusted, errmsg, errlen);
  for (size_t i = 0; r == 0 && i < x.n; i++) {
    uint32_t cs = fssnap_origin_chunksize (o);
    p.chunks += (x.e[i][1] + cs - 1) / cs;
  }
  if (r == 0 && fn && fn (opaque, &p))
    r = -EINTR;
  if (r == 0)
    r = rb_run (o, snap, &x, &p, fn, opaque);
  if (r == 0 && (r = fssnap_origin_flush (o)) < 0)
    snprintf (errmsg, errlen, "flushing the volume: %s", strerror (-r));
  if (r == 0 && (r = rb_record_write (o, done, num, p.uuid)) == 0) {
    o->io->unlink (o->io->opaque, path);
    r = io_sync_dir (o->io, state_dir);
  }
  if (r < 0 && !*errmsg)
    snprintf (errmsg, errlen, "%s", r == -EINTR ? "stopped; it resumes when "
              "fssnapd starts again" : strerror (-r));
  free (x.e);
  fssnap_snapshot_close (snap);
  return r;
}

/* ---- Exact comparison -------------------------------------------------- */

/* One side of a comparison: the volume, or an open snapshot. */
static int
rb_read_side (struct fssnap_origin *o, struct fssnap_snapshot *snap,
              void *buf, size_t len, uint64_t off)
{
  return snap ? fssnap_snapshot_read (snap, buf, len, off)
              : fssnap_origin_read (o, buf, len, off);
}

static int
rb_open_side (struct fssnap_origin *o, int side,
              struct fssnap_snapshot **snapp)
{
  *snapp = NULL;
  return side == FSSNAP_VOLUME ? 0
                               : fssnap_snapshot_open (o, (unsigned) side,
                                                       snapp);
}

/* Report [off, end) chunk by chunk: changed only where contents differ. */
static int
rb_compare (struct fssnap_origin *o, struct fssnap_snapshot *sa,
            struct fssnap_snapshot *sb, uint64_t off, uint64_t end,
            unsigned char *ba, unsigned char *bb, fssnap_extent_fn fn,
            void *opaque)
{
  uint32_t cs = fssnap_origin_chunksize (o);
  int r = 0;

  while (r == 0 && off < end) {
    size_t n = cs - (off & (cs - 1));
    if (n > end - off)
      n = end - off;
    if ((r = rb_read_side (o, sa, ba, n, off)) < 0
        || (r = rb_read_side (o, sb, bb, n, off)) < 0)
      return r;
    r = fn (opaque, off, n, memcmp (ba, bb, n) == 0);
    off += n;
  }
  return r;
}

int
fssnap_changes_exact (struct fssnap_origin *o, int a, int b, uint64_t off,
                      uint64_t len, fssnap_extent_fn fn, void *opaque,
                      char *errmsg, size_t errlen)
{
  struct fssnap_snapshot *sa = NULL, *sb = NULL;
  uint32_t cs = fssnap_origin_chunksize (o);
  unsigned char *ba = NULL, *bb = NULL;
  struct rb_extents x;
  uint64_t pos = off;
  bool untrusted;
  int r;

  r = rb_candidates (o, a, b, off, len, &x, &untrusted, errmsg, errlen);
  if (r < 0)
    return r;
  if ((r = rb_open_side (o, a, &sa)) == 0)
    r = rb_open_side (o, b, &sb);
  if (r == 0 && (!(ba = malloc (cs)) || !(bb = malloc (cs))))
    r = -ENOMEM;
  for (size_t i = 0; r == 0 && i <= x.n; i++) {
    uint64_t start = i < x.n ? x.e[i][0] : off + len;
    if (start > pos)
      r = fn (opaque, pos, start - pos, true);
    if (r == 0 && i < x.n)
      r = rb_compare (o, sa, sb, start, start + x.e[i][1], ba, bb, fn,
                      opaque);
    if (i < x.n)
      pos = start + x.e[i][1];
  }
  free (ba);
  free (bb);
  if (sa)
    fssnap_snapshot_close (sa);
  if (sb)
    fssnap_snapshot_close (sb);
  free (x.e);
  return r;
}
