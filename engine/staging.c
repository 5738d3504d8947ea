/* SPDX-License-Identifier: MIT */
/*
 * Write-back staging: durable snapshots at the speed of transient ones.
 *
 * A write that overwrites chunks whose copies wait for a commit epoch
 * (commit.c) need not wait for that epoch: block devices promise only that
 * a FLUSH (or FUA) makes what it covers durable.  What snapshots need is
 * that the new data does not reach the origin before the copies and the
 * bits that point to them are durable.  So such a write is staged:
 *
 *   1. the copy-on-write path (cow.c) has copied the old contents of its
 *      chunks into memory and logged their bits in epoch E;
 *   2. the change (write, write-zeroes or trim) is appended, with a
 *      checksum and a sequence number, to the staging log in the state dir
 *      (written, not synced) and kept in memory; the write is acknowledged;
 *   3. the applier thread waits until E commits, then applies staged
 *      changes to the origin in sequence order and notes in the log's
 *      header which sequence number is on the origin (the marker);
 *   4. FLUSH and FUA wait until the changes they cover are applied, fsync
 *      the origin, then fsync the log (so nothing on the origin is ever
 *      replayed over a later write they covered).
 *
 * A write that made a copy but waits for no epoch (transient snapshots)
 * is staged too: after the copy, its origin write is the slow part of a
 * first touch, and the applier takes it off the writer's path.
 *
 * While changes are staged, every later change is staged too, behind them,
 * so changes reach the origin in the order they were acknowledged; reads
 * of the volume see the origin with the staged changes laid over it, in
 * order (a trim reads as zeros, as it will from a file once applied).
 * Creating a snapshot applies everything staged first (staging_wait under
 * io_lock exclusive), so a snapshot holds every acknowledged write.
 *
 * Killed (kill -9), we lose memory but not the page cache: the log holds
 * every acknowledged change, and the origin still holds the old contents
 * of every chunk whose epoch had not committed (a staged change reaches
 * the origin only after its epoch), so the copy the snapshot needs is
 * still there.  At the next start (staging_start) every logged change
 * after the marker is replayed in order through the ordinary copy-on-write
 * path, synchronously: chunks whose copies became durable are not copied
 * again, the others are copied from the origin as it is, which is what
 * the snapshots read; re-applying a change already on the origin writes
 * the same bytes again.  A power cut may lose unflushed changes, as on any
 * disk: the log is replayed up to its first missing or damaged record.
 * A log that cannot be read (a fault, not damage) refuses the open and
 * stays for the next one.
 *
 * Faults: a change the applier cannot put on the origin, or whose marker
 * it cannot write, stays staged (in memory, in the log, seen by reads)
 * and is retried every RETRY_MS; meanwhile FLUSH, FUA and snapshot
 * create fail with the error, and a close keeps the log for the next
 * start.  Applying a change again writes the same bytes: nothing reaches
 * the origin past a change that is still staged.
 *
 * The log (format in docs/format.md): a 512-byte header at offset 0
 * (applied marker, offset of the first record after it), then records in
 * a ring from offset 4096, each 512-byte aligned, never overwriting a
 * record the header does not yet mark as applied; the space of records
 * it marks applied is punched out, so the file holds about what is
 * staged (at most max_mem) in the state dir.
 *
 * Memory: staged records (header and data) take at most max_mem bytes (the
 * same bound as copies in memory, so copies and staged data together stay
 * under twice max_mem); a writer that would exceed it waits.  A change
 * larger than that bound is not staged: it waits for its epoch and for the
 * staged changes before it, as writes did before staging.
 *
 * Locks: staging->lock is a leaf (taken under io_lock shared by writers;
 * nothing is taken while holding it).  The log is appended to under it, so
 * the log's order is the order of acknowledgement.  The applier holds no
 * lock while it waits for epochs or writes the origin.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/crc32c.h"
#include "engine/internal.h"
#include "engine/staging.h"

#define LOG_HDR_SIZE 512
#define LOG_START 4096
#define REC_HDR_SIZE 64
#define REC_ALIGN 512
#define APPLY_BATCH 256
#define RETRY_MS 20                     /* after a failed apply */
static const char log_magic[8] = "FSSNAPSL";
static const char rec_magic[8] = "FSSNAPSR";

struct srec {
  struct srec *next;
  uint64_t seq, epoch, off, len;
  enum staging_kind kind;
  uint64_t log_off;
  size_t log_size;              /* bytes in the log, and charged */
  unsigned char *buf;           /* the record as logged; data at +64 */
};

struct staging {
  pthread_mutex_t lock;
  pthread_cond_t room;          /* bytes or ring space freed */
  pthread_cond_t work;          /* a record arrived, or stop */
  pthread_cond_t applied_cond;  /* applied_seq moved */
  struct srec *head, *tail;
  _Atomic uint64_t count;       /* records staged */
  uint64_t next_seq;            /* next record's number */
  uint64_t applied_seq;         /* on the origin (and in the marker) */
  uint64_t marker_synced;       /* the marker's durable value */
  uint64_t bytes, bytes_peak, max_bytes;
  uint64_t ring_end;            /* records lie in [LOG_START, ring_end) */
  uint64_t write_off;           /* where the next record goes */
  uint64_t staged_total;
  uint64_t waits;               /* writers that waited for room */
  int fd;                       /* the log; -1 until first needed */
  char *path;
  int failing;                  /* the head cannot be applied: errno */
  bool stopping;
  bool running;
  pthread_t applier;
};

static void
put_le32 (unsigned char *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static void
put_le64 (unsigned char *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

static uint32_t
get_le32 (const unsigned char *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static uint64_t
get_le64 (const unsigned char *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

static size_t
rec_size (size_t payload)
{
  return (REC_HDR_SIZE + payload + REC_ALIGN - 1) / REC_ALIGN * REC_ALIGN;
}

/* Record header: magic, header crc (over the 64 bytes with it zeroed),
 * kind, data crc, seq, off, len, data bytes.
 */
static void
rec_seal (unsigned char *b, uint64_t seq)
{
  put_le64 (b + 24, seq);
  put_le32 (b + 8, 0);
  put_le32 (b + 8, crc32c (0, b, REC_HDR_SIZE));
}

static bool
rec_header_ok (const unsigned char *b, uint64_t seq)
{
  unsigned char copy[REC_HDR_SIZE];
  memcpy (copy, b, REC_HDR_SIZE);
  put_le32 (copy + 8, 0);
  return memcmp (b, rec_magic, 8) == 0
    && get_le32 (b + 8) == crc32c (0, copy, REC_HDR_SIZE)
    && get_le64 (b + 24) == seq;
}

int
staging_init (struct fssnap_origin *o)
{
  struct staging *st = calloc (1, sizeof *st);
  if (!st)
    return -ENOMEM;
  pthread_mutex_init (&st->lock, NULL);
  pthread_cond_init (&st->room, NULL);
  pthread_cond_init (&st->work, NULL);
  pthread_cond_init (&st->applied_cond, NULL);
  st->fd = -1;
  st->next_seq = 1;
  st->max_bytes = o->max_mem;
  st->ring_end = LOG_START + 2 * o->max_mem + 2 * REC_ALIGN;
  st->write_off = LOG_START;
  o->staging = st;
  return 0;
}

void
staging_free (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  if (!st)
    return;
  if (st->fd >= 0)              /* an open that failed after reopening it */
    o->io->close (o->io->opaque, st->fd);
  while (st->head) {            /* left by a failure: they are in the log */
    struct srec *next = st->head->next;
    free (st->head->buf);
    free (st->head);
    st->head = next;
  }
  pthread_mutex_destroy (&st->lock);
  pthread_cond_destroy (&st->room);
  pthread_cond_destroy (&st->work);
  pthread_cond_destroy (&st->applied_cond);
  free (st->path);
  free (st);
  o->staging = NULL;
}

/* Write the header: everything up to 'applied' is on the origin, the next
 * record is at head_off.  Caller holds staging->lock or runs alone.
 */
static int
staging_write_header (struct fssnap_origin *o, uint64_t applied,
                      uint64_t head_off)
{
  struct staging *st = o->staging;
  unsigned char h[LOG_HDR_SIZE] = { 0 };
  memcpy (h, log_magic, 8);
  put_le32 (h + 12, 1);                 /* version */
  put_le64 (h + 16, applied);
  put_le64 (h + 24, head_off);
  put_le32 (h + 8, crc32c (0, h, sizeof h));
  return io_pwrite_full (o->io, st->fd, h, sizeof h, 0);
}

static bool
staging_header_ok (const unsigned char *h, uint64_t *applied,
                   uint64_t *head_off)
{
  unsigned char copy[LOG_HDR_SIZE];
  memcpy (copy, h, sizeof copy);
  put_le32 (copy + 8, 0);
  if (memcmp (h, log_magic, 8) != 0
      || get_le32 (h + 8) != crc32c (0, copy, sizeof copy)
      || get_le32 (h + 12) != 1)
    return false;
  *applied = get_le64 (h + 16);
  *head_off = get_le64 (h + 24);
  return *head_off >= LOG_START;
}

static int
staging_path (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  if (st->path)
    return 0;
  size_t n = strlen (o->state_dir) + strlen (o->basename) + 16;
  st->path = malloc (n);
  if (!st->path)
    return -ENOMEM;
  snprintf (st->path, n, "%s/%s.staging", o->state_dir, o->basename);
  return 0;
}

/* Create the log (first staged change of this run, or after a replay):
 * a durable header before any record.  Caller holds staging->lock or runs
 * alone.
 */
static int
staging_create_log (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  int r = staging_path (o);
  if (r < 0)
    return r;
  if (st->fd < 0) {
    r = st->fd = o->io->open (o->io->opaque, st->path, O_RDWR | O_CREAT,
                              0600);
    if (r < 0) {
      st->fd = -1;
      return r;
    }
  }
  st->write_off = LOG_START;
  r = staging_write_header (o, st->next_seq - 1, LOG_START);
  if (r == 0)
    r = o->io->fsync (o->io->opaque, st->fd);
  if (r == 0)
    r = origin_sync_state_dir (o);
  if (r == 0)
    st->marker_synced = st->next_seq - 1;
  return r;
}

/* Whether the log ends before 'end' (a read there fails with -EIO as
 * the end of the file: a record a crash cut off, not a fault).
 */
static bool
staging_past_end (struct fssnap_origin *o, uint64_t end)
{
  uint64_t size;
  return o->io->getsize (o->io->opaque, o->staging->fd, &size) == 0
    && size < end;
}

/* ---- Replay at start --------------------------------------------------- */

/* Read the record with number seq at off, or at the ring's start if it
 * wrapped there, into *bp: 1; 0 if neither holds it intact (the end of
 * the log); a negative errno if the log cannot be read (a fault, which
 * proves nothing about the log).
 */
static int
staging_read_rec (struct fssnap_origin *o, uint64_t *offp, uint64_t seq,
                  unsigned char **bp)
{
  struct staging *st = o->staging;
  uint64_t tries[2] = { *offp, LOG_START };
  for (int i = 0; i < (*offp == LOG_START ? 1 : 2); i++) {
    unsigned char h[REC_HDR_SIZE];
    int r = io_pread_full (o->io, st->fd, h, sizeof h, tries[i]);
    if (r == -EIO && staging_past_end (o, tries[i] + sizeof h))
      continue;                 /* a record cut off by the end */
    if (r < 0)
      return r;
    if (!rec_header_ok (h, seq))
      continue;
    uint64_t off = get_le64 (h + 32), len = get_le64 (h + 40);
    uint64_t data = get_le64 (h + 48);
    enum staging_kind kind = get_le32 (h + 16);
    if (kind < STAGING_WRITE || kind > STAGING_ZERO_ALLOC || off > o->size
        || len > o->size - off || (kind == STAGING_WRITE && data != len)
        || (kind != STAGING_WRITE && data != 0))
      continue;
    unsigned char *b = malloc (REC_HDR_SIZE + data);
    if (!b)
      return -ENOMEM;
    memcpy (b, h, sizeof h);
    r = io_pread_full (o->io, st->fd, b + REC_HDR_SIZE, data,
                       tries[i] + REC_HDR_SIZE);
    if (r == 0 && crc32c (0, b + REC_HDR_SIZE, data) == get_le32 (b + 20)) {
      *offp = tries[i] + rec_size (data);
      *bp = b;
      return 1;
    }
    free (b);
    if (r < 0 && !(r == -EIO && staging_past_end (o, tries[i] + REC_HDR_SIZE
                                                     + data)))
      return r;
  }
  return 0;
}

/* Replay what the log holds after its marker; 1 if it has no valid
 * header (then it holds nothing acknowledged).  Runs alone, at open.
 */
static int
staging_replay (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  unsigned char h[LOG_HDR_SIZE];
  uint64_t applied, off;
  int r = io_pread_full (o->io, st->fd, h, sizeof h, 0);
  if (r < 0 && !(r == -EIO && staging_past_end (o, sizeof h)))
    return r;                   /* a fault: keep the log for the next try */
  if (r < 0 || !staging_header_ok (h, &applied, &off)) {
    engine_log (o, FSSNAP_LOG_WARN, "staging log %s has no valid header "
                "(a crash as it was created): nothing to replay; removed",
                st->path);
    return 1;
  }
  uint64_t n = 0;
  unsigned char *b;
  while ((r = staging_read_rec (o, &off, applied + 1, &b)) == 1) {
    r = origin_change_now (o, get_le32 (b + 16), b + REC_HDR_SIZE,
                           get_le64 (b + 40), get_le64 (b + 32));
    free (b);
    if (r < 0) {
      engine_log (o, FSSNAP_LOG_ERR, "replaying staged change %llu from %s: "
                  "%s", (unsigned long long) applied + 1, st->path,
                  strerror (-r));
      return r;
    }
    applied++;
    n++;
  }
  if (r < 0) {
    engine_log (o, FSSNAP_LOG_ERR, "reading staged change %llu from %s: %s",
                (unsigned long long) applied + 1, st->path, strerror (-r));
    return r;
  }
  if (n > 0) {
    engine_log (o, FSSNAP_LOG_WARN, "replayed %llu staged changes from %s "
                "(left by a crash)", (unsigned long long) n, st->path);
    r = o->io->fsync (o->io->opaque, o->fd);
    if (r < 0)
      return r;
  }
  st->next_seq = applied + 1;
  st->applied_seq = applied;
  return 0;
}

/* ---- The applier ------------------------------------------------------- */

/* Free the log's space in [from, to), records the header marks applied:
 * the log takes about as much room in the state dir as is staged, not
 * its whole ring.  Only advice: a failure leaves the space used.  Caller
 * holds staging->lock.
 */
static void
staging_punch (struct fssnap_origin *o, uint64_t from, uint64_t to)
{
  if (to > from)
    o->io->discard (o->io->opaque, o->staging->fd, from, to - from);
}

/* Mark records up to 'last' applied in the log header, then drop them;
 * if the header cannot be written they stay (applied again later, which
 * writes the same bytes: nothing was applied after them).  Caller holds
 * staging->lock.
 */
static int
staging_retire_locked (struct fssnap_origin *o, struct srec *last)
{
  struct staging *st = o->staging;
  uint64_t head_off = last->next ? last->next->log_off : st->write_off;
  int r = staging_write_header (o, last->seq, head_off);
  if (r < 0)
    return r;
  struct srec *p = st->head;
  st->head = last->next;
  if (!st->head)
    st->tail = NULL;
  st->applied_seq = last->seq;
  uint64_t run_off = p->log_off, run_end = p->log_off;
  while (p != st->head) {
    struct srec *next = p->next;
    if (p->log_off != run_end) {        /* the ring wrapped */
      staging_punch (o, run_off, run_end);
      run_off = p->log_off;
    }
    run_end = p->log_off + p->log_size;
    st->bytes -= p->log_size;
    atomic_fetch_sub (&st->count, 1);
    free (p->buf);
    free (p);
    p = next;
  }
  staging_punch (o, run_off, run_end);
  pthread_cond_broadcast (&st->room);
  pthread_cond_broadcast (&st->applied_cond);
  return 0;
}

/* After a batch: note whether it failed (r), wake the waiters (they
 * return the error), and wait a little before a retry.  A change that
 * cannot be applied stays staged (in memory, in the log, seen by reads)
 * and is retried: a transient fault loses no acknowledged write.  Caller
 * holds staging->lock.
 */
static void
staging_note_locked (struct fssnap_origin *o, int r)
{
  struct staging *st = o->staging;
  if (r < 0 && !st->failing)
    engine_log (o, FSSNAP_LOG_ERR, "applying staged changes to %s: %s; "
                "they stay staged and are retried, flushes fail meanwhile",
                o->path, strerror (-r));
  else if (r == 0 && st->failing)
    engine_log (o, FSSNAP_LOG_INFO, "staged changes reach %s again", o->path);
  st->failing = r < 0 ? r : 0;
  if (r == 0)
    return;
  pthread_cond_broadcast (&st->applied_cond);
  if (st->stopping)
    return;
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_nsec += RETRY_MS * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait (&st->work, &st->lock, &ts);
}

static void *
staging_main (void *arg)
{
  struct fssnap_origin *o = arg;
  struct staging *st = o->staging;
  pthread_mutex_lock (&st->lock);
  for (;;) {
    while (!st->head && !st->stopping)
      pthread_cond_wait (&st->work, &st->lock);
    if (!st->head || (st->stopping && st->failing))
      break;                    /* what failed stays in the log */
    struct srec *rec = st->head, *last = NULL;
    pthread_mutex_unlock (&st->lock);
    commit_wait (o, rec->epoch);        /* holding no lock */
    /* Only this thread removes records, so rec stays; appends only add
     * after the tail, so next is read under the lock.
     */
    int r = 0;
    for (unsigned n = 0; rec && n < APPLY_BATCH; n++) {
      if (rec->epoch > atomic_load (&o->committed_epoch))
        break;
      r = origin_apply_change (o, rec->kind, rec->buf + REC_HDR_SIZE,
                               rec->len, rec->off);
      if (r < 0)
        break;
      last = rec;
      pthread_mutex_lock (&st->lock);
      rec = rec->next;
      pthread_mutex_unlock (&st->lock);
    }
    pthread_mutex_lock (&st->lock);
    if (last) {
      int rr = staging_retire_locked (o, last);
      if (r == 0)
        r = rr;
    }
    staging_note_locked (o, r);
  }
  pthread_mutex_unlock (&st->lock);
  return NULL;
}

/* Reopen a log an earlier run left, replay it and start it afresh. */
static int
staging_recover (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  int r = staging_path (o);
  if (r < 0)
    return r;
  int fd = o->io->open (o->io->opaque, st->path, O_RDWR, 0);
  if (fd < 0)
    return fd == -ENOENT ? 0 : fd;
  st->fd = fd;
  r = staging_replay (o);
  if (r != 1)
    return r < 0 ? r : staging_create_log (o);
  /* Whatever records it holds, their numbers may come again: remove it
   * (durably) and start a new log when something is staged.
   */
  o->io->close (o->io->opaque, st->fd);
  st->fd = -1;
  r = o->io->unlink (o->io->opaque, st->path);
  return r < 0 ? r : origin_sync_state_dir (o);
}

int
staging_start (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  int r = o->state_dir ? staging_recover (o) : 0;
  if (r < 0)
    return r;
  r = pthread_create (&st->applier, NULL, staging_main, o);
  if (r)
    return -r;
  st->running = true;
  return 0;
}

void
staging_stop (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  if (!st || !st->running)
    return;
  staging_wait (o, 0);
  pthread_mutex_lock (&st->lock);
  st->stopping = true;
  pthread_cond_signal (&st->work);
  pthread_mutex_unlock (&st->lock);
  pthread_join (st->applier, NULL);
  st->running = false;
  if (st->fd < 0)
    return;
  /* Everything is on the origin: make it durable, then the log has
   * nothing left to say (kept if that fails or something could not be
   * applied, for the next start to replay).
   */
  bool done = !st->head && o->io->fsync (o->io->opaque, o->fd) == 0
    && staging_sync_marker (o) == 0;
  o->io->close (o->io->opaque, st->fd);
  st->fd = -1;
  if (done)
    o->io->unlink (o->io->opaque, st->path);
}

/* ---- Writers ------------------------------------------------------------ */

bool
staging_needed (struct fssnap_origin *o, uint64_t epoch)
{
  return epoch > atomic_load (&o->committed_epoch)
    || atomic_load (&o->staging->count) > 0;
}

bool
staging_fits (struct fssnap_origin *o, enum staging_kind kind, size_t len)
{
  size_t n = rec_size (kind == STAGING_WRITE ? len : 0);
  return o->state_dir && o->staging->running && n <= o->staging->max_bytes;
}

/* Where a record of size n can go in the ring without overwriting a record
 * not yet marked applied; false if nowhere yet.  Caller holds the lock.
 */
static bool
staging_place_locked (struct staging *st, size_t n, uint64_t *offp)
{
  if (!st->head) {
    *offp = st->write_off + n <= st->ring_end ? st->write_off : LOG_START;
    return true;
  }
  uint64_t head = st->head->log_off;
  if (st->write_off >= head) {
    if (st->write_off + n <= st->ring_end)
      *offp = st->write_off;
    else if (LOG_START + n < head)
      *offp = LOG_START;
    else
      return false;
    return true;
  }
  *offp = st->write_off;
  return st->write_off + n < head;
}

/* Build the record (all but its number) outside the lock. */
static struct srec *
staging_build (enum staging_kind kind, const void *buf, size_t len,
               uint64_t off, uint64_t epoch)
{
  size_t data = kind == STAGING_WRITE ? len : 0;
  struct srec *rec = calloc (1, sizeof *rec);
  unsigned char *b = calloc (1, rec_size (data));
  if (!rec || !b) {
    free (rec);
    free (b);
    return NULL;
  }
  memcpy (b, rec_magic, 8);
  put_le32 (b + 16, kind);
  if (data)
    memcpy (b + REC_HDR_SIZE, buf, data);
  put_le32 (b + 20, crc32c (0, b + REC_HDR_SIZE, data));
  put_le64 (b + 32, off);
  put_le64 (b + 40, len);
  put_le64 (b + 48, data);
  *rec = (struct srec) { .epoch = epoch, .off = off, .len = len,
                         .kind = kind, .log_size = rec_size (data),
                         .buf = b };
  return rec;
}

int64_t
staging_add (struct fssnap_origin *o, enum staging_kind kind, const void *buf,
             size_t len, uint64_t off, uint64_t epoch)
{
  struct staging *st = o->staging;
  struct srec *rec = staging_build (kind, buf, len, off, epoch);
  if (!rec)
    return -ENOMEM;
  pthread_mutex_lock (&st->lock);
  int r = st->fd < 0 ? staging_create_log (o) : 0;
  uint64_t where = 0;
  bool waited = false;
  while (r == 0 && ((st->bytes && st->bytes + rec->log_size > st->max_bytes)
                    || !staging_place_locked (st, rec->log_size, &where))) {
    waited = true;
    pthread_cond_wait (&st->room, &st->lock);
  }
  st->waits += waited;
  if (r == 0) {
    rec->seq = st->next_seq;
    rec->log_off = where;
    rec_seal (rec->buf, rec->seq);
    /* Under the lock: the log holds records in the order of their
     * numbers, with no hole before one that was acknowledged.
     */
    r = io_pwrite_full (o->io, st->fd, rec->buf, rec->log_size, where);
  }
  if (r < 0) {
    pthread_mutex_unlock (&st->lock);
    engine_log (o, FSSNAP_LOG_ERR, "writing the staging log %s: %s",
                st->path ? st->path : o->state_dir, strerror (-r));
    free (rec->buf);
    free (rec);
    return r;
  }
  int64_t seq = (int64_t) st->next_seq++;
  st->write_off = where + rec->log_size;
  if (st->tail)
    st->tail->next = rec;
  else
    st->head = rec;
  st->tail = rec;
  atomic_fetch_add (&st->count, 1);
  st->staged_total++;
  st->bytes += rec->log_size;
  if (st->bytes > st->bytes_peak)
    st->bytes_peak = st->bytes;
  pthread_cond_signal (&st->work);
  pthread_mutex_unlock (&st->lock);
  return seq;                   /* rec may be applied and freed by now */
}

int
staging_wait (struct fssnap_origin *o, uint64_t seq)
{
  struct staging *st = o->staging;
  if (seq == 0 && atomic_load (&st->count) == 0)
    return 0;                   /* nothing staged: nothing to wait for */
  pthread_mutex_lock (&st->lock);
  if (seq == 0)
    seq = st->next_seq - 1;
  int r = 0;
  while (r == 0 && st->applied_seq < seq) {
    pthread_cond_wait (&st->applied_cond, &st->lock);
    r = st->failing;
  }
  pthread_mutex_unlock (&st->lock);
  return r;
}

int
staging_sync_marker (struct fssnap_origin *o)
{
  struct staging *st = o->staging;
  pthread_mutex_lock (&st->lock);
  uint64_t applied = st->applied_seq;
  bool needed = st->fd >= 0 && st->marker_synced < applied;
  int fd = st->fd;
  pthread_mutex_unlock (&st->lock);
  if (!needed)
    return 0;
  int r = o->io->fsync (o->io->opaque, fd);
  pthread_mutex_lock (&st->lock);
  if (r == 0 && st->marker_synced < applied)
    st->marker_synced = applied;
  pthread_mutex_unlock (&st->lock);
  return r;
}

/* ---- Readers ------------------------------------------------------------ */

/* Lay rec over buf, which holds [off, off+len) of the volume. */
static void
staging_overlay (const struct srec *rec, unsigned char *buf, size_t len,
                 uint64_t off)
{
  uint64_t from = rec->off > off ? rec->off : off;
  uint64_t to = rec->off + rec->len < off + len ? rec->off + rec->len
                                                : off + len;
  if (from >= to)
    return;
  if (rec->kind == STAGING_WRITE)
    memcpy (buf + (from - off), rec->buf + REC_HDR_SIZE + (from - rec->off),
            to - from);
  else
    memset (buf + (from - off), 0, to - from);
}

int
staging_read (struct fssnap_origin *o, int fd, void *buf, size_t len,
              uint64_t off)
{
  struct staging *st = o->staging;
  int r;
  if (atomic_load (&st->count) == 0)
    r = io_pread_full (o->io, fd, buf, len, off);
  else {
    /* Under the lock: a record leaves only once it is on the origin. */
    pthread_mutex_lock (&st->lock);
    r = io_pread_full (o->io, fd, buf, len, off);
    for (struct srec *rec = st->head; r == 0 && rec; rec = rec->next)
      staging_overlay (rec, buf, len, off);
    pthread_mutex_unlock (&st->lock);
  }
  if (r < 0 && !(r == -EINVAL && fd != o->fd))  /* O_DIRECT refused */
    origin_read_failed (o, off, len, r);
  return r;
}

void
staging_stats (struct fssnap_origin *o, struct fssnap_stats *s)
{
  struct staging *st = o->staging;
  pthread_mutex_lock (&st->lock);
  s->staged_bytes = st->bytes;
  s->staged_bytes_peak = st->bytes_peak;
  s->max_staged_bytes = st->max_bytes;
  s->staged_writes = st->staged_total;
  s->staging_waits = st->waits;
  pthread_mutex_unlock (&st->lock);
}
