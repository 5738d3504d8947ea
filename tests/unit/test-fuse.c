/* SPDX-License-Identifier: MIT */
/*
 * The FUSE device files (fuse/devfs.c) over a real engine and a real
 * mount: sizes and modes, I/O on volume, snapshots appearing and going,
 * read-only snapshots, fixed size, discard, a busy stop and a stale mount
 * left by a killed server.  Needs root (or a usable /dev/fuse); skipped
 * otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "libfssnap.h"
#include "fuse/devfs.h"

#define SIZE (8u << 20)

struct fixture {
  char dir[64];
  char img[96];
  char mnt[96];
  char volume[128];
  struct fssnap_origin *origin;
  struct devfs *devfs;
};

static void
path_of (struct fixture *f, char *buf, size_t len, const char *name)
{
  snprintf (buf, len, "%s/%s", f->mnt, name);
}

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  struct fssnap_origin_opts oo = { 0 };
  struct devfs_opts dopts = { 0 };
  int fd;

  if (access ("/dev/fuse", R_OK | W_OK) != 0 || geteuid () != 0) {
    free (f);
    return -1;
  }
  strcpy (f->dir, "/tmp/test-fuse.XXXXXX");
  assert_non_null (mkdtemp (f->dir));
  snprintf (f->img, sizeof f->img, "%s/img", f->dir);
  snprintf (f->mnt, sizeof f->mnt, "%s/dev", f->dir);
  path_of (f, f->volume, sizeof f->volume, "volume");
  fd = open (f->img, O_CREAT | O_RDWR, 0600);
  assert_true (fd >= 0);
  assert_int_equal (ftruncate (fd, SIZE), 0);
  close (fd);
  oo.path = f->img;
  oo.state_dir = f->dir;
  assert_int_equal (fssnap_origin_open (&oo, &f->origin), 0);
  dopts.origin = f->origin;
  dopts.mountdir = f->mnt;
  assert_int_equal (devfs_start (&dopts, &f->devfs), 0);
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;
  char cmd[256];

  if (f->devfs)
    devfs_stop (f->devfs);
  fssnap_origin_close (f->origin);
  snprintf (cmd, sizeof cmd, "umount -l '%s' 2>/dev/null; rm -rf '%s'",
            f->mnt, f->dir);
  if (system (cmd) != 0)
    return -1;
  free (f);
  return 0;
}

static void
fill (char *buf, size_t len, char c)
{
  memset (buf, c, len);
}

static int
snap_create (struct fixture *f)
{
  struct fssnap_create_opts co = { .transient = true };
  char err[256] = "";
  unsigned num;

  if (fssnap_snapshot_create (f->origin, &co, &num, err, sizeof err) != 0)
    fail_msg ("create: %s", err);
  return num;
}

static void
test_attrs (void **state)
{
  struct fixture *f = *state;
  struct stat st;
  char p[160];

  assert_int_equal (stat (f->volume, &st), 0);
  assert_true (S_ISREG (st.st_mode));
  assert_int_equal (st.st_mode & 0777, 0600);
  assert_int_equal (st.st_size, SIZE);
  path_of (f, p, sizeof p, "snap");
  assert_int_equal (stat (p, &st), 0);
  assert_true (S_ISDIR (st.st_mode));
  path_of (f, p, sizeof p, "snap/0");
  assert_int_equal (stat (p, &st), -1);
  assert_int_equal (errno, ENOENT);
  /* The size is the device's. */
  assert_int_equal (truncate (f->volume, SIZE / 2), -1);
  assert_int_equal (errno, EPERM);
  assert_int_equal (truncate (f->volume, SIZE), 0);
}

/* Large, unaligned I/O through the file lands on the origin. */
static void
test_volume_io (void **state)
{
  struct fixture *f = *state;
  size_t len = 3 << 20;
  char *buf = malloc (len), *back = malloc (len);
  int fd = open (f->volume, O_RDWR);

  assert_true (fd >= 0);
  fill (buf, len, 'a');
  buf[0] = 'x';
  assert_int_equal (pwrite (fd, buf, len, 12345), len);
  assert_int_equal (fsync (fd), 0);
  assert_int_equal (fssnap_origin_read (f->origin, back, len, 12345), 0);
  assert_memory_equal (buf, back, len);
  memset (back, 0, len);
  assert_int_equal (pread (fd, back, len, 12345), len);
  assert_memory_equal (buf, back, len);
  /* Reads stop at the end; writes past it fail. */
  assert_int_equal (pread (fd, back, 4096, SIZE - 100), 100);
  assert_int_equal (pread (fd, back, 4096, SIZE), 0);
  assert_int_equal (pwrite (fd, buf, 4096, SIZE), -1);
  assert_int_equal (errno, ENOSPC);
  close (fd);
  free (buf);
  free (back);
}

static int
snap_listed (struct fixture *f, const char *name)
{
  char p[160];
  struct dirent *de;
  DIR *d;
  int found = 0;

  path_of (f, p, sizeof p, "snap");
  d = opendir (p);
  assert_non_null (d);
  while ((de = readdir (d)) != NULL)
    found |= strcmp (de->d_name, name) == 0;
  closedir (d);
  return found;
}

/* A snapshot keeps what the volume held, read-only, and goes on delete. */
static void
test_snapshot_file (void **state)
{
  struct fixture *f = *state;
  char buf[65536], back[65536], p[160];
  int vfd = open (f->volume, O_RDWR), sfd, num, i;

  assert_true (vfd >= 0);
  fill (buf, sizeof buf, 'o');
  assert_int_equal (pwrite (vfd, buf, sizeof buf, 1 << 20), sizeof buf);
  num = snap_create (f);
  assert_int_equal (num, 0);
  assert_true (snap_listed (f, "0"));
  path_of (f, p, sizeof p, "snap/0");
  assert_int_equal (open (p, O_RDWR), -1);
  assert_int_equal (errno, EROFS);
  sfd = open (p, O_RDONLY);
  assert_true (sfd >= 0);
  fill (back, sizeof back, 'n');
  assert_int_equal (pwrite (vfd, back, sizeof back, (1 << 20) + 100),
                    sizeof back);
  assert_int_equal (pread (sfd, back, sizeof back, 1 << 20), sizeof back);
  assert_memory_equal (buf, back, sizeof back);
  /* Deleted while open: gone from the list, reads fail, close frees. */
  assert_int_equal (fssnap_snapshot_delete (f->origin, num), 0);
  assert_false (snap_listed (f, "0"));
  assert_int_equal (pread (sfd, back, sizeof back, 0), -1);
  assert_int_equal (errno, EIO);
  close (sfd);
  /* The kernel sends RELEASE after close returns: give it a moment. */
  for (i = 0; i < 200 && fssnap_snapshot_list (f->origin, NULL, 0) != 0; i++)
    usleep (10000);
  assert_int_equal (fssnap_snapshot_list (f->origin, NULL, 0), 0);
  close (vfd);
}

/* A reused number is a new file: the old contents never show through. */
static void
test_number_reuse (void **state)
{
  struct fixture *f = *state;
  char buf[4096], back[4096], p[160];
  int vfd = open (f->volume, O_RDWR), sfd;
  struct stat st1, st2;

  assert_true (vfd >= 0);
  path_of (f, p, sizeof p, "snap/0");
  fill (buf, sizeof buf, '1');
  assert_int_equal (pwrite (vfd, buf, sizeof buf, 0), sizeof buf);
  assert_int_equal (snap_create (f), 0);
  assert_int_equal (stat (p, &st1), 0);
  sfd = open (p, O_RDONLY);
  assert_int_equal (pread (sfd, back, sizeof back, 0), sizeof back);
  close (sfd);
  assert_int_equal (fssnap_snapshot_delete (f->origin, 0), 0);
  /* The kernel sends RELEASE after close returns: number 0 is free once
   * it has come (one CI run created number 1 before it did).
   */
  for (int i = 0; i < 200 && fssnap_snapshot_list (f->origin, NULL, 0) != 0;
       i++)
    usleep (10000);
  assert_int_equal (fssnap_snapshot_list (f->origin, NULL, 0), 0);
  fill (buf, sizeof buf, '2');
  assert_int_equal (pwrite (vfd, buf, sizeof buf, 0), sizeof buf);
  assert_int_equal (snap_create (f), 0);
  assert_int_equal (stat (p, &st2), 0);
  assert_true (st1.st_ino != st2.st_ino);
  sfd = open (p, O_RDONLY);
  assert_int_equal (pread (sfd, back, sizeof back, 0), sizeof back);
  assert_memory_equal (buf, back, sizeof back);
  close (sfd);
  close (vfd);
}

/* Punch and zero-range leave zeros and preserve snapshots. */
static void
test_fallocate (void **state)
{
  struct fixture *f = *state;
  char buf[65536], back[65536], zero[65536] = { 0 }, p[160];
  int vfd = open (f->volume, O_RDWR), sfd;

  assert_true (vfd >= 0);
  fill (buf, sizeof buf, 'd');
  assert_int_equal (pwrite (vfd, buf, sizeof buf, 0), sizeof buf);
  assert_int_equal (snap_create (f), 0);
  assert_int_equal (fallocate (vfd, FALLOC_FL_PUNCH_HOLE |
                               FALLOC_FL_KEEP_SIZE, 0, 32768), 0);
  assert_int_equal (fallocate (vfd, FALLOC_FL_ZERO_RANGE, 32768, 32768), 0);
  assert_int_equal (pread (vfd, back, sizeof back, 0), sizeof back);
  assert_memory_equal (back, zero, sizeof back);
  path_of (f, p, sizeof p, "snap/0");
  sfd = open (p, O_RDONLY);
  assert_true (sfd >= 0);
  assert_int_equal (pread (sfd, back, sizeof back, 0), sizeof back);
  assert_memory_equal (back, buf, sizeof back);
  close (sfd);
  assert_int_equal (fallocate (vfd, 0, SIZE, 4096), -1);
  assert_int_equal (errno, ENOSPC);
  close (vfd);
}

/* Stopping while files are open does not hang; the holders get errors
 * and the snapshot handle is closed before the engine goes.
 */
static void
test_stop_busy (void **state)
{
  struct fixture *f = *state;
  struct fssnap_snapshot_info info;
  char buf[512], p[160];
  int fd = open (f->volume, O_RDONLY), sfd, num = snap_create (f);

  assert_true (fd >= 0);
  path_of (f, p, sizeof p, "snap/0");
  sfd = open (p, O_RDONLY);
  assert_true (sfd >= 0);
  assert_int_equal (fssnap_snapshot_info (f->origin, num, &info), 0);
  assert_int_equal (info.open_count, 1);
  devfs_stop (f->devfs);
  f->devfs = NULL;
  assert_int_equal (pread (fd, buf, sizeof buf, 0), -1);
  assert_int_equal (pread (sfd, buf, sizeof buf, 0), -1);
  assert_int_equal (fssnap_snapshot_info (f->origin, num, &info), 0);
  assert_int_equal (info.open_count, 0);
  close (fd);
  close (sfd);
}

/* A server killed with its mount in place: the next start cleans up. */
static void
test_stale_mount (void **state)
{
  struct fixture *f = *state;
  struct devfs_opts dopts = { .origin = f->origin, .mountdir = f->mnt };
  struct stat st;
  pid_t pid;

  devfs_stop (f->devfs);
  f->devfs = NULL;
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    struct devfs *d;
    if (devfs_start (&dopts, &d) != 0)
      _exit (1);
    raise (SIGKILL);
  }
  assert_int_equal (waitpid (pid, NULL, 0), pid);
  assert_int_equal (stat (f->volume, &st), -1);
  assert_int_equal (errno, ENOTCONN);
  assert_int_equal (devfs_start (&dopts, &f->devfs), 0);
  assert_int_equal (stat (f->volume, &st), 0);
  assert_int_equal (st.st_size, SIZE);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_attrs, setup, teardown),
    cmocka_unit_test_setup_teardown (test_volume_io, setup, teardown),
    cmocka_unit_test_setup_teardown (test_snapshot_file, setup, teardown),
    cmocka_unit_test_setup_teardown (test_number_reuse, setup, teardown),
    cmocka_unit_test_setup_teardown (test_fallocate, setup, teardown),
    cmocka_unit_test_setup_teardown (test_stop_busy, setup, teardown),
    cmocka_unit_test_setup_teardown (test_stale_mount, setup, teardown),
  };

  if (access ("/dev/fuse", R_OK | W_OK) != 0 || geteuid () != 0) {
    printf ("[  SKIPPED ] test-fuse: needs root and /dev/fuse\n");
    return 0;
  }
  return cmocka_run_group_tests (tests, NULL, NULL);
}
