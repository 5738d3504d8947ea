/* SPDX-License-Identifier: MIT */
/*
 * Writable clones of a snapshot, built on the public API (snapshot reads)
 * and the origin's I/O layer (every file access of a clone goes through
 * it, as the rest of the engine's: the fault and power-loss tests see
 * them).
 *
 * A clone K reads as its base snapshot N except where it was written.
 * Writes go to a sparse overlay file of the volume's size; a bitmap W (one
 * bit per chunk of the origin's chunk size) says which chunks the overlay
 * holds.  The snapshot itself is only read, so it stays exact.
 *
 *   write chunk c:  W[c] set   -> write into the overlay
 *                   W[c] clear -> whole chunk: write it into the overlay;
 *                                 partial: read c from N, merge, write
 *                                 the whole chunk; then set W[c] and
 *                                 append c to the journal
 *   read chunk c:   W[c] ? overlay : snapshot N
 *   zero:           a write of zeros; without FSSNAP_ZERO_NO_HOLE a
 *                   whole chunk (or part of a written one) is a hole
 *                   punched in the overlay instead, W[c] set
 *   trim:           as a zero that may leave holes, except that a partial
 *                   chunk the clone never wrote is left alone (a discard
 *                   promises nothing about what is read back)
 *   flush:          fdatasync the overlay, append a commit record (the
 *                   journal up to here names only durable chunks) and
 *                   fdatasync the journal: the chunks first written since
 *                   the last flush are all a flush writes.  Once the
 *                   journal outgrows the map, the flush also checkpoints:
 *                   W whole (with its CRC) to the map file through a
 *                   temporary file and a rename, then a new journal.
 *
 * Files in the state dir, per clone: ORIGIN.cloneK.data (the overlay),
 * ORIGIN.cloneK.map (header and W, see docs/format.md), ORIGIN.cloneK.log
 * (the journal since the last checkpoint: 16-byte records with a CRC, the
 * boot it was started in, then chunks first written and commits).  The
 * overlay and the journal are written before a write is acknowledged,
 * unsynced: after a kill -9 the page cache still has both, so no
 * acknowledged write is lost; after a power cut only what the last flush
 * covered is promised, as on a disk with a volatile cache.  At open the
 * map is checked, then the journal replayed up to its first bad record:
 * every chunk a commit covers; the chunks after the last commit only when
 * the journal was written in this boot (the kernel's boot_id): after a
 * power cut the page cache is gone, and a record may have reached the
 * disk before its chunk's data.  Then a checkpoint starts a new journal.
 *
 * Each clone holds its base snapshot open: the engine would otherwise
 * free it; fssnapd refuses to delete a snapshot that has clones.
 *
 * Locks, in this order: set->lock (the list, numbers and references),
 * a clone's chunk lock (one of CLONE_LOCKS by chunk number: a copy-up
 * against another write of the same chunk), clone->flush_lock (one
 * flush at a time), clone->lock (W, the journal).
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/bitmap.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "engine/internal.h"

#define CLONE_LOCKS      64
#define CLONE_MAGIC      "FSSNAPCL"
#define CLONE_VERSION    1
#define CLONE_HEADER     128
/* Journal record types. */
#define CLONE_LOG_CHUNK  0x4c434c46u    /* "FLCL": chunk first written */
#define CLONE_LOG_COMMIT 0x43434c46u    /* "FLCC": records before OFFSET
                                           name durable chunks */
#define CLONE_LOG_BOOT   0x42434c46u    /* "FLCB": written in boot ID */
#define CLONE_LOG_REC    16

struct fssnap_clone {
  struct fssnap_clones *set;
  struct fssnap_clone *next;    /* set->lock */
  unsigned refs;                /* set->lock: the list's + each user's */
  unsigned number;
  uint64_t serial;
  unsigned base;
  char base_uuid[FSSNAP_UUID_STRLEN];
  int64_t create_time;
  uint64_t size;
  uint32_t chunksize;
  unsigned shift;
  uint64_t nchunks;
  struct fssnap_snapshot *snap;
  int data_fd, log_fd;
  char *data_path, *map_path, *log_path;
  pthread_mutex_t chunk_locks[CLONE_LOCKS];
  pthread_mutex_t flush_lock;
  pthread_mutex_t lock;
  struct bitmap written;        /* W: bits set under lock */
  uint64_t written_count;       /* lock */
  uint64_t log_len;             /* lock */
  uint64_t log_chunks;          /* lock: chunk records in the journal */
  uint64_t log_committed;       /* flush_lock: how many a commit covers */
  bool deleted;                 /* lock: files removed, never rewritten */
};

struct fssnap_clones {
  struct fssnap_origin *origin;
  const struct fssnap_io *io;   /* the origin's */
  char *state_dir;
  char *basename;
  fssnap_log_fn log;
  void *log_opaque;
  uint64_t boot;                /* this boot (boot_id), for the journals */
  pthread_mutex_t lock;
  struct fssnap_clone *list;    /* lock */
  uint64_t next_serial;         /* lock */
};

static void __attribute__ ((format (printf, 3, 4)))
clone_log (struct fssnap_clones *set, enum fssnap_log_level level,
           const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vsend (set->log, set->log_opaque, "fssnap", level, fmt, ap);
  va_end (ap);
}

/* A read that may run past the end of a file: the rest reads as zeros
 * (the overlay is sparse, and only as long as its last written chunk).
 */
static int
clone_pread (const struct fssnap_io *io, int fd, void *buf, size_t len,
             uint64_t off)
{
  ssize_t n = io_pread_upto (io, fd, buf, len, off);

  if (n < 0)
    return (int) n;
  memset ((char *) buf + n, 0, len - (size_t) n);
  return 0;
}

/* ---- The map file ------------------------------------------------------ */

static size_t
clone_map_words (const struct fssnap_clone *c)
{
  return (c->nchunks + 63) / 64;
}

/* Header: magic[8], version, chunksize, size (8), base, number,
 * create_time (8), base_uuid[40], zeros up to 120, bitmap CRC, header CRC
 * (of bytes 0..123); all little-endian.
 */
static void
clone_header_encode (const struct fssnap_clone *c, uint32_t bitmap_crc,
                     unsigned char *h)
{
  uint32_t v32;
  uint64_t v64;

  memset (h, 0, CLONE_HEADER);
  memcpy (h, CLONE_MAGIC, 8);
  v32 = htole32 (CLONE_VERSION); memcpy (h + 8, &v32, 4);
  v32 = htole32 (c->chunksize); memcpy (h + 12, &v32, 4);
  v64 = htole64 (c->size); memcpy (h + 16, &v64, 8);
  v32 = htole32 (c->base); memcpy (h + 24, &v32, 4);
  v32 = htole32 (c->number); memcpy (h + 28, &v32, 4);
  v64 = htole64 ((uint64_t) c->create_time); memcpy (h + 32, &v64, 8);
  memcpy (h + 40, c->base_uuid, FSSNAP_UUID_STRLEN);
  v32 = htole32 (bitmap_crc); memcpy (h + 120, &v32, 4);
  v32 = htole32 (crc32c (0, h, 124)); memcpy (h + 124, &v32, 4);
}

/* Fill c's identity from a header; -EBADMSG when it fails a check. */
static int
clone_header_decode (struct fssnap_clone *c, const unsigned char *h,
                     uint32_t *bitmap_crc)
{
  uint32_t v32;
  uint64_t v64;

  memcpy (&v32, h + 124, 4);
  if (memcmp (h, CLONE_MAGIC, 8) != 0 || le32toh (v32) != crc32c (0, h, 124))
    return -EBADMSG;
  memcpy (&v32, h + 8, 4);
  if (le32toh (v32) != CLONE_VERSION)
    return -EBADMSG;
  memcpy (&v32, h + 12, 4); c->chunksize = le32toh (v32);
  memcpy (&v64, h + 16, 8); c->size = le64toh (v64);
  memcpy (&v32, h + 24, 4); c->base = le32toh (v32);
  memcpy (&v32, h + 28, 4); c->number = le32toh (v32);
  memcpy (&v64, h + 32, 8); c->create_time = (int64_t) le64toh (v64);
  memcpy (c->base_uuid, h + 40, FSSNAP_UUID_STRLEN);
  c->base_uuid[FSSNAP_UUID_STRLEN - 1] = '\0';
  memcpy (&v32, h + 120, 4); *bitmap_crc = le32toh (v32);
  return 0;
}

static size_t
clone_map_len (const struct fssnap_clone *c)
{
  return CLONE_HEADER + clone_map_words (c) * 8;
}

/* Header and W as they are now, for clone_map_store (NULL: no memory).
 * Caller holds c->lock.
 */
static unsigned char *
clone_map_encode_locked (const struct fssnap_clone *c)
{
  size_t words = clone_map_words (c);
  unsigned char *buf = malloc (clone_map_len (c));

  if (!buf)
    return NULL;
  for (size_t w = 0; w < words; w++) {
    uint64_t v = htole64 (atomic_load (&c->written.words[w]));
    memcpy (buf + CLONE_HEADER + w * 8, &v, 8);
  }
  clone_header_encode (c, crc32c (0, buf + CLONE_HEADER, words * 8), buf);
  return buf;
}

/* Write an encoded map durably (io_replace_file).  Caller holds
 * flush_lock.
 */
static int
clone_map_store (struct fssnap_clone *c, const unsigned char *buf)
{
  return io_replace_file (c->set->io, c->map_path, buf, clone_map_len (c));
}

/* Read and check the map file into c (identity and W). */
static int
clone_map_read (struct fssnap_clone *c, const struct fssnap_origin *o)
{
  unsigned char h[CLONE_HEADER];
  const struct fssnap_io *io = c->set->io;
  uint32_t bitmap_crc;
  int fd = io->open (io->opaque, c->map_path, O_RDONLY | O_CLOEXEC, 0), r;

  if (fd < 0)
    return fd;
  r = clone_pread (io, fd, h, sizeof h, 0);
  if (r == 0)
    r = clone_header_decode (c, h, &bitmap_crc);
  if (r == 0 && (c->size != fssnap_origin_size (o)
                 || c->chunksize != fssnap_origin_chunksize (o)))
    r = -EXDEV;
  if (r == 0) {
    c->shift = __builtin_ctz (c->chunksize);
    c->nchunks = (c->size + c->chunksize - 1) >> c->shift;
    r = bitmap_init (&c->written, c->nchunks);
  }
  if (r == 0) {
    size_t words = clone_map_words (c);
    uint64_t *w = malloc (words * 8 + 1);
    r = w ? clone_pread (io, fd, w, words * 8, CLONE_HEADER) : -ENOMEM;
    if (r == 0 && crc32c (0, w, words * 8) != bitmap_crc)
      r = -EBADMSG;
    for (size_t i = 0; r == 0 && i < words; i++)
      atomic_store (&c->written.words[i], le64toh (w[i]));
    free (w);
  }
  io->close (io->opaque, fd);
  return r;
}

/* ---- The journal ------------------------------------------------------- */

/* A record: value (u64), type (u32), CRC-32C of the first 12 bytes. */
static void
clone_log_record (uint32_t type, uint64_t value, unsigned char *rec)
{
  uint64_t v64 = htole64 (value);
  uint32_t v32 = htole32 (type);

  memcpy (rec, &v64, 8);
  memcpy (rec + 8, &v32, 4);
  v32 = htole32 (crc32c (0, rec, 12));
  memcpy (rec + 12, &v32, 4);
}

/* The record at off, if it passes its check: 0, else -1. */
static int
clone_log_get (struct fssnap_clone *c, uint64_t off, uint32_t *type,
               uint64_t *value)
{
  unsigned char rec[CLONE_LOG_REC], check[CLONE_LOG_REC];
  uint32_t v32;

  if (io_pread_upto (c->set->io, c->log_fd, rec, sizeof rec, off)
      != sizeof rec)
    return -1;
  memcpy (value, rec, 8);
  *value = le64toh (*value);
  memcpy (&v32, rec + 8, 4);
  *type = le32toh (v32);
  clone_log_record (*type, *value, check);
  return memcmp (rec, check, sizeof rec) == 0 ? 0 : -1;
}

/* Append a record.  Caller holds c->lock. */
static int
clone_log_append_locked (struct fssnap_clone *c, uint32_t type,
                         uint64_t value)
{
  unsigned char rec[CLONE_LOG_REC];
  int r;

  clone_log_record (type, value, rec);
  r = io_pwrite_full (c->set->io, c->log_fd, rec, sizeof rec, c->log_len);
  if (r == 0) {
    c->log_len += sizeof rec;
    if (type == CLONE_LOG_CHUNK)
      c->log_chunks++;
  }
  return r;
}

/* Start the journal again with this boot's record, durable, renamed over
 * the old one (whose chunks the map holds), the name durable too (the
 * next commits go to this file).  Caller holds flush_lock and c->lock.
 */
static int
clone_log_restart_locked (struct fssnap_clone *c)
{
  const struct fssnap_io *io = c->set->io;
  unsigned char rec[CLONE_LOG_REC];
  char tmp[4200];
  int fd, r;

  clone_log_record (CLONE_LOG_BOOT, c->set->boot, rec);
  snprintf (tmp, sizeof tmp, "%s.tmp", c->log_path);
  fd = io->open (io->opaque, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                 0600);
  if (fd < 0)
    return fd;
  r = io_pwrite_full (io, fd, rec, sizeof rec, 0);
  if (r == 0)
    r = io->fsync (io->opaque, fd);
  if (r == 0)
    r = io->rename (io->opaque, tmp, c->log_path);
  if (r < 0) {
    io->close (io->opaque, fd);
    io->unlink (io->opaque, tmp);
    return r;
  }
  io->close (io->opaque, c->log_fd);
  c->log_fd = fd;
  c->log_len = sizeof rec;
  c->log_chunks = 0;
  c->log_committed = 0;
  return io_sync_dir (io, c->set->state_dir);
}

/* Set W[chunk] and append it to the journal.  Takes c->lock. */
static int
clone_mark (struct fssnap_clone *c, uint64_t chunk)
{
  int r = 0;

  pthread_mutex_lock (&c->lock);
  if (!bitmap_test (&c->written, chunk)) {
    r = clone_log_append_locked (c, CLONE_LOG_CHUNK, chunk);
    if (r == 0) {
      bitmap_set (&c->written, chunk);
      c->written_count++;
    }
  }
  pthread_mutex_unlock (&c->lock);
  return r;
}

/* Replay the journal into W up to its first bad record: the chunks a
 * commit covers, and the rest only if the journal is of this boot (after
 * a power cut a record may be on disk and its chunk not).  At open only.
 */
static void
clone_log_replay (struct fssnap_clone *c)
{
  uint64_t off, end, covered = 0, value;
  uint32_t type;
  bool same_boot = true;        /* a journal of before boot records */

  for (end = 0; clone_log_get (c, end, &type, &value) == 0;
       end += CLONE_LOG_REC) {
    if (type == CLONE_LOG_BOOT)
      same_boot = value == c->set->boot;
    else if (type == CLONE_LOG_COMMIT && value <= end)
      covered = value;
    else if (type != CLONE_LOG_CHUNK || value >= c->nchunks)
      break;
  }
  for (off = 0; off < end; off += CLONE_LOG_REC)
    if (clone_log_get (c, off, &type, &value) == 0
        && type == CLONE_LOG_CHUNK && (same_boot || off < covered)) {
      bitmap_set (&c->written, value);
      c->log_chunks++;
    }
  c->log_len = end;
  c->written_count = bitmap_count (&c->written);
}

/* Fold the journal into the map and start a new one of this boot: the
 * overlay first, then the map, durable, then the journal.  Caller holds
 * flush_lock; takes c->lock.
 */
static int
clone_checkpoint (struct fssnap_clone *c)
{
  unsigned char *map;
  uint64_t chunks;
  int r = 0;

  bool deleted;

  pthread_mutex_lock (&c->lock);
  deleted = c->deleted;
  map = deleted ? NULL : clone_map_encode_locked (c);
  chunks = c->log_chunks;
  pthread_mutex_unlock (&c->lock);
  if (deleted)                  /* a user still writing: nothing to keep */
    return 0;
  if (!map)
    return -ENOMEM;
  r = c->set->io->fsync (c->set->io->opaque, c->data_fd);
  if (r == 0)
    r = clone_map_store (c, map);
  free (map);
  pthread_mutex_lock (&c->lock);
  /* Chunks journalled after the copy are not in the map: keep them. */
  if (r == 0 && c->log_chunks == chunks && !c->deleted)
    r = clone_log_restart_locked (c);
  pthread_mutex_unlock (&c->lock);
  return r;
}

/* Read and check the boot id of the running kernel: the first 64 bits of
 * /proc/sys/kernel/random/boot_id (FSSNAP_TEST_BOOT_ID instead, for the
 * tests of a power cut); 0 if there is none.
 */
static uint64_t
clone_boot_id (void)
{
  const char *env = getenv ("FSSNAP_TEST_BOOT_ID");
  char line[64] = "";
  uint64_t id = 0;
  int digits = 0;
  FILE *f;

  if (env)
    snprintf (line, sizeof line, "%s", env);
  else if ((f = fopen ("/proc/sys/kernel/random/boot_id", "re"))) {
    if (!fgets (line, sizeof line, f))
      line[0] = '\0';
    fclose (f);
  }
  for (const char *p = line; *p && digits < 16; p++) {
    int v = *p >= '0' && *p <= '9' ? *p - '0'
            : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
    if (v >= 0) {
      id = id << 4 | (uint64_t) v;
      digits++;
    }
  }
  return id;
}

/* ---- Objects ----------------------------------------------------------- */

static void
clone_free (struct fssnap_clone *c)
{
  if (c->snap)
    fssnap_snapshot_close (c->snap);
  if (c->data_fd >= 0)
    c->set->io->close (c->set->io->opaque, c->data_fd);
  if (c->log_fd >= 0)
    c->set->io->close (c->set->io->opaque, c->log_fd);
  for (unsigned i = 0; i < CLONE_LOCKS; i++)
    pthread_mutex_destroy (&c->chunk_locks[i]);
  pthread_mutex_destroy (&c->flush_lock);
  pthread_mutex_destroy (&c->lock);
  bitmap_free (&c->written);
  free (c->data_path);
  free (c->map_path);
  free (c->log_path);
  free (c);
}

static struct fssnap_clone *
clone_alloc (struct fssnap_clones *set, unsigned num)
{
  struct fssnap_clone *c = calloc (1, sizeof *c);

  if (!c)
    return NULL;
  c->set = set;
  c->number = num;
  c->data_fd = c->log_fd = -1;
  for (unsigned i = 0; i < CLONE_LOCKS; i++)
    pthread_mutex_init (&c->chunk_locks[i], NULL);
  pthread_mutex_init (&c->flush_lock, NULL);
  pthread_mutex_init (&c->lock, NULL);
  if (asprintf (&c->data_path, "%s/%s.clone%u.data", set->state_dir,
                set->basename, num) < 0)
    c->data_path = NULL;
  if (asprintf (&c->map_path, "%s/%s.clone%u.map", set->state_dir,
                set->basename, num) < 0)
    c->map_path = NULL;
  if (asprintf (&c->log_path, "%s/%s.clone%u.log", set->state_dir,
                set->basename, num) < 0)
    c->log_path = NULL;
  if (!c->data_path || !c->map_path || !c->log_path) {
    clone_free (c);
    return NULL;
  }
  return c;
}

/* Open the base snapshot and check that it is the recorded one. */
static int
clone_open_base (struct fssnap_clone *c, char *errmsg, size_t errlen)
{
  struct fssnap_snapshot_info info;
  int r = fssnap_snapshot_info (c->set->origin, c->base, &info);

  if (r == 0 && strcmp (info.uuid, c->base_uuid) != 0)
    r = -ESTALE;
  if (r == 0)
    r = fssnap_snapshot_open (c->set->origin, c->base, &c->snap);
  if (r < 0)
    snprintf (errmsg, errlen, "its base, snapshot %u (uuid %s), %s",
              c->base, c->base_uuid, r == -ENOENT || r == -ESTALE
              ? "is gone" : strerror (-r));
  return r;
}

static int
clone_open_files (struct fssnap_clone *c, int flags)
{
  const struct fssnap_io *io = c->set->io;
  int fd = io->open (io->opaque, c->data_path, O_RDWR | O_CLOEXEC | flags,
                     0600);

  if (fd < 0)
    return fd;
  c->data_fd = fd;
  fd = io->open (io->opaque, c->log_path, O_RDWR | O_CLOEXEC | flags, 0600);
  if (fd < 0)
    return fd;
  c->log_fd = fd;
  return 0;
}

/* Link c into the set.  Caller holds set->lock. */
static void
clone_link_locked (struct fssnap_clones *set, struct fssnap_clone *c)
{
  struct fssnap_clone **p = &set->list;

  while (*p && (*p)->number < c->number)
    p = &(*p)->next;
  c->next = *p;
  *p = c;
  c->refs = 1;
  c->serial = set->next_serial++;
}

static struct fssnap_clone *
clone_find_locked (struct fssnap_clones *set, unsigned num)
{
  struct fssnap_clone *c = set->list;

  while (c && c->number != num)
    c = c->next;
  return c;
}

/* Reopen clone num from its files, or log why not. */
static void
clone_reopen (struct fssnap_clones *set, unsigned num)
{
  struct fssnap_clone *c = clone_alloc (set, num);
  char why[512] = "";
  int r;

  if (!c)
    return;
  r = clone_map_read (c, set->origin);
  if (r < 0)
    snprintf (why, sizeof why, "%s %s", c->map_path,
              r == -EBADMSG ? "fails its check"
              : r == -EXDEV ? "belongs to a volume of another size or "
                              "chunk size" : strerror (-r));
  if (r == 0 && c->number != num) {
    snprintf (why, sizeof why, "%s names clone %u", c->map_path, c->number);
    r = -EBADMSG;
  }
  if (r == 0 && (r = clone_open_files (c, 0)) < 0)
    snprintf (why, sizeof why, "%s: %s", c->data_path, strerror (-r));
  if (r == 0)
    r = clone_open_base (c, why, sizeof why);
  if (r < 0) {
    clone_log (set, FSSNAP_LOG_ERR, "clone %u is not served: %s (its files "
               "are kept)", num, why);
    clone_free (c);
    return;
  }
  clone_log_replay (c);
  /* A journal of this boot from here on (see clone_log_replay). */
  pthread_mutex_lock (&c->flush_lock);
  r = clone_checkpoint (c);
  pthread_mutex_unlock (&c->flush_lock);
  if (r < 0)
    clone_log (set, FSSNAP_LOG_WARN, "clone %u: cannot fold its journal "
               "into %s: %s (until a flush does, a kill -9 may lose its "
               "writes not flushed)", num, c->map_path, strerror (-r));
  pthread_mutex_lock (&set->lock);
  clone_link_locked (set, c);
  pthread_mutex_unlock (&set->lock);
}

int
fssnap_clones_open (struct fssnap_origin *o, const char *state_dir,
                    fssnap_log_fn log, void *log_opaque,
                    struct fssnap_clones **setp)
{
  struct fssnap_clones *set = calloc (1, sizeof *set);
  const char *path = fssnap_origin_path (o), *slash = strrchr (path, '/');
  struct dirent *de;
  DIR *d;

  if (!set)
    return -ENOMEM;
  set->origin = o;
  set->io = o->io;
  set->log = log;
  set->log_opaque = log_opaque;
  set->boot = clone_boot_id ();
  set->state_dir = strdup (state_dir);
  set->basename = strdup (slash ? slash + 1 : path);
  pthread_mutex_init (&set->lock, NULL);
  if (!set->state_dir || !set->basename) {
    fssnap_clones_close (set);
    return -ENOMEM;
  }
  d = opendir (state_dir);
  while (d && (de = readdir (d))) {
    size_t n = strlen (set->basename);
    char check[512];
    unsigned num;
    if (strncmp (de->d_name, set->basename, n) != 0
        || sscanf (de->d_name + n, ".clone%u", &num) != 1
        || num >= FSSNAP_MAX_CLONES)
      continue;
    snprintf (check, sizeof check, "%s.clone%u.map", set->basename, num);
    if (strcmp (check, de->d_name) == 0)
      clone_reopen (set, num);
  }
  if (d)
    closedir (d);
  *setp = set;
  return 0;
}

/* Drop a reference; the last one frees.  Takes set->lock. */
void
fssnap_clone_put (struct fssnap_clone *c)
{
  struct fssnap_clones *set = c->set;
  bool last;

  pthread_mutex_lock (&set->lock);
  last = --c->refs == 0;
  pthread_mutex_unlock (&set->lock);
  if (last)
    clone_free (c);
}

void
fssnap_clones_close (struct fssnap_clones *set)
{
  struct fssnap_clone *c;

  if (!set)
    return;
  while ((c = set->list)) {
    int r = fssnap_clone_flush (c);
    if (r < 0)
      clone_log (set, FSSNAP_LOG_ERR, "clone %u: flush at close: %s",
                 c->number, strerror (-r));
    pthread_mutex_lock (&set->lock);
    set->list = c->next;
    pthread_mutex_unlock (&set->lock);
    fssnap_clone_put (c);
  }
  pthread_mutex_destroy (&set->lock);
  free (set->state_dir);
  free (set->basename);
  free (set);
}

/* The lowest free number.  Caller holds set->lock. */
static int
clone_free_number_locked (struct fssnap_clones *set)
{
  for (unsigned n = 0; n < FSSNAP_MAX_CLONES; n++)
    if (!clone_find_locked (set, n))
      return (int) n;
  return -ENOSPC;
}

static void
clone_unlink_files (struct fssnap_clone *c)
{
  const struct fssnap_io *io = c->set->io;

  /* The record first: no half clone later. */
  io->unlink (io->opaque, c->map_path);
  io->unlink (io->opaque, c->data_path);
  io->unlink (io->opaque, c->log_path);
  io_sync_dir (io, c->set->state_dir);
}

/* A new clone's files, its map durable last (the overlay starts empty:
 * reads past its end are zeros, and only chunks W names are read).
 */
static int
clone_make_files (struct fssnap_clone *c, char *errmsg, size_t errlen)
{
  int r = clone_open_files (c, O_CREAT | O_EXCL);

  if (r == 0) {
    pthread_mutex_lock (&c->flush_lock);
    r = clone_checkpoint (c);
    pthread_mutex_unlock (&c->flush_lock);
  }
  if (r < 0)
    snprintf (errmsg, errlen, "cannot create the overlay of clone %u in %s: "
              "%s", c->number, c->set->state_dir, strerror (-r));
  return r;
}

int
fssnap_clones_create (struct fssnap_clones *set, unsigned snap,
                      unsigned *nump, char *errmsg, size_t errlen)
{
  struct fssnap_snapshot_info info;
  struct fssnap_clone *c;
  int num, r;

  *errmsg = '\0';
  r = fssnap_snapshot_info (set->origin, snap, &info);
  if (r == 0 && info.state != FSSNAP_STATE_IDLE
      && info.state != FSSNAP_STATE_ACTIVE)
    r = -EIO;
  if (r < 0) {
    snprintf (errmsg, errlen, r == -ENOENT ? "no snapshot %u"
              : "snapshot %u cannot be read", snap);
    return r;
  }
  pthread_mutex_lock (&set->lock);
  num = clone_free_number_locked (set);
  c = num >= 0 ? clone_alloc (set, (unsigned) num) : NULL;
  pthread_mutex_unlock (&set->lock);
  if (!c) {
    snprintf (errmsg, errlen, num < 0 ? "too many clones (at most %d)"
              : "out of memory", FSSNAP_MAX_CLONES);
    return num < 0 ? num : -ENOMEM;
  }
  c->base = snap;
  memcpy (c->base_uuid, info.uuid, sizeof c->base_uuid);
  c->create_time = time (NULL);
  c->size = fssnap_origin_size (set->origin);
  c->chunksize = fssnap_origin_chunksize (set->origin);
  c->shift = __builtin_ctz (c->chunksize);
  c->nchunks = (c->size + c->chunksize - 1) >> c->shift;
  r = bitmap_init (&c->written, c->nchunks);
  if (r == 0)
    r = clone_open_base (c, errmsg, errlen);
  if (r == 0 && (r = clone_make_files (c, errmsg, errlen)) < 0)
    clone_unlink_files (c);
  pthread_mutex_lock (&set->lock);
  if (r == 0 && clone_find_locked (set, c->number)) {
    snprintf (errmsg, errlen, "clone %u was created meanwhile", c->number);
    r = -EEXIST;
  } else if (r == 0)
    clone_link_locked (set, c);
  pthread_mutex_unlock (&set->lock);
  if (r < 0) {
    clone_free (c);
    return r;
  }
  *nump = c->number;
  return 0;
}

int
fssnap_clones_delete (struct fssnap_clones *set, unsigned num)
{
  struct fssnap_clone *c, **p;

  pthread_mutex_lock (&set->lock);
  for (p = &set->list; *p && (*p)->number != num; p = &(*p)->next)
    ;
  c = *p;
  if (c)
    *p = c->next;
  pthread_mutex_unlock (&set->lock);
  if (!c)
    return -ENOENT;
  /* Under flush_lock, so that no flush is renaming a map meanwhile. */
  pthread_mutex_lock (&c->flush_lock);
  pthread_mutex_lock (&c->lock);
  c->deleted = true;
  pthread_mutex_unlock (&c->lock);
  clone_unlink_files (c);
  pthread_mutex_unlock (&c->flush_lock);
  fssnap_clone_put (c);         /* users keep theirs until they close */
  return 0;
}

int
fssnap_clones_list (struct fssnap_clones *set, unsigned *nums, size_t max)
{
  struct fssnap_clone *c;
  int n = 0;

  pthread_mutex_lock (&set->lock);
  for (c = set->list; c; c = c->next, n++)
    if ((size_t) n < max)
      nums[n] = c->number;
  pthread_mutex_unlock (&set->lock);
  return n;
}

int
fssnap_clone_get (struct fssnap_clones *set, unsigned num,
                  struct fssnap_clone **cp)
{
  struct fssnap_clone *c;

  pthread_mutex_lock (&set->lock);
  c = clone_find_locked (set, num);
  if (c)
    c->refs++;
  pthread_mutex_unlock (&set->lock);
  *cp = c;
  return c ? 0 : -ENOENT;
}

void
fssnap_clone_info (struct fssnap_clone *c, struct fssnap_clone_info *info)
{
  memset (info, 0, sizeof *info);
  info->number = c->number;
  info->serial = c->serial;
  info->base = c->base;
  memcpy (info->base_uuid, c->base_uuid, sizeof info->base_uuid);
  info->size = c->size;
  info->chunksize = c->chunksize;
  info->create_time = c->create_time;
  snprintf (info->overlay_path, sizeof info->overlay_path, "%s",
            c->data_path);
  pthread_mutex_lock (&c->lock);
  info->written_chunks = c->written_count;
  pthread_mutex_unlock (&c->lock);
}

int
fssnap_clones_info (struct fssnap_clones *set, unsigned num,
                    struct fssnap_clone_info *info)
{
  struct fssnap_clone *c;
  int r = fssnap_clone_get (set, num, &c);

  if (r == 0) {
    fssnap_clone_info (c, info);
    fssnap_clone_put (c);
  }
  return r;
}

uint64_t
fssnap_clone_size (const struct fssnap_clone *c)
{
  return c->size;
}

/* ---- I/O ---------------------------------------------------------------- */

static pthread_mutex_t *
clone_chunk_lock (struct fssnap_clone *c, uint64_t chunk)
{
  return &c->chunk_locks[chunk % CLONE_LOCKS];
}

int
fssnap_clone_read (struct fssnap_clone *c, void *buf, size_t len,
                   uint64_t off)
{
  if (off > c->size || len > c->size - off)
    return -EINVAL;
  while (len > 0) {
    uint64_t chunk = off >> c->shift;
    size_t n = c->chunksize - (off & (c->chunksize - 1));
    int r;
    if (n > len)
      n = len;
    /* W[c] is set only once the overlay holds the whole chunk. */
    if (bitmap_test (&c->written, chunk))
      r = clone_pread (c->set->io, c->data_fd, buf, n, off);
    else
      r = fssnap_snapshot_read (c->snap, buf, n, off);
    if (r < 0)
      return r;
    buf = (char *) buf + n;
    off += n;
    len -= n;
  }
  return 0;
}

/* What a request puts into the chunks it covers. */
enum clone_fill {
  CLONE_FILL_DATA,              /* the caller's bytes */
  CLONE_FILL_ZEROS,             /* zeros, allocated */
  CLONE_FILL_HOLE,              /* zeros, a hole where the overlay can */
  CLONE_FILL_TRIM,              /* a hole, or nothing in an unwritten part */
};

/* The bytes of chunk: chunksize, less for the last one. */
static size_t
clone_chunk_bytes (const struct fssnap_clone *c, uint64_t chunk)
{
  uint64_t start = chunk << c->shift;
  return c->size - start < c->chunksize ? c->size - start : c->chunksize;
}

/* Punch [off, off+n) out of the overlay: a regular file, where a hole
 * reads as zeros.  -EOPNOTSUPP where its file system cannot punch.
 */
static int
clone_punch (struct fssnap_clone *c, uint64_t off, size_t n)
{
  const struct fssnap_io *io = c->set->io;
  return io->discard (io->opaque, c->data_fd, (off_t) off, (off_t) n);
}

/* Write [off, off+n) inside one chunk, its chunk lock held: into the
 * overlay if W[chunk] is set, else as a copy up (the base chunk merged
 * with the new bytes, then W[chunk]).  data NULL: zeros.
 */
static int
clone_fill_bytes (struct fssnap_clone *c, uint64_t chunk, const void *data,
                  size_t n, uint64_t off, unsigned char *scratch)
{
  uint64_t start = chunk << c->shift;
  size_t whole = clone_chunk_bytes (c, chunk);
  int r;

  if (bitmap_test (&c->written, chunk)) {
    if (!data) {
      memset (scratch, 0, n);
      data = scratch;
    }
    return io_pwrite_full (c->set->io, c->data_fd, data, n, off);
  }
  r = n == whole ? 0 : fssnap_snapshot_read (c->snap, scratch, whole, start);
  if (r < 0)
    return r;
  if (data)
    memcpy (scratch + (off - start), data, n);
  else
    memset (scratch + (off - start), 0, n);
  r = io_pwrite_full (c->set->io, c->data_fd, scratch, whole, start);
  return r < 0 ? r : clone_mark (c, chunk);
}

/* Fill [off, off+n) inside one chunk.  A hole is punched where the
 * overlay decides what is read: a written chunk, or a whole one (then
 * W[chunk] is set after the punch, so that it never reads stale bytes);
 * where the file system cannot punch, zeros are written.  Takes the
 * chunk's lock, then c->lock (clone_mark).
 */
static int
clone_fill_chunk (struct fssnap_clone *c, enum clone_fill fill,
                  const void *data, size_t n, uint64_t off,
                  unsigned char *scratch)
{
  uint64_t chunk = off >> c->shift;
  size_t whole = clone_chunk_bytes (c, chunk);
  pthread_mutex_t *lock = clone_chunk_lock (c, chunk);
  bool written;
  int r = -EOPNOTSUPP;

  pthread_mutex_lock (lock);
  written = bitmap_test (&c->written, chunk);
  if (fill == CLONE_FILL_TRIM && !written && n != whole) {
    pthread_mutex_unlock (lock);
    return 0;
  }
  if ((fill == CLONE_FILL_HOLE || fill == CLONE_FILL_TRIM)
      && (written || n == whole)) {
    r = clone_punch (c, off, n);
    if (r == 0 && !written)
      r = clone_mark (c, chunk);
  }
  if (r == -EOPNOTSUPP)
    r = clone_fill_bytes (c, chunk, fill == CLONE_FILL_DATA ? data : NULL,
                          n, off, scratch);
  pthread_mutex_unlock (lock);
  return r;
}

static int
clone_modify (struct fssnap_clone *c, enum clone_fill fill, const void *buf,
              size_t len, uint64_t off, unsigned flags)
{
  unsigned char *scratch;
  int r = 0;

  if (off > c->size || len > c->size - off)
    return -EINVAL;
  scratch = malloc (c->chunksize);
  if (!scratch)
    return -ENOMEM;
  while (r == 0 && len > 0) {
    size_t n = c->chunksize - (off & (c->chunksize - 1));
    if (n > len)
      n = len;
    r = clone_fill_chunk (c, fill, buf, n, off, scratch);
    if (buf)
      buf = (const char *) buf + n;
    off += n;
    len -= n;
  }
  free (scratch);
  if (r == 0 && (flags & FSSNAP_FUA))
    r = fssnap_clone_flush (c);
  return r;
}

int
fssnap_clone_write (struct fssnap_clone *c, const void *buf, size_t len,
                    uint64_t off, unsigned flags)
{
  return clone_modify (c, CLONE_FILL_DATA, buf, len, off, flags);
}

int
fssnap_clone_zero (struct fssnap_clone *c, size_t len, uint64_t off,
                   unsigned flags)
{
  return clone_modify (c, flags & FSSNAP_ZERO_NO_HOLE ? CLONE_FILL_ZEROS
                                                      : CLONE_FILL_HOLE,
                       NULL, len, off, flags);
}

int
fssnap_clone_trim (struct fssnap_clone *c, size_t len, uint64_t off,
                   unsigned flags)
{
  return clone_modify (c, CLONE_FILL_TRIM, NULL, len, off, flags);
}

/* The overlay durable, then a commit record covering every chunk
 * journalled before, durable: nothing but the new chunks' records is
 * written.  Once the journal outgrows the map, a checkpoint instead.
 * Takes flush_lock, then c->lock.
 */
int
fssnap_clone_flush (struct fssnap_clone *c)
{
  uint64_t covered, chunks;
  bool big;
  int r = 0;

  pthread_mutex_lock (&c->flush_lock);
  pthread_mutex_lock (&c->lock);
  covered = c->log_len;
  chunks = c->log_chunks;
  big = covered > clone_map_len (c);
  pthread_mutex_unlock (&c->lock);
  if (big)
    r = clone_checkpoint (c);
  else
    r = c->set->io->fsync (c->set->io->opaque, c->data_fd);
  if (r == 0 && !big && chunks > c->log_committed) {
    pthread_mutex_lock (&c->lock);
    r = clone_log_append_locked (c, CLONE_LOG_COMMIT, covered);
    pthread_mutex_unlock (&c->lock);
    if (r == 0)
      r = c->set->io->fsync (c->set->io->opaque, c->log_fd);
    if (r == 0)
      c->log_committed = chunks;
  }
  pthread_mutex_unlock (&c->flush_lock);
  return r;
}
