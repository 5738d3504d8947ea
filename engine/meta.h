/* SPDX-License-Identifier: MIT */
/*
 * Snapshot metadata files: what lets a snapshot survive a restart or a
 * crash.  The format is described in meta.c and docs/format.md.
 *
 * A struct meta is written by its creator, then by the committer
 * (commit.c: bitmap bits), by state changes and by change-map merges.
 * meta->lock (a leaf) guards the header after creation and serialises
 * header writes, bitmap flushes and whole-map writes.
 */
#ifndef FSSNAP_META_H
#define FSSNAP_META_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "libfssnap.h"
#include "common/bitmap.h"

#define META_VERSION 1

enum meta_state { META_CREATING, META_VALID, META_DISABLED, META_DELETED };
/* C and O as in cow.c (H is not stored: recovery derives it from C and
 * O); D: chunks written between the previous snapshot and this one; A:
 * chunks written since this one (kept up to date while it is the newest).
 */
enum meta_map { META_MAP_CAND, META_MAP_OWNER, META_MAP_CHANGED,
                META_MAP_AFTER, META_NMAPS };

#define META_F_TRANSIENT    1u
#define META_F_UNLINK       2u
#define META_F_CHANGED_LOST 4u          /* D cannot be trusted */
#define META_F_AFTER_LOST   8u          /* A cannot be trusted */

#define META_ORIGIN_FILE 1u
#define META_ORIGIN_BLOCKDEV 2u

struct meta_header {
  uint32_t version;
  uint64_t generation;
  uint64_t seq;
  uint32_t number;
  uint32_t state;                       /* enum meta_state */
  uint32_t flags;
  uint32_t chunksize;
  uint64_t nchunks;
  uint64_t origin_size;
  uint32_t origin_kind;
  uint64_t origin_dev, origin_ino;      /* regular files: st_dev, st_ino */
  uint64_t maxsize, max_backfile_size;
  int64_t create_time;
  char uuid[FSSNAP_UUID_STRLEN];
  char origin_path[1024];
  char store_path[1024];
  char mountpoint[1024];
  char reason[256];
  char group[FSSNAP_UUID_STRLEN];       /* "" when not in a group */
};

struct meta {
  const struct fssnap_io *io;
  pthread_mutex_t lock;
  int fd;
  char *path;
  struct meta_header hdr;
  uint32_t blocks_per_map;
  /* What is durable (or being made so) of every map but C: bits by the
   * committer (meta_set_bit), whole maps by meta_write_map.
   */
  struct bitmap durable[META_NMAPS];
  struct bitmap dirty;                  /* blocks to write, map by map */
};

/* Write a new metadata file: header, C and D as given, and empty O and A;
 * fsync it if 'sync'.
 * On error returns a negative errno with a message in err.
 */
int meta_create (const struct fssnap_io *io, const char *path,
                 const struct meta_header *hdr, const struct bitmap *cand,
                 const struct bitmap *changed, bool sync, struct meta **mp,
                 char *err, size_t errlen);

/* Read and verify a metadata file into *mp and the maps (which it
 * allocates).  On failure *mp is NULL, the reason is in err, and the
 * error says what kind of failure it is: -EBADMSG only for proof of
 * damage (a bad checksum, a truncated file, inconsistent geometry);
 * -EPROTONOSUPPORT for a newer format; anything else (-EIO, -ENOMEM,
 * -EINTR ...) is a fault that says nothing about the file.
 */
int meta_load (const struct fssnap_io *io, const char *path,
               struct meta **mp, struct bitmap maps[META_NMAPS],
               char *err, size_t errlen);

/* Give the file its final name (it is created under a temporary one, so
 * that a crash never leaves a half-written file under the final name).
 */
int meta_rename (struct meta *m, const char *path);

/* Record a new state and reason, or new change-map flags (the bits in
 * 'mask' set to 'flags'), in the header and write it (with the next
 * generation, to the other slot); fsync if 'sync'.  Writes nothing when
 * nothing changes.  Takes meta->lock, which guards m->hdr after creation.
 */
int meta_set_state (struct meta *m, enum meta_state state, const char *reason,
                    bool sync);
int meta_set_flags (struct meta *m, uint32_t mask, uint32_t flags, bool sync);

/* Committer: a bit of O or A is durable once the next meta_flush returns. */
void meta_set_bit (struct meta *m, enum meta_map map, uint64_t chunk);
/* Replace a whole map (D or A) with src, write it and fsync if 'sync'.
 * Takes meta->lock.
 */
int meta_write_map (struct meta *m, enum meta_map map,
                    const struct bitmap *src, bool sync);
/* Write the dirty bitmap blocks and fsync.  Takes meta->lock. */
int meta_flush (struct meta *m);

/* A stand-in for a file that cannot be loaded: it only knows its path, so
 * that deleting its snapshot removes it.
 */
struct meta *meta_placeholder (const struct fssnap_io *io, const char *path);

/* Close; with 'remove', delete the file too (an EIO is retried once) and
 * return whether that worked.
 */
int meta_close (struct meta *m, bool remove);

#endif /* FSSNAP_META_H */
