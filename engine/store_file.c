/* SPDX-License-Identifier: MIT */
/*
 * The persistent backing store: copies appended to files in slots, with an
 * index of which chunk each slot holds, written with O_DIRECT, fsync'd.
 *
 * Layout (docs/format.md): a file starts with a 4 KiB header (magic
 * FSSNAPST, version, chunk size); segments follow, each an index block of
 * 512 little-endian 64-bit entries and then 512 slots of one chunk each.
 * Entry i of segment k says which chunk slot 512k + i holds (its number
 * plus one; 0: none).  Slots are handed out in order, so a store grows at
 * its end whatever order the chunks are copied in.  With max_file_size set,
 * the slots are split over files of at most that many bytes (at least one
 * slot each): file 0 is PATH, file i is PATH.i, created when a slot in it
 * is first written.
 *
 * Why slots and not the copy of chunk c at offset c * chunksize of a
 * sparse file: a random first touch then made every copy an allocating
 * write in the middle of a file, and ext4 serialises O_DIRECT writes into
 * holes on the inode lock.  Slots go into space preallocated ahead in
 * steps (fallocate; only advice), so the store writers' O_DIRECT writes run
 * side by side, and skipping the page cache saves a copy and the page
 * cache's write-back of every chunk (bench/results.md: first touch).
 * O_DIRECT is used when the chunk size is at least STORE_BUF_ALIGN and the
 * buffer came from store_buf_alloc; otherwise, or where the file system
 * refuses it, copies go through the page cache.
 *
 * Durability: the index lives in memory (the chunk -> slot map, and the
 * index block of every segment that may still change) and reaches the
 * file at sync, with the data, in one fsync per file written.  The owner
 * bit that points at a copy is written only after that sync (commit.c), so
 * an entry whose data a crash lost is never read: its chunk is copied
 * again into a new slot, and when two slots name one chunk, the later one
 * is the copy (both hold the same data: the origin did not change in
 * between, or the first copy would have been committed).  An index block
 * whose every slot is settled is written at once by the writer that
 * settled the last (not synced), so only the last few segments' blocks
 * stay in memory.
 *
 * Usage counts the chunks written (and, after a restart, found by check),
 * each once: a copy has one owner.
 *
 * Locks: index_lock guards the index blocks in memory and is taken before
 * file_lock, a leaf, which guards the files' descriptors and reservations.
 * The map is read without a lock (atomics; a slot is published after its
 * write).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "common/crc32c.h"
#include "engine/internal.h"
#include "engine/store.h"

#define HDR_SIZE 4096
#define SEG_SLOTS 512u
#define INDEX_SIZE (SEG_SLOTS * 8)
#define RESERVE_STEP (16ull << 20)
#define MAP_PAGE_SHIFT 12               /* 4096 chunks a map page */
#define MAP_PAGE (1u << MAP_PAGE_SHIFT)
#define SLOTS_UNSPLIT (UINT32_MAX - 1ull)
static const char store_magic[8] = "FSSNAPST";

/* One file of the store. */
struct store_part {
  int fd;                       /* -1: not created yet */
  int dfd;                      /* the same file with O_DIRECT, or -1 */
  bool header_ok;               /* it has its header */
  _Atomic bool ready;           /* created, with its header */
  _Atomic bool direct_off;      /* the file system refused O_DIRECT */
  bool no_reserve;              /* the file system cannot preallocate */
  _Atomic uint64_t reserved;    /* bytes allocated (the file's size) */
  _Atomic bool written;         /* written since the last sync */
};

/* The index block of a segment that may still change. */
struct store_seg {
  struct store_seg *next;
  uint64_t number;
  unsigned settled;             /* slots written or failed */
  bool dirty;                   /* changed since written to the file */
  unsigned char entries[INDEX_SIZE];
};

struct store_file {
  struct store base;
  const struct fssnap_io *io;
  uint32_t chunksize;
  uint64_t origin_size;
  uint64_t nchunks;
  uint64_t slots_per_file;
  uint64_t max_slots;
  bool unlink;
  _Atomic uint64_t next_slot;
  _Atomic uint64_t held;        /* chunks held */
  pthread_mutex_t file_lock;
  struct store_part *parts;     /* base.nfiles of them */
  pthread_mutex_t index_lock;
  struct store_seg *segs;
  _Atomic (_Atomic uint32_t *) *map;    /* slot + 1 per chunk, in pages */
  _Atomic bool dir_changed;     /* a file was created since the last sync */
};

static struct store_file *
sf (struct store *st)
{
  return (struct store_file *) st;
}

void *
store_buf_alloc (size_t len)
{
  size_t n = (len + STORE_BUF_ALIGN - 1) / STORE_BUF_ALIGN * STORE_BUF_ALIGN;
  unsigned char *b = aligned_alloc (STORE_BUF_ALIGN, n ? n : STORE_BUF_ALIGN);
  if (b && n > len)
    memset (b + len, 0, n - len);
  return b;
}

/* ---- Geometry ----------------------------------------------------------- */

static uint64_t
seg_bytes (const struct store_file *f)
{
  return INDEX_SIZE + (uint64_t) SEG_SLOTS * f->chunksize;
}

/* Bytes a file with n slots takes. */
static uint64_t
file_bytes (const struct store_file *f, uint64_t n)
{
  return HDR_SIZE + (n + SEG_SLOTS - 1) / SEG_SLOTS * INDEX_SIZE
    + n * f->chunksize;
}

/* Where slot s lives: its file and the offset of its data. */
static void
slot_place (const struct store_file *f, uint64_t s, unsigned *file,
            uint64_t *data_off)
{
  uint64_t k = s % f->slots_per_file;
  uint64_t seg_off = HDR_SIZE + k / SEG_SLOTS * seg_bytes (f);
  *file = s / f->slots_per_file;
  *data_off = seg_off + INDEX_SIZE + k % SEG_SLOTS * f->chunksize;
}

/* Segments are numbered across the files, each file's after the last
 * file's; a file's last segment may hold fewer than SEG_SLOTS slots.
 */
static uint64_t
segs_per_file (const struct store_file *f)
{
  return (f->slots_per_file + SEG_SLOTS - 1) / SEG_SLOTS;
}

/* The segment holding slot s, and s's entry in its index block. */
static uint64_t
slot_seg (const struct store_file *f, uint64_t s, unsigned *entryp)
{
  uint64_t k = s % f->slots_per_file;
  *entryp = k % SEG_SLOTS;
  return s / f->slots_per_file * segs_per_file (f) + k / SEG_SLOTS;
}

/* Where segment g's index block lives, and how many slots g holds. */
static unsigned
seg_place (const struct store_file *f, uint64_t g, unsigned *file,
           uint64_t *index_off)
{
  uint64_t k = g % segs_per_file (f);
  *file = g / segs_per_file (f);
  *index_off = HDR_SIZE + k * seg_bytes (f);
  uint64_t left = f->slots_per_file - k * SEG_SLOTS;
  return left < SEG_SLOTS ? (unsigned) left : SEG_SLOTS;
}

static size_t
chunk_len (const struct store_file *f, uint64_t c)
{
  uint64_t start = c * f->chunksize;
  return f->origin_size - start < f->chunksize ? f->origin_size - start
                                               : f->chunksize;
}

/* ---- The chunk -> slot map ---------------------------------------------- */

/* Slot + 1 of chunk c's copy, 0 if none.  No lock. */
static uint64_t
map_get (struct store_file *f, uint64_t c)
{
  if (c >= f->nchunks)
    return 0;
  _Atomic uint32_t *page = atomic_load (&f->map[c >> MAP_PAGE_SHIFT]);
  return page ? atomic_load (&page[c & (MAP_PAGE - 1)]) : 0;
}

/* Record that slot s holds chunk c.  Takes index_lock for a new page. */
static int
map_set (struct store_file *f, uint64_t c, uint64_t s)
{
  _Atomic (_Atomic uint32_t *) *pp = &f->map[c >> MAP_PAGE_SHIFT];
  if (!atomic_load (pp)) {
    pthread_mutex_lock (&f->index_lock);
    if (!atomic_load (pp))
      atomic_store (pp, calloc (MAP_PAGE, sizeof (uint32_t)));
    pthread_mutex_unlock (&f->index_lock);
    if (!atomic_load (pp))
      return -ENOMEM;
  }
  atomic_store (&atomic_load (pp)[c & (MAP_PAGE - 1)], (uint32_t) (s + 1));
  return 0;
}

int
store_file_locate (const struct store *st, uint64_t chunk, unsigned *filep,
                   uint64_t *offp)
{
  struct store_file *f = (struct store_file *) st;
  uint64_t s = map_get (f, chunk);
  if (!s)
    return -ENOENT;
  slot_place (f, s - 1, filep, offp);
  return 0;
}

/* ---- Files ------------------------------------------------------------- */

static char *
store_file_name (const struct store_file *f, unsigned i)
{
  char *name;
  int r = i == 0 ? asprintf (&name, "%s", f->base.path)
                 : asprintf (&name, "%s.%u", f->base.path, i);
  return r < 0 ? NULL : name;
}

static void
store_header (const struct store_file *f, unsigned char *h)
{
  memset (h, 0, HDR_SIZE);
  memcpy (h, store_magic, 8);
  uint32_t v = htole32 (1), cs = htole32 (f->chunksize);
  memcpy (h + 12, &v, 4);
  memcpy (h + 16, &cs, 4);
  uint32_t crc = htole32 (crc32c (0, h, HDR_SIZE));
  memcpy (h + 8, &crc, 4);
}

/* Write file i's header.  Caller holds file_lock. */
static int
store_part_write_header (struct store_file *f, struct store_part *p)
{
  unsigned char h[HDR_SIZE];
  store_header (f, h);
  int r = io_pwrite_full (f->io, p->fd, h, sizeof h, 0);
  if (r == 0) {
    p->header_ok = true;
    if (p->reserved < HDR_SIZE)
      p->reserved = HDR_SIZE;
    atomic_store (&p->written, true);
  }
  return r;
}

/* The O_DIRECT twin of a file, where the chunk size allows it and the
 * file system takes it (-1 otherwise: copies go through the page cache).
 */
static int
store_part_open_direct (struct store_file *f, const char *name)
{
  if (f->chunksize < STORE_BUF_ALIGN)
    return -1;
  int fd = f->io->open (f->io->opaque, name, O_RDWR | O_DIRECT | O_CLOEXEC,
                        0);
  return fd < 0 ? -1 : fd;
}

/* Create file i with its header.  Caller holds file_lock. */
static int
store_part_create (struct store_file *f, unsigned i)
{
  struct store_part *p = &f->parts[i];
  char *name = store_file_name (f, i);
  if (!name)
    return -ENOMEM;
  int fd = f->io->open (f->io->opaque, name,
                        O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    p->dfd = store_part_open_direct (f, name);
    if (f->unlink)
      f->io->unlink (f->io->opaque, name);
  }
  free (name);
  if (fd < 0)
    return fd;
  p->fd = fd;
  atomic_store (&f->dir_changed, true);
  return store_part_write_header (f, p);
}

/* File i, created if need be, with its header.  Takes file_lock. */
static int
store_part_get (struct store_file *f, unsigned i, struct store_part **pp)
{
  struct store_part *p = &f->parts[i];
  *pp = p;
  if (atomic_load (&p->ready))
    return 0;
  pthread_mutex_lock (&f->file_lock);
  int r = 0;
  if (p->fd < 0)
    r = store_part_create (f, i);
  else if (!p->header_ok)
    r = store_part_write_header (f, p);
  atomic_store (&p->ready, r == 0);
  pthread_mutex_unlock (&f->file_lock);
  return r;
}

/* Allocate file space up to at least 'end', ahead in steps (only advice:
 * where it fails, writes fill holes).  Takes file_lock.
 */
static void
store_part_reserve (struct store_file *f, struct store_part *p, uint64_t end)
{
  if (!f->io->allocate || atomic_load (&p->reserved) >= end)
    return;
  pthread_mutex_lock (&f->file_lock);
  uint64_t limit = file_bytes (f, f->slots_per_file);
  if (p->reserved < end && !p->no_reserve) {
    uint64_t want = (end - p->reserved + RESERVE_STEP - 1) / RESERVE_STEP
                    * RESERVE_STEP;
    if (p->reserved + want > limit)
      want = (limit > end ? limit : end) - p->reserved;
    int r = f->io->allocate (f->io->opaque, p->fd, p->reserved, want);
    if (r < 0 && r != -EOPNOTSUPP) {    /* short of space: just this slot */
      want = end - p->reserved;
      r = f->io->allocate (f->io->opaque, p->fd, p->reserved, want);
    }
    if (r == 0)
      p->reserved += want;
    p->no_reserve = r == -EOPNOTSUPP;
  }
  pthread_mutex_unlock (&f->file_lock);
}

/* Write copies [0, n) into consecutive slots from off: with O_DIRECT when
 * their buffers allow (padding up to STORE_BUF_ALIGN is zeros), through
 * the page cache otherwise, or from the first refusal on.  Only the last
 * copy may be short.
 */
static int
store_part_write_run (struct store_file *f, struct store_part *p,
                      const struct store_copy *c, size_t n, uint64_t off)
{
  struct iovec iov[STORE_BATCH_MAX];
  bool direct = p->dfd >= 0 && !atomic_load (&p->direct_off);
  for (size_t i = 0; i < n; i++) {
    iov[i] = (struct iovec) { (void *) c[i].buf, c[i].len };
    direct &= (uintptr_t) c[i].buf % STORE_BUF_ALIGN == 0;
  }
  if (direct) {
    iov[n - 1].iov_len = (c[n - 1].len + STORE_BUF_ALIGN - 1)
                         / STORE_BUF_ALIGN * STORE_BUF_ALIGN;
    int r = io_pwritev_full (f->io, p->dfd, iov, (int) n, off);
    if (r != -EINVAL)
      return r;
    atomic_store (&p->direct_off, true);        /* refused */
    iov[n - 1].iov_len = c[n - 1].len;
  }
  return io_pwritev_full (f->io, p->fd, iov, (int) n, off);
}

/* ---- Index blocks -------------------------------------------------------- */

/* The in-memory index block of segment k, made if 'make'.  Caller holds
 * index_lock.
 */
static struct store_seg *
seg_find_locked (struct store_file *f, uint64_t k, bool make)
{
  for (struct store_seg *g = f->segs; g; g = g->next)
    if (g->number == k)
      return g;
  struct store_seg *g = make ? calloc (1, sizeof *g) : NULL;
  if (g) {
    g->number = k;
    g->next = f->segs;
    f->segs = g;
  }
  return g;
}

/* Whether every slot of segment g is settled. */
static bool
seg_full (const struct store_file *f, const struct store_seg *g)
{
  unsigned file;
  uint64_t off;
  return g->settled == seg_place (f, g->number, &file, &off);
}

/* Write segment g's index block (not synced).  Caller holds index_lock. */
static int
seg_write_locked (struct store_file *f, struct store_seg *g)
{
  unsigned file;
  uint64_t off;
  seg_place (f, g->number, &file, &off);
  pthread_mutex_lock (&f->file_lock);
  int fd = f->parts[file].fd;
  pthread_mutex_unlock (&f->file_lock);
  int r = io_pwrite_full (f->io, fd, g->entries, INDEX_SIZE, off);
  if (r == 0) {
    g->dirty = false;
    atomic_store (&f->parts[file].written, true);
  }
  return r;
}

/* Write the changed index blocks; drop those of segments whose every slot
 * is settled.  Caller holds index_lock.
 */
static int
seg_write_dirty_locked (struct store_file *f)
{
  int r = 0;
  for (struct store_seg **gp = &f->segs; r == 0 && *gp;) {
    struct store_seg *g = *gp;
    if (g->dirty)
      r = seg_write_locked (f, g);
    if (r == 0 && seg_full (f, g)) {
      *gp = g->next;
      free (g);
    }
    else
      gp = &g->next;
  }
  return r;
}

/* Note slot s as written with chunk c (c == UINT64_MAX: failed, nothing
 * to record); the last slot of a segment to settle writes its block (a
 * failure leaves it for the next sync, which reports it).  Takes
 * index_lock, then file_lock.
 */
static int
seg_note (struct store_file *f, uint64_t s, uint64_t c)
{
  unsigned entry;
  uint64_t k = slot_seg (f, s, &entry);
  pthread_mutex_lock (&f->index_lock);
  struct store_seg *g = seg_find_locked (f, k, true);
  if (g) {
    g->settled++;
    if (c != UINT64_MAX) {
      uint64_t v = htole64 (c + 1);
      memcpy (g->entries + entry * 8, &v, 8);
      g->dirty = true;
    }
    if (seg_full (f, g))
      seg_write_dirty_locked (f);
  }
  pthread_mutex_unlock (&f->index_lock);
  return g ? 0 : -ENOMEM;
}

int
store_file_write_index (struct store *st)
{
  struct store_file *f = sf (st);
  pthread_mutex_lock (&f->index_lock);
  int r = seg_write_dirty_locked (f);
  pthread_mutex_unlock (&f->index_lock);
  return r;
}

/* ---- Operations ---------------------------------------------------------- */

/* How many of copies [0, n), bound for slots s, s+1..., lie side by side
 * in one segment of one file (a short copy, the device's last chunk, ends
 * the run).
 */
static size_t
store_file_run (const struct store_file *f, uint64_t s,
                const struct store_copy *c, size_t n)
{
  uint64_t k = s % f->slots_per_file;
  uint64_t room = SEG_SLOTS - k % SEG_SLOTS;
  if (f->slots_per_file - k < room)
    room = f->slots_per_file - k;
  size_t run = 0;
  while (run < n && run < room && (run == 0 || c[run - 1].len == f->chunksize))
    run++;
  return run;
}

/* Copies [0, n) into slots s, s+1...  Takes file_lock (store_part_get,
 * store_part_reserve).
 */
static int
store_file_write_runs (struct store_file *f, uint64_t s,
                       const struct store_copy *c, size_t n)
{
  int r = 0;
  for (size_t done = 0, run; r == 0 && done < n; done += run) {
    run = store_file_run (f, s + done, c + done, n - done);
    unsigned file;
    uint64_t off;
    slot_place (f, s + done, &file, &off);
    struct store_part *p;
    r = store_part_get (f, file, &p);
    if (r == 0) {
      store_part_reserve (f, p, off + run * f->chunksize);
      r = store_part_write_run (f, p, c + done, run, off);
    }
    if (r == 0)
      atomic_store (&p->written, true);
  }
  return r;
}

/* Takes file_lock, then index_lock and file_lock (seg_note, map_set). */
static int
store_file_write (struct store *st, const struct store_copy *c, size_t n)
{
  struct store_file *f = sf (st);
  uint64_t s = atomic_fetch_add (&f->next_slot, n);
  if (s + n > f->max_slots)
    return -ENOSPC;             /* every file is full */
  int r = store_file_write_runs (f, s, c, n);
  for (size_t i = 0; i < n; i++) {
    int rr = seg_note (f, s + i, r == 0 ? c[i].chunk : UINT64_MAX);
    if (r == 0 && rr == 0)
      rr = map_set (f, c[i].chunk, s + i);
    if (r == 0)
      r = rr;
  }
  if (r == 0)
    atomic_fetch_add (&f->held, n);
  return r;
}

static int
store_file_read_chunk (struct store *st, uint64_t chunk, void *buf,
                       size_t skip, size_t len)
{
  struct store_file *f = sf (st);
  unsigned file;
  uint64_t off;
  if (store_file_locate (st, chunk, &file, &off) < 0)
    return -EIO;                /* no copy: never written, or it failed */
  pthread_mutex_lock (&f->file_lock);
  int fd = f->parts[file].fd;
  pthread_mutex_unlock (&f->file_lock);
  return io_pread_full (f->io, fd, buf, len, off + skip);
}

/* fsync the directory holding the store's files. */
static int
store_file_sync_dir (struct store_file *f)
{
  char *copy = strdup (f->base.path);
  if (!copy)
    return -ENOMEM;
  int r = io_sync_dir (f->io, dirname (copy));
  free (copy);
  return r;
}

/* Takes index_lock and file_lock, then file_lock. */
static int
store_file_sync (struct store *st)
{
  struct store_file *f = sf (st);
  int r = store_file_write_index (st);
  for (unsigned i = 0; r == 0 && i < st->nfiles; i++) {
    if (!atomic_exchange (&f->parts[i].written, false))
      continue;
    pthread_mutex_lock (&f->file_lock);
    int fd = f->parts[i].fd;
    pthread_mutex_unlock (&f->file_lock);
    r = f->io->fsync (f->io->opaque, fd);
    if (r < 0)
      atomic_store (&f->parts[i].written, true);
  }
  if (r == 0 && !f->unlink && atomic_exchange (&f->dir_changed, false)) {
    r = store_file_sync_dir (f);
    if (r < 0)
      atomic_store (&f->dir_changed, true);
  }
  return r;
}

/* The copy of c is there if the index names a slot for it and its file
 * is long enough (the file system does not lose blocks inside a file
 * without an error).
 */
static int
store_file_check (struct store *st, uint64_t c, char *why, size_t len)
{
  struct store_file *f = sf (st);
  unsigned file;
  uint64_t off, size;
  if (store_file_locate (st, c, &file, &off) < 0) {
    if (f->parts[0].fd < 0)
      snprintf (why, len, "backing store %.160s is missing", st->path);
    else
      snprintf (why, len, "backing store %.160s holds no copy of chunk %"
                PRIu64, st->path, c);
    return -EBADMSG;
  }
  int r = f->io->getsize (f->io->opaque, f->parts[file].fd, &size);
  if (r < 0) {
    snprintf (why, len, "cannot read the size of backing store file %u of "
              "%.160s: %s", file, st->path, strerror (-r));
    return r;
  }
  if (size < off + chunk_len (f, c)) {
    snprintf (why, len, "backing store file %u of %.160s is truncated (%"
              PRIu64 " bytes, the copy of chunk %" PRIu64 " needs %" PRIu64
              ")", file, st->path, size, c, off + chunk_len (f, c));
    return -EBADMSG;
  }
  atomic_fetch_add (&f->held, 1);
  return 0;
}

static uint64_t
store_file_usage (struct store *st)
{
  struct store_file *f = sf (st);
  return atomic_load (&f->held) * f->chunksize;
}

static void
store_file_destroy (struct store *st, bool remove)
{
  struct store_file *f = sf (st);
  for (unsigned i = 0; i < st->nfiles; i++) {
    struct store_part *p = &f->parts[i];
    if (p->dfd >= 0)
      f->io->close (f->io->opaque, p->dfd);
    if (p->fd < 0)
      continue;
    f->io->close (f->io->opaque, p->fd);
    if (remove && !f->unlink) {
      char *name = store_file_name (f, i);
      if (name)
        f->io->unlink (f->io->opaque, name);
      free (name);
    }
  }
  while (f->segs) {
    struct store_seg *g = f->segs->next;
    free (f->segs);
    f->segs = g;
  }
  for (uint64_t i = 0; f->map && i < (f->nchunks + MAP_PAGE - 1) / MAP_PAGE;
       i++)
    free ((void *) atomic_load (&f->map[i]));
  free ((void *) f->map);
  pthread_mutex_destroy (&f->file_lock);
  pthread_mutex_destroy (&f->index_lock);
  free (f->parts);
  free (st->path);
  free (f);
}

const struct store_ops store_file_ops = {
  .kind = "persistent",
  .persistent = true,
  .create = store_file_create,
  .open = store_file_open,
  .check = store_file_check,
  .write = store_file_write,
  .read = store_file_read_chunk,
  .sync = store_file_sync,
  .usage = store_file_usage,
  .drop = store_file_destroy,
};

/* ---- Creating and reopening --------------------------------------------- */

static char *
store_file_path (const struct store_params *p)
{
  struct stat st;
  char *path;
  if (p->name && stat (p->location, &st) == 0 && S_ISDIR (st.st_mode)) {
    if (asprintf (&path, "%s/%s", p->location, p->name) < 0)
      return NULL;
    return path;
  }
  return strdup (p->location);
}

/* Slots a file of at most max bytes holds (at least one). */
static uint64_t
slots_fitting (const struct store_file *f, uint64_t max)
{
  uint64_t n = max > HDR_SIZE ? (max - HDR_SIZE) / (f->chunksize + 8) : 1;
  while (n > 1 && file_bytes (f, n) > max)
    n--;
  return n ? n : 1;
}

/* Files and slots: split, the files for every chunk plus one for copies
 * a crash left uncommitted and that were made again.
 */
static void
store_file_geometry (struct store_file *f, const struct store_params *p)
{
  f->slots_per_file = SLOTS_UNSPLIT;
  f->base.nfiles = 1;
  if (p->max_file_size) {
    f->slots_per_file = slots_fitting (f, p->max_file_size);
    f->base.nfiles = (f->nchunks + f->slots_per_file - 1) / f->slots_per_file
                     + 1;
  }
  f->max_slots = f->slots_per_file * f->base.nfiles;
  if (f->max_slots > SLOTS_UNSPLIT)
    f->max_slots = SLOTS_UNSPLIT;
}

/* Allocate the store's state; no file is opened yet. */
static struct store_file *
store_file_alloc (const struct store_params *p)
{
  struct store_file *f = calloc (1, sizeof *f);
  if (!f)
    return NULL;
  f->base.ops = &store_file_ops;
  f->io = p->io;
  f->chunksize = p->chunksize;
  f->origin_size = p->origin_size;
  f->nchunks = p->nchunks ? p->nchunks : 1;
  f->unlink = p->unlink;
  f->base.unlinked = p->unlink;
  store_file_geometry (f, p);
  f->base.path = store_file_path (p);
  f->parts = calloc (f->base.nfiles, sizeof *f->parts);
  f->map = calloc ((f->nchunks + MAP_PAGE - 1) / MAP_PAGE, sizeof *f->map);
  pthread_mutex_init (&f->file_lock, NULL);
  pthread_mutex_init (&f->index_lock, NULL);
  for (unsigned i = 0; f->parts && i < f->base.nfiles; i++)
    f->parts[i].fd = f->parts[i].dfd = -1;
  if (!f->base.path || !f->parts || !f->map) {
    store_file_destroy (&f->base, false);
    return NULL;
  }
  return f;
}

int
store_file_create (const struct store_params *p, struct store **stp,
                   char *errmsg, size_t errlen)
{
  struct store_file *f = store_file_alloc (p);
  if (!f)
    return -ENOMEM;
  int r = store_part_create (f, 0);
  if (r < 0) {
    snprintf (errmsg, errlen, "cannot create backing store %s: %s",
              f->base.path, strerror (-r));
    store_file_destroy (&f->base, false);
    return r;
  }
  *stp = &f->base;
  return 0;
}

/* Whether the 4 KiB at h hold nothing (a file cut as it was created). */
static bool
all_zero (const unsigned char *h, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (h[i])
      return false;
  return true;
}

/* Check file i's header: 0 if it has ours, 1 if it has none yet (cut off
 * by a crash before its first sync: it holds nothing that was committed),
 * or an error with the reason.
 */
static int
store_part_check_header (struct store_file *f, struct store_part *p,
                         const char *name, char *why, size_t len)
{
  unsigned char h[HDR_SIZE], want[HDR_SIZE];
  int r = io_pread_full (f->io, p->fd, h, sizeof h, 0);
  if (r == -EIO && p->reserved < HDR_SIZE)
    return 1;
  if (r < 0) {
    snprintf (why, len, "cannot read backing store %.160s: %s", name,
              strerror (-r));
    return r;
  }
  store_header (f, want);
  if (memcmp (h, want, sizeof h) == 0)
    return 0;
  if (all_zero (h, sizeof h))
    return 1;
  if (memcmp (h, store_magic, 8) != 0) {
    snprintf (why, len, "backing store %.160s has no store header (the "
              "sparse layout of fssnap 0.1, which this version does not "
              "read)", name);
    return -EPROTO;
  }
  snprintf (why, len, "backing store %.160s has a damaged header, or one of "
            "another chunk size or version", name);
  return -EBADMSG;
}

/* Read file i's index blocks into the map (a later slot of a chunk wins)
 * and move next_slot past its last used slot.
 */
static int
store_part_load_index (struct store_file *f, unsigned i, const char *name,
                       char *why, size_t len)
{
  struct store_part *p = &f->parts[i];
  unsigned char b[INDEX_SIZE];
  uint64_t first = (uint64_t) i * f->slots_per_file;
  for (uint64_t k = 0; k * SEG_SLOTS < f->slots_per_file; k++) {
    uint64_t off = HDR_SIZE + k * seg_bytes (f);
    if (off + INDEX_SIZE > p->reserved)
      break;
    int r = io_pread_full (f->io, p->fd, b, sizeof b, off);
    if (r < 0) {
      snprintf (why, len, "cannot read the index of backing store %.160s: "
                "%s", name, strerror (-r));
      return r;
    }
    for (unsigned j = 0; j < SEG_SLOTS; j++) {
      uint64_t v;
      memcpy (&v, b + j * 8, 8);
      v = le64toh (v);
      if (v == 0)
        continue;
      uint64_t s = first + k * SEG_SLOTS + j;
      if (v > f->nchunks) {
        snprintf (why, len, "backing store %.160s: slot %" PRIu64 " names "
                  "chunk %" PRIu64 ", past the origin's end", name, s, v - 1);
        return -EBADMSG;
      }
      if (map_set (f, v - 1, s) < 0)
        return -ENOMEM;
      if (s + 1 > atomic_load (&f->next_slot))
        atomic_store (&f->next_slot, s + 1);
    }
  }
  return 0;
}

/* Take up the segment holding next_slot where it stopped: its index
 * block as on the file, its slots before next_slot settled (written, or
 * lost to a crash: never used again).
 */
static int
store_file_resume_segment (struct store_file *f, char *why, size_t len)
{
  unsigned used, file;
  uint64_t off, k = slot_seg (f, atomic_load (&f->next_slot), &used);
  seg_place (f, k, &file, &off);
  if (used == 0 || file >= f->base.nfiles || f->parts[file].fd < 0)
    return 0;
  struct store_seg *g = seg_find_locked (f, k, true);
  if (!g)
    return -ENOMEM;
  g->settled = used;
  int r = io_pread_full (f->io, f->parts[file].fd, g->entries, INDEX_SIZE,
                         off);
  if (r < 0)
    snprintf (why, len, "cannot read the index of backing store %.160s: %s",
              f->base.path, strerror (-r));
  return r;
}

/* Reopen file i if it exists, with its index. */
static int
store_part_reopen (struct store_file *f, unsigned i, char *why, size_t len)
{
  struct store_part *p = &f->parts[i];
  char *name = store_file_name (f, i);
  if (!name)
    return -ENOMEM;
  int r = p->fd = f->io->open (f->io->opaque, name, O_RDWR | O_CLOEXEC, 0);
  if (r == -ENOENT) {
    p->fd = -1;
    free (name);
    return 0;
  }
  if (r < 0) {
    p->fd = -1;
    snprintf (why, len, "cannot open backing store %s: %s", name,
              strerror (-r));
    free (name);
    return r;
  }
  p->dfd = store_part_open_direct (f, name);
  uint64_t size = 0;
  r = f->io->getsize (f->io->opaque, p->fd, &size);
  atomic_store (&p->reserved, size);
  if (r < 0)
    snprintf (why, len, "cannot read the size of backing store %.160s: %s",
              name, strerror (-r));
  if (r == 0)
    r = store_part_check_header (f, p, name, why, len);
  p->header_ok = r == 0;
  if (r == 0)
    r = store_part_load_index (f, i, name, why, len);
  free (name);
  return r < 0 ? r : 0;
}

int
store_file_open (const struct store_params *p, struct store **stp,
                 char *errmsg, size_t errlen)
{
  struct store_file *f = store_file_alloc (p);
  if (!f)
    return -ENOMEM;
  int r = 0;
  for (unsigned i = 0; r == 0 && i < f->base.nfiles; i++)
    r = store_part_reopen (f, i, errmsg, errlen);
  if (r == 0)
    r = store_file_resume_segment (f, errmsg, errlen);
  if (r < 0) {
    store_file_destroy (&f->base, false);
    return r;
  }
  *stp = &f->base;
  return 0;
}
