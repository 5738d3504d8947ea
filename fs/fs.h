/* SPDX-License-Identifier: MIT */
/*
 * The file system half of fssnap: what lives on the origin, which of its
 * bytes hold data (the candidate bitmap of a new snapshot), and freezing a
 * mounted file system so that what is on the volume is consistent.
 *
 *  - fs_detect      names the file system on a device (libblkid).
 *  - fs_candidates  an fssnap_candidate_fn: a frozen mount point gives
 *                   its GETFSMAP map (fsmap.c, ext4 and XFS); else
 *                   ext2/3/4 marks the blocks the file system uses
 *                   (ext4.c); anything else marks every chunk, since we
 *                   cannot tell data from free space.
 *  - fs_freeze/thaw FIFREEZE/FITHAW on a mount point (freeze.c).
 *
 * None of this keeps global state; every call may run in any thread.
 */
#ifndef FSSNAP_FS_H
#define FSSNAP_FS_H

#include <stddef.h>
#include <stdint.h>

#include "libfssnap.h"

#define FS_TYPE_LEN 32

/* Put the type of the file system on path ("ext4", "xfs", ...) in type,
 * or "" when libblkid finds none.  Returns 0 or a negative errno.
 */
int fs_detect (const char *path, char *type, size_t len);

/* True for the types ext4.c reads. */
int fs_type_is_ext (const char *type);

/* The opaque argument of fs_candidates: set log (may be NULL), read the
 * result after the snapshot is created.  The engine runs candidate
 * callbacks one creation at a time (origin writes quiesced), so a daemon
 * may share one context between clients.
 */
struct fs_candidates_ctx {
  fssnap_log_fn log;
  void *log_opaque;
  /* Files whose loop devices are this volume (NULL-terminated; may be
   * NULL): a mount point given to create is mapped with GETFSMAP only if
   * its file system is on one of them.
   */
  const char *const *volume_files;
  char type[FS_TYPE_LEN];       /* out: what fs_detect found */
  int all;                      /* out: every chunk was marked */
  int fsmap;                    /* out: marked from GETFSMAP (fsmap.c) */
};

/* fssnap_candidate_fn: mark what the file system on the origin uses.
 * With a (frozen) mount point: its GETFSMAP map, when the file system has
 * one and is on the volume; else ext2/3/4 through libext2fs; a file
 * system that is neither, or that cannot be read with confidence, gets
 * every chunk marked.
 */
int fs_candidates (void *ctx, struct fssnap_candidates *cands);

/* ext2/3/4 through libext2fs (ext4.c).  Returns 0 when every used block is
 * marked; a negative errno (and a message in errmsg) when the file system
 * could not be read, in which case the caller must mark everything.
 */
int ext4_candidates (struct fssnap_candidates *cands,
                     char *errmsg, size_t errlen);

/* Mark every byte of the volume that is not free space in the GETFSMAP
 * map of the file system mounted on mountpoint (fsmap.c); its free bytes
 * go to *free_bytes.  Returns 0, or a negative errno and a message in
 * errmsg when the map cannot be used (no GETFSMAP, not on one of
 * volume_files, other devices): some chunks may be marked already, and
 * the caller must mark at least what another method finds.
 */
int fsmap_candidates (const char *mountpoint, const char *const *volume_files,
                      struct fssnap_candidates *cands, uint64_t *free_bytes,
                      char *errmsg, size_t errlen);

/* Freeze the file system mounted on mountpoint; on success *fdp is an open
 * descriptor of the mount point that fs_thaw takes (and closes).  Returns a
 * negative errno: -EINVAL when mountpoint is not the root of a mount.
 */
int fs_freeze (const char *mountpoint, int *fdp);
int fs_thaw (int fd);

#endif /* FSSNAP_FS_H */
