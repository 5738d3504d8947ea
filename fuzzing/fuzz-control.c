/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the control protocol: each input is what a client
 * sends on the control socket, split into lines, each handed to
 * ctl_handle_line() in-process against a real engine on a small image.
 * Every reply must be well formed ("ok", and "error" plus "errno" when it
 * is false).  The engine's files are confined to a scratch directory by an
 * I/O layer that refuses any other path, since a request may name any
 * backing store; every snapshot is deleted after each input.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libfssnap.h"
#include "control/requests.h"

#define FUZZ_IMG_SIZE (256u << 10)
#define FUZZ_MAX_LINES 16

static char fuzz_dir[64];
static struct fssnap_io fuzz_io;
static struct fssnap_origin *fuzz_origin;
static struct ctl_context fuzz_ctx;

/* Paths inside fuzz_dir only, without ".." components. */
static int
fuzz_path_ok (const char *path)
{
  size_t n = strlen (fuzz_dir);

  return strncmp (path, fuzz_dir, n) == 0 && path[n] == '/'
         && !strstr (path, "/../") && strcmp (path + strlen (path) - 3, "/..");
}

static int
fuzz_open (void *opaque, const char *path, int flags, mode_t mode)
{
  if (!fuzz_path_ok (path))
    return -EACCES;
  return fssnap_io_posix ()->open (opaque, path, flags, mode);
}

static int
fuzz_unlink (void *opaque, const char *path)
{
  if (!fuzz_path_ok (path))
    return -EACCES;
  return fssnap_io_posix ()->unlink (opaque, path);
}

static void
fuzz_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  (void) level;
  (void) msg;
}

static int
fuzz_remove (const char *path, const struct stat *st, int type,
             struct FTW *ftw)
{
  (void) st;
  (void) type;
  (void) ftw;
  return remove (path);
}

/* At exit: close the engine and remove the scratch directory. */
static void
fuzz_cleanup (void)
{
  fssnap_origin_close (fuzz_origin);
  nftw (fuzz_dir, fuzz_remove, 8, FTW_DEPTH | FTW_PHYS);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  struct fssnap_origin_opts opts = { .io = &fuzz_io, .log = fuzz_log };
  char path[128];
  int fd;

  (void) argc;
  (void) argv;
  snprintf (fuzz_dir, sizeof fuzz_dir, "/tmp/fuzz-control.XXXXXX");
  if (!mkdtemp (fuzz_dir))
    abort ();
  snprintf (path, sizeof path, "%s/origin.img", fuzz_dir);
  fd = open (path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate (fd, FUZZ_IMG_SIZE) < 0)
    abort ();
  close (fd);
  fuzz_io = *fssnap_io_posix ();
  fuzz_io.open = fuzz_open;
  fuzz_io.unlink = fuzz_unlink;
  opts.path = path;
  opts.state_dir = fuzz_dir;
  if (fssnap_origin_open (&opts, &fuzz_origin) < 0)
    abort ();
  fuzz_ctx = (struct ctl_context) { .origin = fuzz_origin,
                                    .log = fuzz_log };
  atexit (fuzz_cleanup);
  return 0;
}

/* A reply must say ok, and why not when it is not. */
static void
fuzz_check_reply (json_object *reply)
{
  json_object *ok, *v;

  if (!json_object_object_get_ex (reply, "ok", &ok)
      || !json_object_is_type (ok, json_type_boolean))
    abort ();
  if (json_object_get_boolean (ok))
    return;
  if (!json_object_object_get_ex (reply, "error", &v)
      || !json_object_is_type (v, json_type_string)
      || !json_object_object_get_ex (reply, "errno", &v)
      || strncmp (json_object_get_string (v), "E", 1) != 0)
    abort ();
}

static void
fuzz_delete_all (void)
{
  unsigned nums[FSSNAP_MAX_SNAPSHOTS];
  int i, n = fssnap_snapshot_list (fuzz_origin, nums, FSSNAP_MAX_SNAPSHOTS);

  for (i = 0; i < n && i < FSSNAP_MAX_SNAPSHOTS; i++)
    fssnap_snapshot_delete (fuzz_origin, nums[i]);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *p = (const char *) data, *end = p + size;
  int lines = 0;

  while (p < end && lines++ < FUZZ_MAX_LINES) {
    const char *nl = memchr (p, '\n', end - p);
    size_t len = nl ? (size_t) (nl - p) : (size_t) (end - p);
    json_object *reply = ctl_handle_line (&fuzz_ctx, p, len);
    fuzz_check_reply (reply);
    json_object_put (reply);
    p += len + 1;
  }
  fuzz_delete_all ();
  return 0;
}
