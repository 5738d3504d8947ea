/* SPDX-License-Identifier: MIT */
/*
 * The metadata file of a snapshot, format version 1.
 *
 * All integers are little-endian.  The file is made of 512-byte blocks, the
 * unit a disk writes atomically, so a crash leaves each block either old or
 * new and every block can be checked on its own.
 *
 *   offset 0     header slot 0 (4096 bytes)
 *   offset 4096  header slot 1 (4096 bytes)
 *   offset 8192  map 0 (C: candidates), map 1 (O: owner), map 2 (D:
 *                changed since the previous snapshot), map 3 (A: changed
 *                since this one): each blocks_per_map blocks of 512 bytes
 *
 * (The preserved map H is not stored: a snapshot S preserved chunk c iff c
 * was a candidate of S and some snapshot at or after S owns a copy of c, so
 * recovery derives it; cow.c's proof gives why.)
 *
 * Header slot: a header is rewritten into the slot its generation picks
 * (generation % 2), so the previous one stays intact until the new one is
 * complete; the loader takes the valid slot with the highest generation.
 *
 *     0  8  magic "FSSNAPMD"           84  4  reserved (0)
 *     8  4  format version (1)         88  8  maxsize (0: unlimited)
 *    12  4  CRC-32C of the 4096 bytes  96  8  max backing file size
 *          with this field zeroed     104  8  create time (Unix seconds)
 *    16  8  generation                112  8  offset of map 0 (8192)
 *    24  8  creation sequence         120  4  blocks per map
 *    32  4  snapshot number           124  4  number of maps (4)
 *    36  4  state: 0 creating,        128 40  UUID, NUL-terminated
 *          1 valid, 2 disabled,       256 1024 origin path   (NUL-terminated)
 *          3 deleted (kept for       1280 1024 store path    (NUL-terminated)
 *          older snapshots)          2304 1024 mount point   (NUL-terminated)
 *    40  4  flags: 1 transient,      3328 256  reason for the state
 *          2 store unlinked,         3584 40   group UUID ("": none)
 *          4 D lost, 8 A lost        3624      zeros to 4096
 *    44  4  chunk size
 *    48  8  chunks in the device
 *    56  8  origin size in bytes
 *    64  8  origin st_dev (regular file origins)
 *    72  8  origin st_ino (regular file origins)
 *    80  4  origin kind: 1 regular file, 2 block device
 *
 * Map block k of map m:  0 4 CRC-32C of bytes 4..511;  4 4 tag (m << 28 | k);
 * 8 504 bits for chunks 4032k .. 4032k+4031, as 63 64-bit words, chunk c at
 * bit c % 64 of word c / 64.
 *
 * A newer release reads this version as it is: it may add maps at the end
 * (the header says how many) and fields in the reserved space.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "engine/internal.h"
#include "engine/meta.h"

#define META_MAGIC "FSSNAPMD"
#define META_BLOCK 512
#define META_SLOT 4096
#define META_MAPS_OFFSET (2 * META_SLOT)
#define META_WORDS_PER_BLOCK 63
#define META_BITS_PER_BLOCK (64 * META_WORDS_PER_BLOCK)
#define META_IO_BLOCKS 2048             /* blocks per read or write call */

static void
put32 (unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static void
put64 (unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

static uint32_t
get32 (const unsigned char *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t
get64 (const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static void
put_str (unsigned char *p, const char *s, size_t max)
{
  snprintf ((char *) p, max, "%s", s);
}

static void
get_str (char *dst, const unsigned char *p, size_t max)
{
  memcpy (dst, p, max - 1);
  dst[max - 1] = '\0';
}

static uint32_t
meta_blocks_per_map (uint64_t nchunks)
{
  return (nchunks + META_BITS_PER_BLOCK - 1) / META_BITS_PER_BLOCK;
}

static void
meta_encode_header (const struct meta_header *h, uint32_t blocks_per_map,
                    unsigned char *p)
{
  memset (p, 0, META_SLOT);
  memcpy (p, META_MAGIC, 8);
  put32 (p + 8, META_VERSION);
  put64 (p + 16, h->generation);
  put64 (p + 24, h->seq);
  put32 (p + 32, h->number);
  put32 (p + 36, h->state);
  put32 (p + 40, h->flags);
  put32 (p + 44, h->chunksize);
  put64 (p + 48, h->nchunks);
  put64 (p + 56, h->origin_size);
  put64 (p + 64, h->origin_dev);
  put64 (p + 72, h->origin_ino);
  put32 (p + 80, h->origin_kind);
  put64 (p + 88, h->maxsize);
  put64 (p + 96, h->max_backfile_size);
  put64 (p + 104, (uint64_t) h->create_time);
  put64 (p + 112, META_MAPS_OFFSET);
  put32 (p + 120, blocks_per_map);
  put32 (p + 124, META_NMAPS);
  put_str (p + 128, h->uuid, 40);
  put_str (p + 256, h->origin_path, 1024);
  put_str (p + 1280, h->store_path, 1024);
  put_str (p + 2304, h->mountpoint, 1024);
  put_str (p + 3328, h->reason, 256);
  put_str (p + 3584, h->group, 40);
  put32 (p + 12, crc32c (0, p, META_SLOT));
}

/* Decode a header slot; returns false if it is not a valid header. */
static bool
meta_decode_header (unsigned char *p, struct meta_header *h,
                    uint32_t *blocks_per_map, uint32_t *nmaps)
{
  uint32_t crc = get32 (p + 12);
  put32 (p + 12, 0);
  if (memcmp (p, META_MAGIC, 8) != 0 || crc32c (0, p, META_SLOT) != crc)
    return false;
  memset (h, 0, sizeof *h);
  h->version = get32 (p + 8);
  h->generation = get64 (p + 16);
  h->seq = get64 (p + 24);
  h->number = get32 (p + 32);
  h->state = get32 (p + 36);
  h->flags = get32 (p + 40);
  h->chunksize = get32 (p + 44);
  h->nchunks = get64 (p + 48);
  h->origin_size = get64 (p + 56);
  h->origin_dev = get64 (p + 64);
  h->origin_ino = get64 (p + 72);
  h->origin_kind = get32 (p + 80);
  h->maxsize = get64 (p + 88);
  h->max_backfile_size = get64 (p + 96);
  h->create_time = (int64_t) get64 (p + 104);
  *blocks_per_map = get32 (p + 120);
  *nmaps = get32 (p + 124);
  get_str (h->uuid, p + 128, sizeof h->uuid);
  get_str (h->origin_path, p + 256, sizeof h->origin_path);
  get_str (h->store_path, p + 1280, sizeof h->store_path);
  get_str (h->mountpoint, p + 2304, sizeof h->mountpoint);
  get_str (h->reason, p + 3328, sizeof h->reason);
  get_str (h->group, p + 3584, sizeof h->group);
  return get64 (p + 112) == META_MAPS_OFFSET && h->version >= 1;
}

static void
meta_encode_block (const struct bitmap *bm, unsigned map, uint32_t k,
                   unsigned char *p)
{
  uint64_t nwords = (bm->nbits + 63) / 64;
  put32 (p + 4, (uint32_t) map << 28 | k);
  for (unsigned w = 0; w < META_WORDS_PER_BLOCK; w++) {
    uint64_t i = (uint64_t) k * META_WORDS_PER_BLOCK + w;
    put64 (p + 8 + 8 * w, i < nwords ? atomic_load (&bm->words[i]) : 0);
  }
  put32 (p, crc32c (0, p + 4, META_BLOCK - 4));
}

static bool
meta_decode_block (const unsigned char *p, unsigned map, uint32_t k,
                   struct bitmap *bm)
{
  if (get32 (p) != crc32c (0, p + 4, META_BLOCK - 4)
      || get32 (p + 4) != ((uint32_t) map << 28 | k))
    return false;
  uint64_t nwords = (bm->nbits + 63) / 64;
  for (unsigned w = 0; w < META_WORDS_PER_BLOCK; w++) {
    uint64_t i = (uint64_t) k * META_WORDS_PER_BLOCK + w;
    if (i < nwords)
      atomic_store (&bm->words[i], get64 (p + 8 + 8 * w));
  }
  return true;
}

static uint64_t
meta_block_offset (const struct meta *m, unsigned map, uint32_t k)
{
  return META_MAPS_OFFSET
    + ((uint64_t) map * m->blocks_per_map + k) * META_BLOCK;
}

/* Write blocks [first, first+count) of one map from bm. */
static int
meta_write_blocks (struct meta *m, unsigned map, const struct bitmap *bm,
                   uint32_t first, uint32_t count)
{
  unsigned char *buf = malloc ((size_t) META_IO_BLOCKS * META_BLOCK);
  if (!buf)
    return -ENOMEM;
  int r = 0;
  while (r == 0 && count > 0) {
    uint32_t n = count < META_IO_BLOCKS ? count : META_IO_BLOCKS;
    for (uint32_t i = 0; i < n; i++)
      meta_encode_block (bm, map, first + i, buf + (size_t) i * META_BLOCK);
    r = io_pwrite_full (m->io, m->fd, buf, (size_t) n * META_BLOCK,
                        meta_block_offset (m, map, first));
    first += n;
    count -= n;
  }
  free (buf);
  return r;
}

static struct meta *
meta_alloc (const struct fssnap_io *io, const char *path, uint64_t nchunks)
{
  struct meta *m = calloc (1, sizeof *m);
  if (!m)
    return NULL;
  m->io = io;
  m->fd = -1;
  m->blocks_per_map = meta_blocks_per_map (nchunks);
  pthread_mutex_init (&m->lock, NULL);
  bool ok = (m->path = strdup (path)) != NULL
    && bitmap_init (&m->dirty, META_NMAPS * (uint64_t) m->blocks_per_map) == 0;
  for (unsigned map = META_MAP_OWNER; ok && map < META_NMAPS; map++)
    ok = bitmap_init (&m->durable[map], nchunks) == 0;
  if (!ok) {
    meta_close (m, false);
    return NULL;
  }
  return m;
}

/* Caller holds m->lock (or owns m alone). */
static int
meta_write_header_locked (struct meta *m, bool sync)
{
  unsigned char slot[META_SLOT];
  m->hdr.generation++;
  meta_encode_header (&m->hdr, m->blocks_per_map, slot);
  int r = io_pwrite_full (m->io, m->fd, slot, META_SLOT,
                          (m->hdr.generation % 2) * META_SLOT);
  if (r == 0 && sync)
    r = m->io->fsync (m->io->opaque, m->fd);
  return r;
}

int
meta_set_state (struct meta *m, enum meta_state state, const char *reason,
                bool sync)
{
  pthread_mutex_lock (&m->lock);
  m->hdr.state = state;
  snprintf (m->hdr.reason, sizeof m->hdr.reason, "%s", reason);
  int r = meta_write_header_locked (m, sync);
  pthread_mutex_unlock (&m->lock);
  return r;
}

int
meta_set_flags (struct meta *m, uint32_t mask, uint32_t flags, bool sync)
{
  int r = 0;
  pthread_mutex_lock (&m->lock);
  uint32_t now = (m->hdr.flags & ~mask) | (flags & mask);
  if (now != m->hdr.flags) {
    m->hdr.flags = now;
    r = meta_write_header_locked (m, sync);
  }
  pthread_mutex_unlock (&m->lock);
  return r;
}

int
meta_create (const struct fssnap_io *io, const char *path,
             const struct meta_header *hdr, const struct bitmap *cand,
             const struct bitmap *changed, bool sync, struct meta **mp,
             char *err, size_t errlen)
{
  struct meta *m = meta_alloc (io, path, hdr->nchunks);
  if (!m)
    return -ENOMEM;
  m->hdr = *hdr;
  m->hdr.version = META_VERSION;
  m->hdr.generation = 0;
  memcpy ((void *) m->durable[META_MAP_CHANGED].words, (void *) changed->words,
          (changed->nbits + 63) / 64 * sizeof (uint64_t));
  int r = m->fd = io->open (io->opaque, path,
                            O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (r >= 0) {
    unsigned char zero[META_SLOT] = { 0 };
    r = io_pwrite_full (io, m->fd, zero, META_SLOT, 0);   /* slot 0 empty */
    if (r == 0)
      r = meta_write_blocks (m, META_MAP_CAND, cand, 0, m->blocks_per_map);
    for (unsigned map = META_MAP_OWNER; r == 0 && map < META_NMAPS; map++)
      r = meta_write_blocks (m, map, &m->durable[map], 0, m->blocks_per_map);
    if (r == 0)
      r = meta_write_header_locked (m, sync);             /* generation 1 */
  }
  if (r < 0) {
    snprintf (err, errlen, "cannot write snapshot metadata %s: %s", path,
              strerror (-r));
    meta_close (m, m->fd >= 0);
    return r;
  }
  *mp = m;
  return 0;
}

/* Pick the newest valid header slot.  Returns 0, -EBADMSG if the file is
 * damaged (neither slot valid, inconsistent geometry), -EPROTONOSUPPORT
 * for a newer format, or the read error (a fault, not damage).
 */
static int
meta_read_header (struct meta *m, uint32_t *nmaps, char *err, size_t errlen)
{
  unsigned char slots[2][META_SLOT];
  struct meta_header h[2];
  uint32_t bpm[2], nm[2];
  bool ok[2];
  ssize_t got = io_pread_upto (m->io, m->fd, slots, sizeof slots, 0);
  if (got < 0) {
    snprintf (err, errlen, "cannot read the metadata header: %s",
              strerror ((int) -got));
    return (int) got;
  }
  if ((size_t) got < sizeof slots) {
    snprintf (err, errlen, "metadata file truncated (%zd bytes)", got);
    return -EBADMSG;
  }
  for (int i = 0; i < 2; i++)
    ok[i] = meta_decode_header (slots[i], &h[i], &bpm[i], &nm[i]);
  if (!ok[0] && !ok[1]) {
    snprintf (err, errlen, "metadata header damaged (bad magic or checksum)");
    return -EBADMSG;
  }
  int best = !ok[0] || (ok[1] && h[1].generation > h[0].generation);
  if (h[best].version > META_VERSION) {
    snprintf (err, errlen, "metadata format version %u is newer than this "
              "fssnapd's (%u)", h[best].version, META_VERSION);
    return -EPROTONOSUPPORT;
  }
  m->hdr = h[best];
  *nmaps = nm[best];
  if (bpm[best] != meta_blocks_per_map (m->hdr.nchunks)
      || *nmaps < META_NMAPS) {
    snprintf (err, errlen, "metadata header inconsistent (map geometry)");
    return -EBADMSG;
  }
  return 0;
}

/* Read and check every block of one map into bm. */
static int
meta_read_map (struct meta *m, unsigned map, struct bitmap *bm, char *err,
               size_t errlen)
{
  unsigned char *buf = malloc ((size_t) META_IO_BLOCKS * META_BLOCK);
  if (!buf)
    return -ENOMEM;
  int r = 0;
  for (uint32_t k = 0; r == 0 && k < m->blocks_per_map; k += META_IO_BLOCKS) {
    uint32_t n = m->blocks_per_map - k < META_IO_BLOCKS
                   ? m->blocks_per_map - k : META_IO_BLOCKS;
    size_t want = (size_t) n * META_BLOCK;
    ssize_t got = io_pread_upto (m->io, m->fd, buf, want,
                                 meta_block_offset (m, map, k));
    r = got < 0 ? (int) got : (size_t) got < want ? -EBADMSG : 0;
    if (got < 0)
      snprintf (err, errlen, "cannot read map %c of the metadata: %s",
                "CODA"[map], strerror (-r));
    else if (r < 0)
      snprintf (err, errlen, "metadata file truncated (in map %c)",
                "CODA"[map]);
    for (uint32_t i = 0; r == 0 && i < n; i++)
      if (!meta_decode_block (buf + (size_t) i * META_BLOCK, map, k + i, bm)) {
        snprintf (err, errlen, "metadata block %u of map %c damaged "
                  "(bad checksum)", k + i, "CODA"[map]);
        r = -EBADMSG;
      }
  }
  free (buf);
  return r;
}

int
meta_load (const struct fssnap_io *io, const char *path, struct meta **mp,
           struct bitmap maps[META_NMAPS], char *err, size_t errlen)
{
  *mp = NULL;
  memset (maps, 0, META_NMAPS * sizeof *maps);
  int fd = io->open (io->opaque, path, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    snprintf (err, errlen, "cannot open %s: %s", path, strerror (-fd));
    return fd;
  }
  struct meta tmp = { .io = io, .fd = fd };
  uint32_t nmaps;
  int r = meta_read_header (&tmp, &nmaps, err, errlen);
  if (r < 0) {
    io->close (io->opaque, fd);
    return r;
  }
  struct meta *m = meta_alloc (io, path, tmp.hdr.nchunks);
  if (!m) {
    io->close (io->opaque, fd);
    snprintf (err, errlen, "out of memory for the metadata maps");
    return -ENOMEM;
  }
  m->fd = fd;
  m->hdr = tmp.hdr;
  for (unsigned map = 0; r == 0 && map < META_NMAPS; map++) {
    r = bitmap_init (&maps[map], m->hdr.nchunks);
    if (r < 0)
      snprintf (err, errlen, "out of memory for the metadata maps");
    else
      r = meta_read_map (m, map, &maps[map], err, errlen);
  }
  for (unsigned map = META_MAP_OWNER; r == 0 && map < META_NMAPS; map++)
    memcpy ((void *) m->durable[map].words, (void *) maps[map].words,
            (maps[map].nbits + 63) / 64 * sizeof (uint64_t));
  if (r < 0) {
    for (unsigned map = 0; map < META_NMAPS; map++)
      bitmap_free (&maps[map]);
    meta_close (m, false);
    return r;
  }
  *mp = m;
  return 0;
}

int
meta_rename (struct meta *m, const char *path)
{
  char *copy = strdup (path);
  if (!copy)
    return -ENOMEM;
  int r = m->io->rename (m->io->opaque, m->path, path);
  if (r < 0) {
    free (copy);
    return r;
  }
  free (m->path);
  m->path = copy;
  return 0;
}

struct meta *
meta_placeholder (const struct fssnap_io *io, const char *path)
{
  return meta_alloc (io, path, 0);
}

void
meta_set_bit (struct meta *m, enum meta_map map, uint64_t chunk)
{
  if (bitmap_set (&m->durable[map], chunk))
    return;
  bitmap_set (&m->dirty, (uint64_t) map * m->blocks_per_map
                           + chunk / META_BITS_PER_BLOCK);
}

int
meta_write_map (struct meta *m, enum meta_map map, const struct bitmap *src,
                bool sync)
{
  pthread_mutex_lock (&m->lock);
  struct bitmap *dst = &m->durable[map];
  for (uint64_t w = 0; w < (dst->nbits + 63) / 64; w++)
    atomic_store (&dst->words[w], atomic_load (&src->words[w]));
  int r = meta_write_blocks (m, map, dst, 0, m->blocks_per_map);
  if (r == 0 && sync)
    r = m->io->fsync (m->io->opaque, m->fd);
  pthread_mutex_unlock (&m->lock);
  return r;
}

int
meta_flush (struct meta *m)
{
  int r = 0;
  pthread_mutex_lock (&m->lock);
  uint64_t k = bitmap_find (&m->dirty, 0, true);
  while (r == 0 && k < m->dirty.nbits) {
    uint64_t end = bitmap_find (&m->dirty, k, false);
    uint64_t map_end = (k / m->blocks_per_map + 1) * m->blocks_per_map;
    if (end > map_end)
      end = map_end;
    unsigned map = k / m->blocks_per_map;
    r = meta_write_blocks (m, map, &m->durable[map], k % m->blocks_per_map,
                           end - k);
    for (uint64_t i = k; r == 0 && i < end; i++)
      bitmap_clear (&m->dirty, i);
    k = bitmap_find (&m->dirty, end, true);
  }
  if (r == 0)
    r = m->io->fsync (m->io->opaque, m->fd);
  pthread_mutex_unlock (&m->lock);
  return r;
}

int
meta_close (struct meta *m, bool remove)
{
  int r = 0;
  if (!m)
    return 0;
  if (m->fd >= 0)
    m->io->close (m->io->opaque, m->fd);
  if (remove && m->path) {
    r = m->io->unlink (m->io->opaque, m->path);
    if (r == -EIO)
      r = m->io->unlink (m->io->opaque, m->path);
  }
  for (unsigned map = 0; map < META_NMAPS; map++)
    bitmap_free (&m->durable[map]);
  bitmap_free (&m->dirty);
  pthread_mutex_destroy (&m->lock);
  free (m->path);
  free (m);
  return r;
}
