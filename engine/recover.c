/* SPDX-License-Identifier: MIT */
/*
 * Recovery: reopen, at start, the snapshots recorded in the state dir.
 *
 * A crash mid-create leaves ORIGIN.snapN.SEQ.meta.tmp (the metadata file
 * gets its final name once complete): it is removed with the store files
 * of that snapshot that sit in the state dir.  (A store created elsewhere,
 * with backing-store=, cannot be found from an incomplete file: the log
 * names it.)  Every file named ORIGIN.snapN.SEQ.meta is read and checked
 * (meta.c checks the header and every bitmap block).  Then, for each:
 *   - the origin is not the one it was taken of (size, inode), its chunk
 *     size differs from the others', its store is missing or shorter than
 *     the copies it owns, or its file is damaged: it comes back disabled,
 *     with the reason, holding its number, and is never served;
 *   - its files cannot be read now (EIO, ENOMEM: a fault, which proves
 *     nothing): it comes back offline, holding its number, listed with the
 *     reason, never served and nothing in its files rewritten; a restart
 *     that can read them brings it back.  If the volume is written while
 *     it is offline, a marker file ORIGIN.snapN.SEQ.missed is made durable
 *     first (snapshot.c): then it missed copies, and the restart that
 *     reads it disables it;
 *   - transient: it comes back deleted (kept only while an older snapshot
 *     reads copies it owns);
 *   - otherwise it comes back as it was, with its number.
 * The preserved maps H are not stored: S preserved chunk c iff c was a
 * candidate of S and a snapshot at or after S owns a copy of c (cow.c's
 * proof), so they are derived from C and O.  That needs every owner map at
 * or after S: a valid snapshot older than one that cannot be trusted (its
 * owner map is lost) is disabled too; older than an offline one, it is
 * offline too, in memory only.
 *
 * Runs in fssnap_origin_open before any other thread exists; takes
 * snap_lock only through the helpers it shares with the rest.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"
#include "engine/internal.h"

struct found {
  unsigned number;
  uint64_t seq;
  char *path;
  struct snap *snap;            /* trusted so far, or NULL */
  struct meta *meta;            /* kept for removal when untrusted */
  struct store *store;
  char reason[256];             /* why untrusted, or why offline */
  bool offline;                 /* its files cannot be read now (a fault) */
  bool gone;                    /* a transient one, removed */
  bool after_lost;              /* its map A cannot be trusted */
};

/* Whether name is ORIGIN.snapN.SEQ.EXT for this origin. */
static bool
recover_parse_name (struct fssnap_origin *o, const char *name,
                    const char *ext, unsigned *num, uint64_t *seq)
{
  size_t n = strlen (o->basename);
  if (strncmp (name, o->basename, n) != 0 || strncmp (name + n, ".snap", 5))
    return false;
  unsigned long long sq;
  char check[512];
  if (sscanf (name + n + 5, "%u.%llu.", num, &sq) != 2)
    return false;
  snprintf (check, sizeof check, "%s.snap%u.%llu.%s", o->basename, *num, sq,
            ext);
  *seq = sq;
  return strcmp (check, name) == 0 && *num < FSSNAP_MAX_SNAPSHOTS;
}

/* Remove every file of snapshot (num, seq) in the state dir: what a crash
 * during its creation left.
 */
static void
recover_remove_partial (struct fssnap_origin *o, unsigned num, uint64_t seq)
{
  char prefix[512];
  size_t n = snprintf (prefix, sizeof prefix, "%s.snap%u.%llu.", o->basename,
                       num, (unsigned long long) seq);
  DIR *d = opendir (o->state_dir);
  if (!d)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL) {
    char path[4096];
    if (strncmp (de->d_name, prefix, n) != 0)
      continue;
    snprintf (path, sizeof path, "%s/%s", o->state_dir, de->d_name);
    o->io->unlink (o->io->opaque, path);
  }
  closedir (d);
  engine_log (o, FSSNAP_LOG_WARN, "snapshot %u: removed the files of a "
              "creation cut short by a crash (%s/%s*); a backing store "
              "outside the state dir, if one was given, is left", num,
              o->state_dir, prefix);
}

static int
found_cmp (const void *a, const void *b)
{
  const struct found *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* List the metadata files of this origin, oldest first. */
static int
recover_scan (struct fssnap_origin *o, struct found **foundp, size_t *np)
{
  DIR *d = opendir (o->state_dir);
  *foundp = NULL;
  *np = 0;
  if (!d)
    return errno == ENOENT ? 0 : -errno;
  size_t alloc = 0;
  struct dirent *de;
  int r = 0;
  while (r == 0 && (de = readdir (d)) != NULL) {
    unsigned num;
    uint64_t seq;
    if (recover_parse_name (o, de->d_name, "meta.tmp", &num, &seq)) {
      recover_remove_partial (o, num, seq);
      continue;
    }
    if (!recover_parse_name (o, de->d_name, "meta", &num, &seq))
      continue;
    if (*np == alloc) {
      alloc = alloc ? 2 * alloc : 16;
      struct found *p = realloc (*foundp, alloc * sizeof *p);
      if (!p) {
        r = -ENOMEM;
        break;
      }
      *foundp = p;
    }
    struct found *f = &(*foundp)[(*np)++];
    memset (f, 0, sizeof *f);
    f->number = num;
    f->seq = seq;
    if (asprintf (&f->path, "%s/%s", o->state_dir, de->d_name) < 0) {
      f->path = NULL;
      r = -ENOMEM;
    }
  }
  closedir (d);
  if (*np)
    qsort (*foundp, *np, sizeof **foundp, found_cmp);
  return r;
}

/* Whether the header describes this origin; else a reason. */
static bool
recover_origin_matches (struct fssnap_origin *o, const struct meta_header *h,
                        char *why, size_t len)
{
  if (h->origin_size != o->size) {
    snprintf (why, len, "the origin's size changed from %" PRIu64 " to %"
              PRIu64 " bytes since the snapshot was taken", h->origin_size,
              o->size);
    return false;
  }
  if (h->origin_kind != o->origin_kind
      || (o->origin_kind == META_ORIGIN_FILE
          && (h->origin_dev != o->origin_dev
              || h->origin_ino != o->origin_ino))) {
    snprintf (why, len, "the origin is not the file the snapshot was taken "
              "of (%.160s)", h->origin_path);
    return false;
  }
  if (!chunksize_valid (h->chunksize)
      || h->nchunks != (o->size + h->chunksize - 1) / h->chunksize) {
    snprintf (why, len, "metadata header inconsistent (chunk geometry)");
    return false;
  }
  return true;
}

/* Reopen the store; for a valid snapshot, check that it holds every copy
 * O says it owns: -EBADMSG if it does not (proof), another error for a
 * fault.  (A disabled or deleted one may own copies that failed; what
 * older snapshots read from it is checked by recover_check_kept.)
 */
static int
recover_open_store (struct fssnap_origin *o, struct found *f,
                    const struct meta_header *h, const struct bitmap *owner)
{
  struct store_params p = {
    .io = o->io, .location = h->store_path, .chunksize = h->chunksize,
    .nchunks = h->nchunks, .origin_size = o->size,
    .max_file_size = h->max_backfile_size,
  };
  const struct store_ops *ops = h->flags & META_F_TRANSIENT
                                ? &store_transient_ops : &store_file_ops;
  int r = ops->open (&p, &f->store, f->reason, sizeof f->reason);
  for (uint64_t c = bitmap_find (owner, 0, true);
       r == 0 && h->state == META_VALID && c < owner->nbits;
       c = bitmap_find (owner, c + 1, true))
    r = store_check (f->store, c, f->reason, sizeof f->reason);
  return r;
}

/* Build the snap of a file that passed every check on its own. */
static struct snap *
recover_build (struct fssnap_origin *o, struct found *f,
               struct bitmap maps[META_NMAPS])
{
  const struct meta_header *h = &f->meta->hdr;
  struct snap *s = snap_alloc (o, h->chunksize, f->number, f->seq);
  if (!s)
    return NULL;
  bitmap_free (&s->cand);
  bitmap_free (&s->owner);
  bitmap_free (&s->changed);
  s->cand = maps[META_MAP_CAND];
  s->owner = maps[META_MAP_OWNER];
  s->changed = maps[META_MAP_CHANGED];
  bitmap_free (&maps[META_MAP_AFTER]);  /* kept in meta->durable */
  s->changed_lost = h->flags & META_F_CHANGED_LOST;
  f->after_lost = h->flags & META_F_AFTER_LOST;
  s->cand_count = bitmap_count (&s->cand);
  atomic_store (&s->owned_count, bitmap_count (&s->owner));
  memcpy (s->uuid, h->uuid, sizeof s->uuid);
  memcpy (s->group, h->group, sizeof s->group);
  s->maxsize = h->maxsize;
  s->max_backfile_size = h->max_backfile_size;
  s->create_time = h->create_time;
  s->mountpoint = h->mountpoint[0] ? strdup (h->mountpoint) : NULL;
  snprintf (s->reason, sizeof s->reason, "%s", h->reason);
  s->meta = f->meta;
  s->store = f->store;
  f->meta = NULL;
  f->store = NULL;
  return s;
}

/* Load f's metadata; a fault (not proof of damage) is retried once, since
 * a retry clears a passing one.
 */
static int
recover_load (struct fssnap_origin *o, struct found *f,
              struct bitmap maps[META_NMAPS])
{
  int r = meta_load (o->io, f->path, &f->meta, maps, f->reason,
                     sizeof f->reason);
  if (r < 0 && r != -EBADMSG)
    r = meta_load (o->io, f->path, &f->meta, maps, f->reason,
                   sizeof f->reason);
  return r;
}

/* Whether f missed copies (a marker file, see snap_mark_missed and
 * snap_persist_state_locked): 1 yes, 0 no, or the fault that stops us
 * knowing.
 */
static int
recover_missed (struct fssnap_origin *o, const struct found *f)
{
  char *path = snap_state_file (o, f->number, f->seq, "missed");
  if (!path)
    return -ENOMEM;
  int fd = o->io->open (o->io->opaque, path, O_RDONLY | O_CLOEXEC, 0);
  free (path);
  if (fd == -ENOENT)
    return 0;
  if (fd < 0)
    return fd;
  o->io->close (o->io->opaque, fd);
  return 1;
}

/* f missed copies (it was offline while the volume was written, or its
 * state could not be written when it was disabled), which is proof that
 * it is wrong.  Record it as disabled (durably) before the marker goes.
 */
static void
recover_disable_missed (struct fssnap_origin *o, struct found *f)
{
  struct snap *s = f->snap;
  if (s->meta->hdr.state != META_VALID)
    return;
  snprintf (s->reason, sizeof s->reason, "it missed copies it needed (the "
            "volume was written while it was offline, or it was disabled "
            "and its metadata could not record that)");
  engine_log (o, FSSNAP_LOG_ERR, "snapshot %u is disabled: %s", s->number,
              s->reason);
  if (meta_set_state (s->meta, META_DISABLED, s->reason, true) < 0)
    return;                     /* the marker stays: disabled next time too */
  char *path = snap_state_file (o, f->number, f->seq, "missed");
  if (path && o->io->unlink (o->io->opaque, path) == 0)
    origin_sync_state_dir (o);
  free (path);
}

/* Check one file; on success f->snap is set, else f->reason says why it
 * cannot be trusted (or, with f->offline, why it cannot be read now).
 */
static void
recover_one (struct fssnap_origin *o, struct found *f)
{
  struct bitmap maps[META_NMAPS];
  int r = recover_load (o, f, maps);
  if (r < 0) {
    f->offline = r != -EBADMSG;
    return;
  }
  const struct meta_header *h = &f->meta->hdr;
  bool ok = true;
  int missed = 0;
  if (h->seq != f->seq || h->number != f->number) {
    snprintf (f->reason, sizeof f->reason, "the metadata header does not "
              "match its file name");
    ok = false;
  }
  else if (!recover_origin_matches (o, h, f->reason, sizeof f->reason))
    ok = false;
  else if (!(h->flags & META_F_UNLINK)
           && (r = recover_open_store (o, f, h, &maps[META_MAP_OWNER])) < 0) {
    ok = false;
    f->offline = r != -EBADMSG;
  }
  else if ((missed = recover_missed (o, f)) < 0) {
    snprintf (f->reason, sizeof f->reason, "cannot tell whether the volume "
              "was written while it was offline: %s", strerror (-missed));
    ok = false;
    f->offline = true;
  }
  if (ok && !(f->snap = recover_build (o, f, maps))) {
    snprintf (f->reason, sizeof f->reason, "out of memory for its maps");
    f->offline = true;
  }
  if (f->snap && missed)
    recover_disable_missed (o, f);
  else if (f->offline) {
    meta_close (f->meta, false);        /* nothing is rewritten */
    store_destroy (f->store, false);
    f->meta = NULL;
    f->store = NULL;
  }
  else if (!ok && h->flags & (META_F_TRANSIENT | META_F_UNLINK)) {
    engine_log (o, FSSNAP_LOG_INFO, "transient snapshot %u is gone (%s)",
                f->number, f->reason);
    f->gone = true;             /* its files go once its loss is recorded */
  }
  if (!f->snap)
    for (unsigned m = 0; m < META_NMAPS; m++)
      bitmap_free (&maps[m]);
}

/* A file that cannot be read now: an offline snap holding its number,
 * with empty maps, never served and never written, so that a restart that
 * can read the file brings it back as it was.
 */
static struct snap *
recover_offline (struct fssnap_origin *o, struct found *f)
{
  struct snap *s = snap_alloc (o, o->chunksize, f->number, f->seq);
  if (!s)
    return NULL;
  atomic_store (&s->state, SNAP_OFFLINE);
  s->untrusted = true;          /* its maps are not loaded */
  snprintf (s->reason, sizeof s->reason, "offline: %.200s", f->reason);
  snprintf (s->uuid, sizeof s->uuid, "unknown");
  engine_log (o, FSSNAP_LOG_WARN, "snapshot %u is offline (its files are "
              "kept as they are; a restart that can read them brings it "
              "back): %s", f->number, f->reason);
  return s;
}

/* Turn an untrusted file into a disabled snap holding its number, with
 * empty maps of the origin's geometry.
 */
static struct snap *
recover_disabled (struct fssnap_origin *o, struct found *f)
{
  struct snap *s = snap_alloc (o, o->chunksize, f->number, f->seq);
  if (!s)
    return NULL;
  atomic_store (&s->state, SNAP_DISABLED);
  s->untrusted = true;
  s->changed_lost = true;
  f->after_lost = true;
  snprintf (s->reason, sizeof s->reason, "%s", f->reason);
  snprintf (s->uuid, sizeof s->uuid, "%s",
            f->meta ? f->meta->hdr.uuid : "unknown");
  s->meta = f->meta ? f->meta : meta_placeholder (o->io, f->path);
  s->store = f->store;
  f->meta = NULL;
  f->store = NULL;
  engine_log (o, FSSNAP_LOG_ERR, "snapshot %u cannot be trusted and is "
              "disabled: %s", f->number, f->reason);
  return s;
}

/* The chunk size of the origin: that of the oldest trusted snapshot; a
 * snapshot of another chunk size becomes untrusted.  -ENOMEM if the origin
 * cannot take that chunk size now: serving the snapshots over another
 * geometry would be wrong, and so would disabling them for a fault.
 */
static int
recover_chunksize (struct fssnap_origin *o, struct found *found, size_t n)
{
  uint32_t cs = 0;
  for (size_t i = 0; i < n; i++) {
    struct snap *s = found[i].snap;
    if (!s)
      continue;
    if (!cs) {
      cs = s->chunksize;
      if (origin_set_chunksize (o, cs) < 0) {
        engine_log (o, FSSNAP_LOG_ERR, "out of memory for the change map of "
                    "chunk size %u: the snapshots are not reopened", cs);
        return -ENOMEM;
      }
      continue;
    }
    if (s->chunksize == cs)
      continue;
    char a[32], b[32];
    size_format (s->chunksize, a, sizeof a);
    size_format (cs, b, sizeof b);
    snprintf (found[i].reason, sizeof found[i].reason, "its chunk size %s "
              "differs from %s, that of the older snapshots", a, b);
    found[i].meta = s->meta;
    found[i].store = s->store;
    s->meta = NULL;
    s->store = NULL;
    snap_unref (s);
    found[i].snap = NULL;
  }
  return 0;
}

/* Put s in the list with its number; a number taken twice leaves the
 * newer one hidden (deleted).  Caller owns the origin alone.
 */
static void
recover_publish (struct fssnap_origin *o, struct snap *s,
                 enum meta_state state)
{
  int st = atomic_load (&s->state) == SNAP_OFFLINE ? SNAP_OFFLINE
         : state == META_VALID && snap_persistent (s) ? SNAP_VALID
         : state == META_DISABLED ? SNAP_DISABLED
         : SNAP_DELETED;
  if (state == META_VALID && !snap_persistent (s))
    snprintf (s->reason, sizeof s->reason, "transient: gone at restart");
  atomic_store (&s->state, st);
  s->number_held = st != SNAP_DELETED;
  if (s->number_held && o->number_used[s->number]) {
    engine_log (o, FSSNAP_LOG_ERR, "snapshot %u (sequence %" PRIu64 ") is "
                "hidden: its number is taken by an older one", s->number,
                s->seq);
    atomic_store (&s->state, SNAP_DELETED);
    s->number_held = false;
  }
  if (s->number_held)
    o->number_used[s->number] = true;
  if (snap_is_valid (s))
    atomic_fetch_add (&o->valid_snaps, 1);
  o->snaps[o->nsnaps++] = s;
  if (s->seq >= o->next_seq)
    o->next_seq = s->seq + 1;
}

/* s cannot be checked now (a fault): it is offline, in memory only.
 * Caller owns the origin alone.
 */
static void
recover_set_offline (struct snap *s, const char *why)
{
  atomic_store (&s->state, SNAP_OFFLINE);
  atomic_fetch_sub (&s->origin->valid_snaps, 1);
  snprintf (s->reason, sizeof s->reason, "offline: %.200s", why);
  engine_log (s->origin, FSSNAP_LOG_WARN, "snapshot %u is %s", s->number,
              s->reason);
}

/* A disabled or deleted snapshot s (at index i) may own copies that
 * failed: the valid older snapshots that read such a copy from its store
 * are disabled (the copy is missing), or offline if the store cannot be
 * checked now.  Caller owns the origin alone.
 */
static void
recover_check_kept (struct fssnap_origin *o, size_t i)
{
  struct snap *s = o->snaps[i];
  char why[256];
  for (uint64_t c = bitmap_find (&s->owner, 0, true); c < s->owner.nbits;
       c = bitmap_find (&s->owner, c + 1, true)) {
    int r = store_check (s->store, c, why, sizeof why);
    for (size_t k = 0; r < 0 && k < i; k++) {
      struct snap *t = o->snaps[k];
      if (!snap_is_valid (t) || !bitmap_test (&t->pres, c)
          || cow_owner_of (o, t, c) != s)
        continue;
      if (r == -EBADMSG)
        snap_disable (t, "the copy of chunk %llu it reads from snapshot "
                      "%u's store is missing: %.160s", (unsigned long long) c,
                      s->number, why);
      else
        recover_set_offline (t, why);
    }
  }
}

/* Derive H of every snap from C and the owner maps at or after it, newest
 * first; a valid snap older than an untrusted one is disabled, since the
 * untrusted one's owner map, which it may need, is lost; older than an
 * offline one, it is offline too (that map cannot be read now).  Caller
 * owns the origin alone.
 */
static int
recover_derive_preserved (struct fssnap_origin *o)
{
  if (o->nsnaps == 0)
    return 0;
  struct bitmap acc;
  if (bitmap_init (&acc, o->snaps[0]->pres.nbits) < 0)
    return -ENOMEM;
  struct snap *untrusted = NULL, *offline = NULL;
  for (size_t i = o->nsnaps; i-- > 0;) {
    struct snap *s = o->snaps[i];
    if (s->untrusted && atomic_load (&s->state) == SNAP_OFFLINE) {
      offline = s;
      continue;
    }
    if (s->untrusted) {
      untrusted = s;
      continue;
    }
    uint64_t nwords = (acc.nbits + 63) / 64;
    for (uint64_t w = 0; w < nwords; w++) {
      uint64_t a = atomic_load (&acc.words[w]) | atomic_load (&s->owner.words[w]);
      atomic_store (&acc.words[w], a);
      atomic_store (&s->pres.words[w], a & atomic_load (&s->cand.words[w]));
    }
    atomic_store (&s->pres_count, bitmap_count (&s->pres));
    if (untrusted && snap_is_valid (s))
      snap_disable (s, "snapshot %u, newer than it, cannot be trusted: the "
                    "copies it may need are unknown", untrusted->number);
    else if (offline && snap_is_valid (s)) {
      char why[128];
      snprintf (why, sizeof why, "snapshot %u, newer than it, is offline, "
                "and the copies it may need are recorded there",
                offline->number);
      recover_set_offline (s, why);
    }
  }
  bitmap_free (&acc);
  for (size_t i = 0; i < o->nsnaps; i++) {
    int st = atomic_load (&o->snaps[i]->state);
    if (!o->snaps[i]->untrusted && o->snaps[i]->store
        && (st == SNAP_DISABLED || st == SNAP_DELETED))
      recover_check_kept (o, i);
  }
  for (size_t i = 0; i < o->nsnaps; i++)
    if (atomic_load (&o->snaps[i]->state) == SNAP_OFFLINE)
      atomic_fetch_add (&o->offline_unmarked, 1);
  return 0;
}

/* Rebuild the volume's change map X and the trust of every map: X is map
 * A of the newest snapshot; a transient snapshot's maps were never synced,
 * so its own D and the one after it (or X) are lost, as are those next to
 * a transient one whose file is already gone.  Caller owns the origin.
 */
static void
recover_changes (struct fssnap_origin *o, struct found *found, size_t n)
{
  if (o->nsnaps == 0)
    return;
  struct snap *newest = o->snaps[o->nsnaps - 1];
  bool newest_after_lost = true;
  for (size_t i = 0; i < n; i++)
    if (found[i].snap == newest)
      newest_after_lost = found[i].after_lost;
  if (newest->meta && !newest->untrusted && !newest_after_lost) {
    const struct bitmap *a = &newest->meta->durable[META_MAP_AFTER];
    for (uint64_t w = 0; w < (a->nbits + 63) / 64; w++)
      atomic_store (&o->changed.words[w], atomic_load (&a->words[w]));
  }
  else
    o->changed_lost = true;
  for (size_t i = 0; i < n; i++) {
    struct snap *s = found[i].snap;
    bool lost = found[i].gone
                || (s && !s->untrusted && !snap_persistent (s));
    if (!lost)
      continue;
    if (found[i].snap)
      found[i].snap->changed_lost = true;
    struct snap *next = NULL;
    for (size_t k = 0; k < o->nsnaps && !next; k++)
      if (o->snaps[k]->seq > found[i].seq)
        next = o->snaps[k];
    if (next)
      next->changed_lost = true;
    else
      o->changed_lost = true;
  }
}

/* Record the trust of every change map, then remove the files of the
 * transient snapshots that are gone: only once the maps that counted on
 * them say so durably, else the next start would trust them.
 */
static void
recover_remove_gone (struct fssnap_origin *o, struct found *found, size_t n)
{
  int r = 0;
  for (size_t i = 0; i < o->nsnaps; i++)
    if (changes_persist_flags (o, o->snaps[i]) < 0)
      r = -EIO;
  for (size_t i = 0; r == 0 && i < n; i++) {
    if (!found[i].gone)
      continue;
    meta_close (found[i].meta, true);
    store_destroy (found[i].store, true);
    found[i].meta = NULL;
    found[i].store = NULL;
  }
}

int
recover_snapshots (struct fssnap_origin *o)
{
  struct found *found;
  size_t n;
  int r = recover_scan (o, &found, &n);
  if (r < 0 || n == 0) {
    free (found);
    return r;
  }
  for (size_t i = 0; i < n; i++)
    recover_one (o, &found[i]);
  r = recover_chunksize (o, found, n);
  if (r == 0) {
    o->snaps = calloc (n, sizeof *o->snaps);
    o->snaps_alloc = n;
    r = o->snaps ? 0 : -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    struct found *f = &found[i];
    enum meta_state state = f->snap ? f->snap->meta->hdr.state : META_DISABLED;
      if (r == 0 && !f->snap && !f->gone
        && !(f->snap = f->offline ? recover_offline (o, f)
                                  : recover_disabled (o, f)))
      r = -ENOMEM;
    if (r == 0 && f->snap)
      recover_publish (o, f->snap, state);
    else if (f->snap) {
      snap_unref (f->snap);
      f->snap = NULL;
    }
    if (!f->gone) {
      meta_close (f->meta, false);
      store_destroy (f->store, false);
      f->meta = NULL;
      f->store = NULL;
    }
    free (f->path);
  }
  if (r == 0)
    recover_changes (o, found, n);
  if (r == 0)
    r = recover_derive_preserved (o);
  if (r == 0) {
    snap_reap (o);
    recover_remove_gone (o, found, n);
  }
  for (size_t i = 0; i < n; i++) {     /* kept: removed at a later start */
    meta_close (found[i].meta, false);
    store_destroy (found[i].store, false);
  }
  free (found);
  if (r < 0)
    return r;
  engine_log (o, FSSNAP_LOG_INFO, "reopened %zu snapshot file(s) of %s from "
              "%s", n, o->path, o->state_dir);
  return 0;
}
