/* SPDX-License-Identifier: MIT */
/*
 * The file system half against real images made by mkfs (fs/).
 *
 * Each case builds an image with mke2fs (several layouts, populated with
 * -d from a tree of files), creates a snapshot of it through the engine
 * with fs_candidates, and compares the candidate chunks with what
 * e2fsprogs itself reports: every block not listed free by dumpe2fs, every
 * metadata block it lists (superblocks, descriptors, reserved GDT, bitmaps,
 * inode tables), the journal's blocks and the files' blocks (debugfs) must
 * be candidates.  A near-empty 1 GiB file system must have few.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "libfssnap.h"
#include "fs/fs.h"

struct fixture {
  char dir[64];                 /* scratch directory */
  char img[96];
  char tree[96];
  uint64_t size;
  uint32_t chunksize;
  uint64_t chunks;
  unsigned char *cand;          /* one byte per chunk */
  struct fs_candidates_ctx ctx;
};

static int
run (const char *fmt, ...)
{
  char cmd[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  return system (cmd);
}

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);

  assert_non_null (f);
  strcpy (f->dir, "/tmp/test-fs.XXXXXX");
  assert_non_null (mkdtemp (f->dir));
  snprintf (f->img, sizeof f->img, "%s/img", f->dir);
  snprintf (f->tree, sizeof f->tree, "%s/tree", f->dir);
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;

  run ("umount -l '%s/mnt' 2>/dev/null; rm -rf '%s'", f->dir, f->dir);
  free (f->cand);
  free (f);
  return 0;
}

/* Bytes that mke2fs will not skip as zero blocks. */
static void
write_file (const char *path, size_t len, uint64_t seed)
{
  static char buf[65536];
  FILE *fp = fopen (path, "w");
  size_t i, n;

  assert_non_null (fp);
  while (len > 0) {
    n = len < sizeof buf ? len : sizeof buf;
    for (i = 0; i < n; i++) {
      seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
      buf[i] = (char) (seed | 1);
    }
    assert_int_equal (fwrite (buf, 1, n, fp), n);
    len -= n;
  }
  assert_int_equal (fclose (fp), 0);
}

/* A tree of about total bytes: many directories, files of 1 byte up. */
static void
make_tree (struct fixture *f, uint64_t total)
{
  char path[256];
  uint64_t done = 0, size;
  unsigned i;

  assert_int_equal (mkdir (f->tree, 0755), 0);
  for (i = 0; done < total; i++) {
    if (i % 8 == 0) {
      snprintf (path, sizeof path, "%s/d%u", f->tree, i / 8);
      assert_int_equal (mkdir (path, 0755), 0);
    }
    size = (uint64_t) 1 << (i % 24);           /* 1 B .. 8 MiB */
    if (size > total - done)
      size = total - done;
    snprintf (path, sizeof path, "%s/d%u/f%u", f->tree, i / 8, i);
    write_file (path, size, i + 1);
    done += size;
  }
}

/* truncate + mke2fs; tree populates it when non-zero. */
static void
make_image (struct fixture *f, uint64_t size, const char *mkfs,
            uint64_t tree)
{
  f->size = size;
  if (tree)
    make_tree (f, tree);
  assert_int_equal (run ("truncate -s %llu '%s' && %s -q -F %s%s '%s'",
                         (unsigned long long) size, f->img, mkfs,
                         tree ? "-d " : "", tree ? f->tree : "", f->img), 0);
}

static int
record_extent (void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct fixture *f = opaque;
  uint64_t c;

  for (c = off / f->chunksize; c * f->chunksize < off + len; c++)
    f->cand[c] = !hole;
  return 0;
}

/* Snapshot the image with fs_candidates; fill f->cand. */
static void
snapshot (struct fixture *f, uint32_t chunksize)
{
  struct fssnap_origin_opts oo = { .path = f->img, .state_dir = f->dir };
  struct fssnap_create_opts co = { .transient = true,
                                   .candidates = fs_candidates,
                                   .candidates_opaque = &f->ctx };
  struct fssnap_origin *origin;
  struct fssnap_snapshot *snap;
  char err[256] = "";
  unsigned num;

  co.chunksize = chunksize;
  f->chunksize = chunksize;
  f->chunks = (f->size + chunksize - 1) / chunksize;
  f->cand = calloc (f->chunks, 1);
  assert_non_null (f->cand);
  assert_int_equal (fssnap_origin_open (&oo, &origin), 0);
  if (fssnap_snapshot_create (origin, &co, &num, err, sizeof err) != 0)
    fail_msg ("create: %s", err);
  assert_int_equal (fssnap_snapshot_open (origin, num, &snap), 0);
  assert_int_equal (fssnap_snapshot_extents (snap, 0, f->size,
                                             record_extent, f), 0);
  fssnap_snapshot_close (snap);
  assert_int_equal (fssnap_snapshot_delete (origin, num), 0);
  fssnap_origin_close (origin);
}

static uint64_t
count_candidates (struct fixture *f)
{
  uint64_t c, n = 0;

  for (c = 0; c < f->chunks; c++)
    n += f->cand[c];
  return n;
}

/* What e2fsprogs says the file system uses, one byte per block. */
struct usage {
  uint64_t blocks, first, blocksize;
  uint64_t cluster;             /* blocks per cluster (bigalloc) */
  unsigned char *free;          /* listed under "Free blocks:" */
  unsigned char *meta;          /* listed as "... at A-B" */
  uint64_t nmeta;
};

static uint64_t
header_value (const char *line, const char *key)
{
  size_t n = strlen (key);

  return strncmp (line, key, n) == 0 ? strtoull (line + n, NULL, 10) : 0;
}

static void
set_range (unsigned char *map, uint64_t blocks, uint64_t a, uint64_t b)
{
  assert_true (a <= b && b < blocks);
  memset (map + a, 1, b - a + 1);
}

/* "12-40, 50, 60-61" (stops at anything else).  With bigalloc dumpe2fs
 * names each cluster by its first block: a range ends a cluster later.
 */
static void
parse_ranges (const char *p, unsigned char *map, uint64_t blocks,
              uint64_t cluster)
{
  char *end;
  uint64_t a, b;

  for (;;) {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p < '0' || *p > '9')
      return;
    a = b = strtoull (p, &end, 10);
    if (*end == '-')
      b = strtoull (end + 1, &end, 10);
    set_range (map, blocks, a, b + cluster - 1);
    p = end;
  }
}

/* Every "at A" / "at A-B" in a group's description is metadata. */
static void
parse_meta (struct usage *u, const char *line)
{
  const char *p = line;
  char *end;
  uint64_t a, b;

  while ((p = strstr (p, " at ")) != NULL) {
    p += 4;
    a = b = strtoull (p, &end, 10);
    if (end == p)
      continue;
    if (*end == '-')
      b = strtoull (end + 1, &end, 10);
    set_range (u->meta, u->blocks, a, b);
    u->nmeta += b - a + 1;
  }
}

static void
read_usage (struct fixture *f, struct usage *u)
{
  char cmd[256], line[65536];
  FILE *fp;

  memset (u, 0, sizeof *u);
  snprintf (cmd, sizeof cmd, "dumpe2fs '%s' 2>/dev/null", f->img);
  fp = popen (cmd, "r");
  assert_non_null (fp);
  while (fgets (line, sizeof line, fp)) {
    if (header_value (line, "Block count:"))
      u->blocks = header_value (line, "Block count:");
    else if (header_value (line, "Block size:"))
      u->blocksize = header_value (line, "Block size:");
    else if (strncmp (line, "First block:", 12) == 0)
      u->first = header_value (line, "First block:");
    else if (header_value (line, "Cluster size:"))
      u->cluster = header_value (line, "Cluster size:");
    if (u->blocks && u->free == NULL) {
      u->free = calloc (u->blocks, 1);
      u->meta = calloc (u->blocks, 1);
    }
    if (strncmp (line, "  Free blocks: ", 15) == 0)
      parse_ranges (line + 15, u->free, u->blocks,
                    u->cluster ? u->cluster / u->blocksize : 1);
    else if (strncmp (line, "  ", 2) == 0 && u->meta)
      parse_meta (u, line);
  }
  assert_int_equal (pclose (fp), 0);
  assert_true (u->blocks > 0 && u->blocksize > 0 && u->nmeta > 0);
}

static void
assert_block_candidate (struct fixture *f, struct usage *u, uint64_t blk,
                        const char *what)
{
  uint64_t c = blk * u->blocksize / f->chunksize;

  if (!f->cand[c])
    fail_msg ("%s block %llu (chunk %llu) is not a candidate", what,
              (unsigned long long) blk, (unsigned long long) c);
}

/* Every block debugfs lists for the inode spec ("<8>", "/d0/f3"). */
static uint64_t
check_debugfs_blocks (struct fixture *f, struct usage *u, const char *spec)
{
  char cmd[256];
  unsigned long long blk;
  uint64_t n = 0;
  FILE *fp;

  snprintf (cmd, sizeof cmd, "debugfs -R 'blocks %s' '%s' 2>/dev/null",
            spec, f->img);
  fp = popen (cmd, "r");
  assert_non_null (fp);
  while (fscanf (fp, "%llu", &blk) == 1) {
    assert_block_candidate (f, u, blk, spec);
    n++;
  }
  pclose (fp);
  return n;
}

/* The whole comparison; returns the number of blocks in use. */
static uint64_t
check_usage (struct fixture *f)
{
  struct usage u;
  uint64_t b, used = 0;

  read_usage (f, &u);
  assert_true (fs_type_is_ext (f->ctx.type));
  assert_int_equal (f->ctx.all, 0);
  for (b = u.first; b < u.blocks; b++) {
    if (!u.free[b]) {
      assert_block_candidate (f, &u, b, "used");
      used++;
    }
    if (u.meta[b])
      assert_block_candidate (f, &u, b, "metadata");
  }
  for (b = 0; b < u.first; b++)
    assert_block_candidate (f, &u, b, "boot");
  check_debugfs_blocks (f, &u, "<8>");          /* the journal */
  free (u.free);
  free (u.meta);
  return used;
}

/* The files of the tree: each listed block is a candidate. */
static void
check_tree_files (struct fixture *f)
{
  struct usage u;
  char spec[64];
  uint64_t n = 0;
  unsigned i;

  read_usage (f, &u);
  for (i = 0; i < 40; i += 3) {
    snprintf (spec, sizeof spec, "/d%u/f%u", i / 8, i);
    n += check_debugfs_blocks (f, &u, spec);
  }
  assert_true (n > 0);
  free (u.free);
  free (u.meta);
}

static void
report (struct fixture *f, const char *name, uint64_t used)
{
  uint64_t n = count_candidates (f);

  print_message ("%s: %s, %llu blocks used, %llu of %llu chunks of %u "
                 "are candidates (%.1f%%)\n", name, f->ctx.type,
                 (unsigned long long) used, (unsigned long long) n,
                 (unsigned long long) f->chunks, f->chunksize,
                 100.0 * n / f->chunks);
}

static void
test_flex_bg (void **state)
{
  struct fixture *f = *state;

  make_image (f, 256 << 20, "mkfs.ext4 -b 4096", 48 << 20);
  snapshot (f, 4096);
  assert_string_equal (f->ctx.type, "ext4");
  report (f, "flex_bg", check_usage (f));
  check_tree_files (f);
}

static void
test_no_flex_bg (void **state)
{
  struct fixture *f = *state;

  make_image (f, 256 << 20, "mkfs.ext4 -b 4096 -O ^flex_bg", 48 << 20);
  snapshot (f, 4096);
  report (f, "^flex_bg", check_usage (f));
  check_tree_files (f);
}

static void
test_small_1k (void **state)
{
  struct fixture *f = *state;

  make_image (f, 4 << 20, "mkfs.ext4 -b 1024", 1 << 20);
  snapshot (f, 1024);
  report (f, "4 MiB, 1 KiB blocks", check_usage (f));
  check_tree_files (f);
}

/* Chunks larger than blocks, and a device larger than the fs. */
static void
test_meta_bg_tail (void **state)
{
  struct fixture *f = *state;

  make_image (f, 128 << 20, "mkfs.ext4 -b 4096 -O meta_bg,^resize_inode",
              16 << 20);
  assert_int_equal (truncate (f->img, (128 << 20) + (200 << 10)), 0);
  f->size += 200 << 10;
  snapshot (f, 65536);
  report (f, "meta_bg", check_usage (f));
  check_tree_files (f);
  /* Whatever follows the file system is kept. */
  assert_true (f->cand[f->chunks - 1]);
  assert_true (f->cand[f->chunks - 2]);
}

/* Allocation by clusters of 4 blocks. */
static void
test_bigalloc (void **state)
{
  struct fixture *f = *state;

  make_image (f, 256 << 20, "mkfs.ext4 -b 4096 -O bigalloc -C 16384",
              24 << 20);
  snapshot (f, 4096);
  report (f, "bigalloc", check_usage (f));
  check_tree_files (f);
}

static void
test_ext2_ext3 (void **state)
{
  struct fixture *f = *state;

  make_image (f, 64 << 20, "mkfs.ext2 -b 4096", 8 << 20);
  snapshot (f, 4096);
  assert_string_equal (f->ctx.type, "ext2");
  report (f, "ext2", check_usage (f));
  free (f->cand);
  assert_int_equal (run ("mkfs.ext3 -q -F -b 1024 '%s'", f->img), 0);
  snapshot (f, 512);
  assert_string_equal (f->ctx.type, "ext3");
  report (f, "ext3", check_usage (f));
}

/* 1 GiB, about 10% full: candidates stay under 20% of the chunks. */
static void
test_sparse_1g (void **state)
{
  struct fixture *f = *state;
  uint64_t n;

  make_image (f, 1ull << 30, "mkfs.ext4", 100 << 20);
  snapshot (f, 65536);
  report (f, "1 GiB 10% full", check_usage (f));
  n = count_candidates (f);
  assert_true (n * 5 < f->chunks);
  assert_true (n * 10 >= f->chunks);            /* the data is there */
}

static void
test_not_ext (void **state)
{
  struct fixture *f = *state;

  make_image (f, 16 << 20, "true", 0);
  snapshot (f, 65536);
  assert_string_equal (f->ctx.type, "");
  assert_int_equal (f->ctx.all, 1);
  assert_int_equal (count_candidates (f), f->chunks);
  free (f->cand);
  assert_int_equal (run ("mkswap -q '%s' >/dev/null", f->img), 0);
  snapshot (f, 65536);
  assert_string_equal (f->ctx.type, "swap");
  assert_int_equal (count_candidates (f), f->chunks);
}

/* A journal needing recovery may hide allocations: everything. */
static void
test_needs_recovery (void **state)
{
  struct fixture *f = *state;

  make_image (f, 64 << 20, "mkfs.ext4", 0);
  assert_int_equal (run ("debugfs -w -R 'feature needs_recovery' '%s' "
                         ">/dev/null 2>&1", f->img), 0);
  snapshot (f, 65536);
  assert_string_equal (f->ctx.type, "ext4");
  assert_int_equal (f->ctx.all, 1);
  assert_int_equal (count_candidates (f), f->chunks);
}

static void
test_detect (void **state)
{
  struct fixture *f = *state;
  char type[FS_TYPE_LEN];

  assert_int_equal (fs_detect ("/nonexistent/x", type, sizeof type),
                    -ENOENT);
  make_image (f, 8 << 20, "mkfs.ext4", 0);
  assert_int_equal (fs_detect (f->img, type, sizeof type), 0);
  assert_string_equal (type, "ext4");
  assert_true (fs_type_is_ext (type));
  assert_false (fs_type_is_ext ("xfs"));
}

static void
test_freeze_not_mountpoint (void **state)
{
  struct fixture *f = *state;
  int fd;

  assert_int_equal (fs_freeze (f->dir, &fd), -EINVAL);
  assert_int_equal (fs_freeze ("/nonexistent/x", &fd), -ENOENT);
}

/* Needs root and a loop device: freeze twice is EBUSY, thaw works. */
static void
test_freeze_mounted (void **state)
{
  struct fixture *f = *state;
  char mnt[128];
  int fd, fd2;

  if (geteuid () != 0)
    skip ();
  make_image (f, 16 << 20, "mkfs.ext4", 0);
  snprintf (mnt, sizeof mnt, "%s/mnt", f->dir);
  assert_int_equal (mkdir (mnt, 0755), 0);
  if (run ("mount -o loop '%s' '%s' 2>/dev/null", f->img, mnt) != 0)
    skip ();
  assert_int_equal (fs_freeze (mnt, &fd), 0);
  assert_int_equal (fs_freeze (mnt, &fd2), -EBUSY);
  assert_int_equal (fs_thaw (fd), 0);
  assert_int_equal (run ("touch '%s/after-thaw'", mnt), 0);
  assert_int_equal (run ("umount '%s'", mnt), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_flex_bg, setup, teardown),
    cmocka_unit_test_setup_teardown (test_no_flex_bg, setup, teardown),
    cmocka_unit_test_setup_teardown (test_small_1k, setup, teardown),
    cmocka_unit_test_setup_teardown (test_meta_bg_tail, setup, teardown),
    cmocka_unit_test_setup_teardown (test_bigalloc, setup, teardown),
    cmocka_unit_test_setup_teardown (test_ext2_ext3, setup, teardown),
    cmocka_unit_test_setup_teardown (test_sparse_1g, setup, teardown),
    cmocka_unit_test_setup_teardown (test_not_ext, setup, teardown),
    cmocka_unit_test_setup_teardown (test_needs_recovery, setup, teardown),
    cmocka_unit_test_setup_teardown (test_detect, setup, teardown),
    cmocka_unit_test_setup_teardown (test_freeze_not_mountpoint, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_freeze_mounted, setup, teardown),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
