/* SPDX-License-Identifier: MIT */
/*
 * libfssnap: the copy-on-write snapshot engine of fssnap.
 *
 * One struct fssnap_origin is one live volume (image file or block device).
 * Every write to it goes through fssnap_origin_write/_zero/_trim, which first
 * copies aside the old contents of each chunk that some snapshot still needs
 * (copy-on-write), then lets the new data reach the origin.  Snapshots are
 * numbered from 0; a number is reused only after the snapshot that held it
 * is deleted and closed, so each snapshot also carries a UUID.
 *
 * Conventions:
 *  - Every function returning int returns 0 (or a count) on success and a
 *    negative errno on failure.  Nothing is changed on failure.
 *  - Offsets and lengths are bytes; requests may be unaligned and may span
 *    chunks.  A request outside the device returns -EINVAL.
 *  - All calls are thread-safe: frontends call them from many threads.
 *
 * This header compiles on its own (tests/unit/test-header.c checks it).
 */
#ifndef LIBFSSNAP_H
#define LIBFSSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What libfssnap.a exports: the engine is built with hidden visibility and
 * its archive keeps only these symbols global (tests/test-lib-symbols.sh).
 */
#define FSSNAP_API __attribute__ ((visibility ("default")))

#define FSSNAP_CHUNKSIZE_MIN     512u
#define FSSNAP_CHUNKSIZE_MAX     (1u << 20)
#define FSSNAP_CHUNKSIZE_DEFAULT (64u << 10)
#define FSSNAP_MEM_DEFAULT       (64u << 20)  /* max_mem_chunks * chunksize */
#define FSSNAP_MAX_SNAPSHOTS     256
#define FSSNAP_UUID_STRLEN       37           /* with the terminating NUL */

struct fssnap_origin;
struct fssnap_snapshot;      /* an open snapshot: a reader's handle */
struct fssnap_candidates;    /* the candidate bitmap while it is built */

/* ---- Logging ---------------------------------------------------------- */

enum fssnap_log_level { FSSNAP_LOG_ERR, FSSNAP_LOG_WARN, FSSNAP_LOG_INFO,
                        FSSNAP_LOG_DEBUG };
typedef void (*fssnap_log_fn) (void *opaque, enum fssnap_log_level level,
                               const char *msg);

/* ---- I/O layer -------------------------------------------------------- */

/* Every file the engine touches (origin, backing stores) is reached through
 * these calls, so that a test can inject faults, slow a store down or record
 * writes and syncs to simulate a power loss.  fssnap_io_posix() is the real
 * one.  Each call returns what the system call returns, except that errors
 * are returned as negative errno values instead of -1 + errno.
 */
struct fssnap_io {
  void *opaque;
  int (*open) (void *opaque, const char *path, int flags, mode_t mode);
  int (*close) (void *opaque, int fd);
  ssize_t (*pread) (void *opaque, int fd, void *buf, size_t len, off_t off);
  ssize_t (*pwrite) (void *opaque, int fd, const void *buf, size_t len,
                     off_t off);
  int (*fsync) (void *opaque, int fd);
  /* Size in bytes of a regular file or block device. */
  int (*getsize) (void *opaque, int fd, uint64_t *size);
  /* Make [off, off+len) read back as zeros (must succeed or fail cleanly);
   * may leave a hole (FSSNAP_ZERO_NO_HOLE requests are written as zeros).
   */
  int (*zero) (void *opaque, int fd, off_t off, off_t len);
  /* Tell the device [off, off+len) is unused; may return -EOPNOTSUPP.  On
   * a regular file the range is then a hole that reads as zeros.
   */
  int (*discard) (void *opaque, int fd, off_t off, off_t len);
  int (*unlink) (void *opaque, const char *path);
  int (*rename) (void *opaque, const char *from, const char *to);
  /* Allocate [off, off+len) of a regular file, data unchanged, the size
   * grown to cover it (fallocate mode 0); only advice: may be NULL or
   * fail (-EOPNOTSUPP, -ENOSPC...), and the writes go ahead regardless.
   */
  int (*allocate) (void *opaque, int fd, off_t off, off_t len);
  /* Write iovcnt buffers at off in one call, as pwritev(2); may be NULL
   * (then each buffer is written with pwrite).
   */
  ssize_t (*pwritev) (void *opaque, int fd, const struct iovec *iov,
                      int iovcnt, off_t off);
};

FSSNAP_API const struct fssnap_io *fssnap_io_posix (void);

/* ---- Origin ----------------------------------------------------------- */

struct fssnap_origin_opts {
  const char *path;             /* image file or block device (required) */
  const char *state_dir;        /* default place for backing stores */
  uint32_t chunksize;           /* 0: set by the first snapshot */
  uint64_t max_mem;             /* bytes of copies held in memory; 0: default */
  unsigned writer_threads;      /* store writers; 0: default (8) */
  const struct fssnap_io *io;   /* NULL: fssnap_io_posix() */
  fssnap_log_fn log;            /* NULL: stderr */
  void *log_opaque;
  /* use_fd: fd is an open read-write descriptor of path that the engine
   * uses instead of opening path itself, and closes (at close, or when
   * the open fails), so that the caller's claim on it (an flock, a lease,
   * O_EXCL) is on the engine's own descriptor and no second open of the
   * origin exists.  Only with the POSIX I/O layer.
   */
  bool use_fd;
  int fd;
};

FSSNAP_API int fssnap_origin_open (const struct fssnap_origin_opts *opts,
                        struct fssnap_origin **originp);
/* Waits for every queued store write, then frees everything.  Snapshot
 * handles must have been closed.
 */
FSSNAP_API void fssnap_origin_close (struct fssnap_origin *origin);

FSSNAP_API uint64_t fssnap_origin_size (const struct fssnap_origin *origin);
FSSNAP_API uint32_t fssnap_origin_chunksize (const struct fssnap_origin *origin);
FSSNAP_API const char *fssnap_origin_path (const struct fssnap_origin *origin);

FSSNAP_API int fssnap_origin_read (struct fssnap_origin *origin, void *buf, size_t len,
                        uint64_t off);
/* The same bytes as fssnap_origin_read, but read from the origin with
 * O_DIRECT, past the page cache, when buf, off and len are multiples of
 * FSSNAP_DIRECT_ALIGN and the origin takes it (through the cache
 * otherwise, and always for an image file handed over as a descriptor:
 * a second open of it would break its owner's lease).  For frontends whose clients cache above us (a block device's
 * page cache, the file system on it): large reads are then not copied
 * through a second cache.  Dirty cached data of the range is written back
 * first by the kernel, so nothing written is missed.
 */
#define FSSNAP_DIRECT_ALIGN 4096u
FSSNAP_API int fssnap_origin_read_direct (struct fssnap_origin *origin, void *buf,
                               size_t len, uint64_t off);

#define FSSNAP_FUA 1u   /* write: make this request durable before returning */
FSSNAP_API int fssnap_origin_write (struct fssnap_origin *origin, const void *buf,
                         size_t len, uint64_t off, unsigned flags);
/* Whether fssnap_origin_write of [off, off+len) may have to wait for a
 * copy-on-write copy or a commit: true when some chunk of it is not yet
 * copied for a snapshot that needs it, or when that cannot be told at
 * once; false promises neither (the write's own I/O may still sleep).
 * Cheap and never blocks: for a frontend choosing which thread runs the
 * write.
 */
FSSNAP_API bool fssnap_origin_write_may_wait (struct fssnap_origin *origin,
                                              uint64_t off, size_t len);
/* Write zeros.  FSSNAP_ZERO_NO_HOLE: the range must stay allocated (zeros
 * are written); without it the I/O layer's zero may deallocate it.
 */
#define FSSNAP_ZERO_NO_HOLE 2u
FSSNAP_API int fssnap_origin_zero (struct fssnap_origin *origin, size_t len,
                        uint64_t off, unsigned flags);
/* Discard: afterwards the range reads as zeros on image files and as
 * unspecified data on devices without deterministic discard; snapshots are
 * preserved exactly as for a write.
 */
FSSNAP_API int fssnap_origin_trim (struct fssnap_origin *origin, size_t len,
                        uint64_t off, unsigned flags);
/* Make every acknowledged write durable on the origin. */
FSSNAP_API int fssnap_origin_flush (struct fssnap_origin *origin);
/* Count one open of the origin by someone else (the caller watches for
 * them, e.g. with a lease): shown as opened_elsewhere in the stats.
 */
FSSNAP_API void fssnap_origin_note_opened_elsewhere (struct fssnap_origin *origin);

/* ---- Snapshot creation ------------------------------------------------ */

/* Called during creation while origin writes are quiesced: mark every byte
 * range that holds data (file system allocation maps).  Chunks never marked
 * read as zeros from the snapshot and are never copied.
 */
typedef int (*fssnap_candidate_fn) (void *opaque,
                                    struct fssnap_candidates *cands);

/* What the candidate callback may use. */
FSSNAP_API const char *fssnap_candidates_origin_path (const struct fssnap_candidates *);
FSSNAP_API uint64_t fssnap_candidates_origin_size (const struct fssnap_candidates *);
FSSNAP_API uint32_t fssnap_candidates_chunksize (const struct fssnap_candidates *);
/* The engine's descriptor of the origin, for pread (never close it, nor
 * move it: dup it if a library wants its own), or -1 when the I/O layer is
 * not the POSIX one.  Reading through it opens nothing, so a lease on the
 * origin is not broken by the daemon itself.
 */
FSSNAP_API int fssnap_candidates_origin_fd (const struct fssnap_candidates *);
/* The create's mountpoint (frozen by the caller, as fssnap create --mount
 * does), or NULL.
 */
FSSNAP_API const char *fssnap_candidates_mountpoint (const struct fssnap_candidates *);
/* Mark the chunks covering [off, off+len); ranges past the end are clipped. */
FSSNAP_API void fssnap_candidates_mark (struct fssnap_candidates *, uint64_t off,
                             uint64_t len);
FSSNAP_API void fssnap_candidates_mark_all (struct fssnap_candidates *);

struct fssnap_create_opts {
  const char *backing_store;    /* directory or file; NULL: state_dir */
  uint64_t maxsize;             /* bytes of backing store; 0: unlimited */
  uint32_t chunksize;           /* 0: the origin's (or the default) */
  uint64_t max_backfile_size;   /* split the store; 0: one file */
  bool unlink;                  /* unlink the store files once open */
  bool transient;               /* gone at restart, no syncs */
  const char *mountpoint;       /* recorded for info; may be NULL */
  const char *group;            /* a group UUID shared with snapshots of
                                   other volumes taken in the same instant;
                                   recorded for info; may be NULL */
  fssnap_candidate_fn candidates;  /* NULL: every chunk is a candidate */
  void *candidates_opaque;
};

/* Create a snapshot; its number is returned in *nump.  On failure an
 * explanation is put in errmsg (if non-NULL).
 */
FSSNAP_API int fssnap_snapshot_create (struct fssnap_origin *origin,
                            const struct fssnap_create_opts *opts,
                            unsigned *nump, char *errmsg, size_t errlen);

/* Delete a snapshot (-EBUSY while it is offline: its files cannot be
 * read, so what older snapshots need from it is unknown).  It stops taking copies at once; if it is open, the
 * number is released when the last handle closes (reads then fail with
 * -EIO).  Data that older snapshots still read is kept until they go.
 */
FSSNAP_API int fssnap_snapshot_delete (struct fssnap_origin *origin, unsigned num);

/* ---- Reading a snapshot ---------------------------------------------- */

/* -ENOENT: no such snapshot; -EIO: disabled; -EAGAIN: offline (its files
 * cannot be read now; fssnap_snapshot_info gives the reason).
 */
FSSNAP_API int fssnap_snapshot_open (struct fssnap_origin *origin, unsigned num,
                          struct fssnap_snapshot **snapp);
FSSNAP_API void fssnap_snapshot_close (struct fssnap_snapshot *snap);
FSSNAP_API unsigned fssnap_snapshot_number (const struct fssnap_snapshot *snap);
FSSNAP_API uint64_t fssnap_snapshot_size (const struct fssnap_snapshot *snap);

/* -EIO once the snapshot is disabled or deleted. */
FSSNAP_API int fssnap_snapshot_read (struct fssnap_snapshot *snap, void *buf,
                          size_t len, uint64_t off);

/* Report the extents of [off, off+len) in order: data (a candidate chunk)
 * or hole (reads as zeros).  The callback returns 0 to go on, non-zero to
 * stop (returned as is).
 */
typedef int (*fssnap_extent_fn) (void *opaque, uint64_t off, uint64_t len,
                                 bool hole);
FSSNAP_API int fssnap_snapshot_extents (struct fssnap_snapshot *snap, uint64_t off,
                             uint64_t len, fssnap_extent_fn fn, void *opaque);

/* ---- Changed-block tracking ------------------------------------------ */

/* Which chunks may differ between two points in time.  Each snapshot keeps
 * the chunks written between the previous snapshot and its own creation
 * (trims and write-zeroes count as writes); the volume, the chunks written
 * since the newest snapshot.  Chunks that were not candidates (free space
 * when the snapshot was taken) read as zeros in a snapshot: they count as
 * changed where the other side may read otherwise.  The maps are exact across restarts and
 * crashes, except where a snapshot was transient or its metadata damaged:
 * then the comparison fails with -ESTALE instead of answering wrong.
 */
#define FSSNAP_VOLUME (-1)

/* Report the extents of [off, off+len) in order, as fn (opaque, off, len,
 * hole): hole false where the data may differ between snapshots a and b,
 * true where it is the same.  Either of a and b may be FSSNAP_VOLUME, the
 * live volume; their order does not matter.  Extents are whole chunks,
 * clipped to [off, off+len).  Returns 0 (or the callback's non-zero
 * value), -ENOENT if a snapshot does not exist, -EINVAL for a bad range,
 * -ESTALE if a map it needs cannot be trusted, -EAGAIN if a snapshot it
 * needs is offline (why in errmsg).  fn runs
 * under the engine's snapshot lock: it must not create, delete, open or
 * close snapshots.
 */
FSSNAP_API int fssnap_changes (struct fssnap_origin *origin, int a, int b, uint64_t off,
                    uint64_t len, fssnap_extent_fn fn, void *opaque,
                    char *errmsg, size_t errlen);

/* ---- Rollback (engine/rollback.c) ------------------------------------ */

/* Progress of a rollback, passed to its callback after each chunk. */
struct fssnap_rollback_progress {
  unsigned number;              /* the target snapshot */
  char uuid[FSSNAP_UUID_STRLEN];
  uint64_t chunks;              /* chunks that may differ: to examine */
  uint64_t examined;            /* examined so far */
  uint64_t moved;               /* of those, rewritten from the snapshot */
};
/* Returns 0 to go on, non-zero to stop (the rollback returns -EINTR and
 * stays pending).
 */
typedef int (*fssnap_rollback_fn) (void *opaque,
                                   const struct fssnap_rollback_progress *p);

/* Make the volume read exactly as snapshot num, through ordinary
 * copy-on-write writes, so that every other snapshot stays exact.  The
 * intent is durable in state_dir (ORIGIN.rollback) from before the first
 * write until after the final flush; call again with the same num after a
 * crash to finish it (uuid: the recorded one, or NULL for any).  Refuses
 * with -EBUSY while a rollback to another snapshot is pending, unless that
 * snapshot is gone (its rollback can never finish; this one replaces it).  Nothing
 * stops other writers meanwhile: the caller makes sure there are none.
 * On success ORIGIN.rolledback records the target for
 * fssnap_rollback_last.  Why it failed goes in errmsg.
 */
FSSNAP_API int fssnap_rollback (struct fssnap_origin *origin, const char *state_dir,
                     unsigned num, const char *uuid, fssnap_rollback_fn fn,
                     void *opaque, char *errmsg, size_t errlen);
/* The unfinished rollback recorded in state_dir: 1 with its target's
 * number and uuid (FSSNAP_UUID_STRLEN bytes), 0 if none, -EBADMSG if the
 * record is damaged.
 */
FSSNAP_API int fssnap_rollback_pending (struct fssnap_origin *origin,
                             const char *state_dir, unsigned *num,
                             char *uuid);
/* The target of the last completed rollback, as fssnap_rollback_pending. */
FSSNAP_API int fssnap_rollback_last (struct fssnap_origin *origin, const char *state_dir,
                          unsigned *num, char *uuid);

/* As fssnap_changes, but where the maps say a chunk may differ, compare
 * the contents of both sides now and report a hole if they are equal.
 * Extents are at most one chunk; the maps falling back to every chunk
 * when they cannot be trusted.  Costs a read of both sides of every chunk
 * the maps name.  fn runs outside every engine lock.
 */
FSSNAP_API int fssnap_changes_exact (struct fssnap_origin *origin, int a, int b,
                          uint64_t off, uint64_t len, fssnap_extent_fn fn,
                          void *opaque, char *errmsg, size_t errlen);

/* ---- Writable clones (engine/clone.c) -------------------------------- */

/* A clone reads as its base snapshot except where it was written; writes
 * go to a sparse overlay in the state dir, never to the snapshot.  The
 * clones of an origin are a set, opened once (it reopens those recorded
 * in the state dir).  A clone holds its base snapshot open.
 */
#define FSSNAP_MAX_CLONES 256
struct fssnap_clones;
struct fssnap_clone;

struct fssnap_clone_info {
  unsigned number;
  uint64_t serial;              /* unique while the set is open */
  unsigned base;                /* the base snapshot ... */
  char base_uuid[FSSNAP_UUID_STRLEN];   /* ... and its UUID */
  uint64_t size;
  uint32_t chunksize;
  uint64_t written_chunks;      /* chunks the overlay holds */
  int64_t create_time;
  char overlay_path[4096];
};

/* Open the clone set of origin, reopening the clones in state_dir; a
 * clone that cannot be trusted or whose base is gone is logged and not
 * served (its files are kept).
 */
FSSNAP_API int fssnap_clones_open (struct fssnap_origin *origin, const char *state_dir,
                        fssnap_log_fn log, void *log_opaque,
                        struct fssnap_clones **setp);
/* Flush and close every clone.  Users must have put their references. */
FSSNAP_API void fssnap_clones_close (struct fssnap_clones *set);
/* A new clone of snapshot snap, with the lowest free number. */
FSSNAP_API int fssnap_clones_create (struct fssnap_clones *set, unsigned snap,
                          unsigned *nump, char *errmsg, size_t errlen);
/* Remove clone num and its files; users keep their handles until put. */
FSSNAP_API int fssnap_clones_delete (struct fssnap_clones *set, unsigned num);
/* Numbers in use, ascending; returns how many (possibly more than max). */
FSSNAP_API int fssnap_clones_list (struct fssnap_clones *set, unsigned *nums,
                        size_t max);
FSSNAP_API int fssnap_clones_info (struct fssnap_clones *set, unsigned num,
                        struct fssnap_clone_info *info);

/* A reference to clone num (-ENOENT), for a frontend's connection. */
FSSNAP_API int fssnap_clone_get (struct fssnap_clones *set, unsigned num,
                      struct fssnap_clone **clonep);
FSSNAP_API void fssnap_clone_put (struct fssnap_clone *clone);
FSSNAP_API void fssnap_clone_info (struct fssnap_clone *clone,
                        struct fssnap_clone_info *info);
FSSNAP_API uint64_t fssnap_clone_size (const struct fssnap_clone *clone);
FSSNAP_API int fssnap_clone_read (struct fssnap_clone *clone, void *buf, size_t len,
                       uint64_t off);
/* flags: FSSNAP_FUA. */
FSSNAP_API int fssnap_clone_write (struct fssnap_clone *clone, const void *buf,
                        size_t len, uint64_t off, unsigned flags);
/* flags: FSSNAP_FUA, FSSNAP_ZERO_NO_HOLE (without it, the overlay's space
 * under the range is freed where it can be).
 */
FSSNAP_API int fssnap_clone_zero (struct fssnap_clone *clone, size_t len, uint64_t off,
                       unsigned flags);
/* Discard: frees the overlay's space under the range; afterwards the range
 * reads as zeros, except in a chunk the clone never wrote and the range
 * covers only in part, which keeps the snapshot's bytes.  flags: FSSNAP_FUA.
 */
FSSNAP_API int fssnap_clone_trim (struct fssnap_clone *clone, size_t len, uint64_t off,
                       unsigned flags);
/* Overlay data durable, then the map of written chunks. */
FSSNAP_API int fssnap_clone_flush (struct fssnap_clone *clone);

/* ---- Information and statistics -------------------------------------- */

enum fssnap_state {
  FSSNAP_STATE_CREATING,
  FSSNAP_STATE_IDLE,            /* valid, no open handle */
  FSSNAP_STATE_ACTIVE,          /* valid, open */
  FSSNAP_STATE_DISABLED,        /* a copy failed: never served */
  FSSNAP_STATE_DELETING,        /* deleted, waiting for the last close */
  FSSNAP_STATE_OFFLINE,         /* its files cannot be read now (EIO,
                                   ENOMEM at start-up): not served, nothing
                                   rewritten; a restart that can read them
                                   brings it back (reason says why) */
};
FSSNAP_API const char *fssnap_state_name (enum fssnap_state state);

struct fssnap_snapshot_info {
  unsigned number;
  uint64_t seq;                 /* creation sequence, never repeats */
  char uuid[FSSNAP_UUID_STRLEN];
  enum fssnap_state state;
  char reason[256];             /* why disabled or offline; else empty */
  uint32_t chunksize;
  uint64_t chunks;              /* chunks in the device */
  uint64_t candidate_chunks;
  uint64_t preserved_chunks;    /* copied aside for this snapshot */
  uint64_t owned_chunks;        /* copies held in this snapshot's store */
  uint64_t backing_bytes;       /* bytes in the backing store */
  uint64_t maxsize;             /* 0: unlimited */
  uint64_t max_backfile_size;   /* 0: one file */
  int64_t create_time;          /* seconds since the epoch */
  unsigned open_count;
  bool transient;
  bool unlinked;
  char backing_path[4096];      /* the first store file */
  unsigned backing_files;
  char mountpoint[4096];
  char group[FSSNAP_UUID_STRLEN];       /* "" when not in a group */
};

/* Fill *info for the snapshot with this number. */
FSSNAP_API int fssnap_snapshot_info (struct fssnap_origin *origin, unsigned num,
                          struct fssnap_snapshot_info *info);

/* Fill nums[] with the numbers in use, ascending; returns how many there
 * are (possibly more than max).
 */
FSSNAP_API int fssnap_snapshot_list (struct fssnap_origin *origin, unsigned *nums,
                          size_t max);

struct fssnap_stats {
  uint64_t size;
  uint32_t chunksize;
  unsigned snapshots;           /* numbers in use */
  unsigned retained;            /* deleted, kept for older snapshots */
  int highest_number;           /* -1: none */
  uint64_t chunks_copied;
  uint64_t bytes_copied;
  uint64_t throttle_waits;
  uint64_t mem_chunks;          /* copies in memory now */
  uint64_t mem_chunks_peak;
  uint64_t max_mem_chunks;
  uint64_t store_errors;
  uint64_t opened_elsewhere;    /* fssnap_origin_note_opened_elsewhere */
  /* Write-back staging: changes acknowledged before their copies were
   * durable, held in memory (and in the staging log) until they reach the
   * origin.  Bounded by max_staged_bytes (= max_mem).
   */
  uint64_t staged_bytes;        /* staged now, record headers included */
  uint64_t staged_bytes_peak;
  uint64_t max_staged_bytes;
  uint64_t staged_writes;       /* changes staged since the origin opened */
  uint64_t staging_waits;       /* writers that waited for staging room */
};
FSSNAP_API void fssnap_origin_stats (struct fssnap_origin *origin,
                          struct fssnap_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* LIBFSSNAP_H */
