/* SPDX-License-Identifier: MIT */
/*
 * ext2/3/4 allocation maps -> the candidate bitmap of a new snapshot.
 *
 * The origin is read with libext2fs, through the engine's descriptor,
 * while origin writes are quiesced (and, with create --mount, the file
 * system frozen).  A block is
 * marked when any of these says the file system uses it:
 *
 *  1. the block bitmaps.  libext2fs reads them from disk; for a group whose
 *     bitmap was never initialised (BLOCK_UNINIT) it builds one holding the
 *     group's superblock backup, descriptors and reserved GDT blocks and
 *     the bitmaps and inode table of that group, wherever flex_bg put them.
 *  2. the metadata of every group, computed from the descriptors, not from
 *     the bitmaps: superblock and backups, group descriptors (old style or
 *     meta_bg), reserved GDT blocks, block and inode bitmaps, inode tables.
 *     On a sane file system this repeats (1); it costs little and does not
 *     depend on how an uninitialised group's bitmap was synthesized.
 *  3. the internal journal (its inode's blocks, extent tree included) and
 *     the MMP block.
 *  4. the bytes before the first data block (boot sector) and every byte
 *     past the last block of the file system up to the end of the device:
 *     they are not ours to judge.
 *
 * A journal that needs recovery (a mounted, unfrozen file system, or one
 * that crashed) may hold allocations the bitmaps on disk do not show yet,
 * so that case is refused and the caller marks every chunk.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "fs/fs.h"

/* Marks whole blocks, merging neighbours into one call. */
struct ext4_marker {
  struct fssnap_candidates *cands;
  uint64_t blocksize;
  blk64_t start, count;         /* the run not yet passed on */
};

static void
ext4_mark_flush (struct ext4_marker *m)
{
  if (m->count > 0)
    fssnap_candidates_mark (m->cands, m->start * m->blocksize,
                            m->count * m->blocksize);
  m->count = 0;
}

static void
ext4_mark (struct ext4_marker *m, blk64_t blk, blk64_t count)
{
  if (count == 0)
    return;
  if (m->count > 0 && blk == m->start + m->count) {
    m->count += count;
    return;
  }
  ext4_mark_flush (m);
  m->start = blk;
  m->count = count;
}

/* (1) Every run of set bits in the block bitmap. */
static errcode_t
ext4_mark_bitmap (ext2_filsys fs, struct ext4_marker *m)
{
  ext2fs_block_bitmap bmap = fs->block_map;
  blk64_t end = ext2fs_blocks_count (fs->super) - 1;
  blk64_t blk = fs->super->s_first_data_block, set, zero;
  errcode_t err;

  while (blk <= end) {
    err = ext2fs_find_first_set_block_bitmap2 (bmap, blk, end, &set);
    if (err == ENOENT)
      break;
    if (err)
      return err;
    err = ext2fs_find_first_zero_block_bitmap2 (bmap, set, end, &zero);
    if (err == ENOENT)
      zero = end + 1;
    else if (err)
      return err;
    ext4_mark (m, set, zero - set);
    blk = zero;
  }
  return 0;
}

/* (2) The metadata of one group, from its descriptor. */
static errcode_t
ext4_mark_group (ext2_filsys fs, dgrp_t group, struct ext4_marker *m)
{
  blk64_t super, old_desc, new_desc;
  blk_t used;
  unsigned old_desc_blocks;
  errcode_t err;

  err = ext2fs_super_and_bgd_loc2 (fs, group, &super, &old_desc, &new_desc,
                                   &used);
  if (err)
    return err;
  if (ext2fs_has_feature_meta_bg (fs->super))
    old_desc_blocks = fs->super->s_first_meta_bg;
  else
    old_desc_blocks = fs->desc_blocks + fs->super->s_reserved_gdt_blocks;
  /* Block 0 is group 0's superblock when blocks are larger than 1 KiB. */
  if (super || group == 0)
    ext4_mark (m, super, 1);
  if (old_desc)
    ext4_mark (m, old_desc, old_desc_blocks);
  if (new_desc)
    ext4_mark (m, new_desc, 1);
  ext4_mark (m, ext2fs_block_bitmap_loc (fs, group), 1);
  ext4_mark (m, ext2fs_inode_bitmap_loc (fs, group), 1);
  ext4_mark (m, ext2fs_inode_table_loc (fs, group),
             fs->inode_blocks_per_group);
  return 0;
}

static int
ext4_journal_block (ext2_filsys fs, blk64_t *blocknr,
                    e2_blkcnt_t blockcnt, blk64_t ref_blk, int ref_offset,
                    void *priv)
{
  (void) fs; (void) blockcnt; (void) ref_blk; (void) ref_offset;
  ext4_mark (priv, *blocknr, 1);
  return 0;
}

/* (3) The internal journal and the MMP block. */
static errcode_t
ext4_mark_journal (ext2_filsys fs, struct ext4_marker *m)
{
  ext2_ino_t ino = fs->super->s_journal_inum;

  if (fs->super->s_mmp_block)
    ext4_mark (m, fs->super->s_mmp_block, 1);
  if (!ext2fs_has_feature_journal (fs->super) || ino == 0)
    return 0;
  return ext2fs_block_iterate3 (fs, ino, BLOCK_FLAG_READ_ONLY, NULL,
                                ext4_journal_block, m);
}

/* (1)-(4) on an open file system. */
static errcode_t
ext4_mark_all_used (ext2_filsys fs, struct fssnap_candidates *cands)
{
  struct ext4_marker m = { .cands = cands, .blocksize = fs->blocksize };
  uint64_t fs_end = ext2fs_blocks_count (fs->super) * fs->blocksize;
  uint64_t dev_size = fssnap_candidates_origin_size (cands);
  errcode_t err;
  dgrp_t g;

  err = ext2fs_read_block_bitmap (fs);
  if (!err)
    err = ext4_mark_bitmap (fs, &m);
  for (g = 0; !err && g < fs->group_desc_count; g++)
    err = ext4_mark_group (fs, g, &m);
  if (!err)
    err = ext4_mark_journal (fs, &m);
  ext4_mark_flush (&m);
  if (err)
    return err;
  /* (4) The boot sector and whatever follows the file system. */
  fssnap_candidates_mark (cands, 0, 2048);
  if (dev_size > fs_end)
    fssnap_candidates_mark (cands, fs_end, dev_size - fs_end);
  return 0;
}

int
ext4_candidates (struct fssnap_candidates *cands, char *errmsg, size_t errlen)
{
  const char *path = fssnap_candidates_origin_path (cands);
  /* Read-only, 64-bit bitmaps; a mounted file system may carry an MMP
   * block and checksums that are being rewritten, neither of which stops
   * us from reading its maps.
   */
  int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP |
    EXT2_FLAG_IGNORE_CSUM_ERRORS;
  int fd = fssnap_candidates_origin_fd (cands);
  char fdname[16];
  ext2_filsys fs;
  errcode_t err;

  /* Through the engine's descriptor where there is one (unixfd closes
   * its own copy): a second open of the origin would break its lease.
   */
  if (fd >= 0 && (fd = fcntl (fd, F_DUPFD_CLOEXEC, 0)) < 0) {
    int e = errno;
    snprintf (errmsg, errlen, "cannot dup the origin's descriptor: %s",
              strerror (e));
    return -e;
  }
  snprintf (fdname, sizeof fdname, "%d", fd);
  err = ext2fs_open (fd >= 0 ? fdname : path, flags, 0, 0,
                     fd >= 0 ? unixfd_io_manager : unix_io_manager, &fs);
  if (err && fd >= 0)
    close (fd);
  if (err) {
    snprintf (errmsg, errlen, "libext2fs cannot open it: %s",
              error_message (err));
    return -EIO;
  }
  if (ext2fs_has_feature_journal_needs_recovery (fs->super)) {
    snprintf (errmsg, errlen, "its journal needs recovery (mounted and "
              "not frozen? use --mount), so its bitmaps may be stale");
    ext2fs_close_free (&fs);
    return -EAGAIN;
  }
  err = ext4_mark_all_used (fs, cands);
  if (err)
    snprintf (errmsg, errlen, "cannot read its allocation maps: %s",
              error_message (err));
  ext2fs_close_free (&fs);
  return err ? -EIO : 0;
}
