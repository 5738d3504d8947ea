/* SPDX-License-Identifier: MIT */
/*
 * fssnap attach N|volume and fssnap detach N|volume|/dev/loopN: the block
 * device that mount and fsck take.  A frontend that serves block devices
 * (ublk) names them; otherwise a loop device with direct I/O goes on
 * fssnapd's FUSE device file (read-only for a snapshot).  Device names
 * come from fssnapd's "devices" objects, never built here.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli/devices.h"
#include "fs/loop.h"

/* The "devices" object of snapshot num (from info) or of the volume (from
 * list; num < 0), in *devicesp with a reference the caller puts.
 */
static int
cli_fetch_devices (struct cli *cli, long num, json_object **devicesp)
{
  json_object *req, *reply, *obj = NULL, *devices;
  int r;

  req = json_object_new_object ();
  json_object_object_add (req, "request",
                          json_object_new_string (num < 0 ? "list" : "info"));
  if (num >= 0)
    json_object_object_add (req, "number", json_object_new_int64 (num));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (num < 0)
    json_object_object_get_ex (reply, "volume", &obj);
  else if (json_object_object_get_ex (reply, "snapshots", &obj)
           && json_object_array_length (obj) == 1)
    obj = json_object_array_get_idx (obj, 0);
  else
    obj = NULL;
  if (obj && json_object_object_get_ex (obj, "devices", &devices)
      && json_object_is_type (devices, json_type_object))
    *devicesp = json_object_get (devices);
  else
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the devices");
  json_object_put (reply);
  return r;
}

/* "volume" or a snapshot number -> its devices. */
static int
cli_target_devices (struct cli *cli, const char *arg, json_object **devicesp,
                    int *read_only)
{
  long num = -1;

  *read_only = strcmp (arg, "volume") != 0;
  if (*read_only && (num = cli_parse_number (arg)) < 0)
    return CLI_EXIT_USAGE;
  return cli_fetch_devices (cli, num, devicesp);
}

/* The FUSE device file among devices, or NULL. */
static const char *
cli_fuse_file (json_object *devices)
{
  json_object *v;

  return json_object_object_get_ex (devices, "fuse", &v)
         ? json_object_get_string (v) : NULL;
}

/* A block device that a frontend serves directly (ublk), or NULL. */
static const char *
cli_block_device (json_object *devices)
{
  struct stat st;

  json_object_object_foreach (devices, frontend, v) {
    const char *name = json_object_get_string (v);
    (void) frontend;
    if (name[0] == '/' && stat (name, &st) == 0 && S_ISBLK (st.st_mode))
      return name;
  }
  return NULL;
}

int
cli_snapshot_file (struct cli *cli, long num, char *path, size_t len)
{
  json_object *devices;
  const char *file;
  int r;

  r = cli_fetch_devices (cli, num, &devices);
  if (r != CLI_EXIT_OK)
    return r;
  file = cli_fuse_file (devices);
  snprintf (path, len, "%s", file ? file : "");
  json_object_put (devices);
  return CLI_EXIT_OK;
}

/* A loop device on a FUSE device file, in dev; *made when it is new. */
static int
cli_attach_file (const char *file, int read_only, int reuse, char *dev,
                 size_t len, int *made)
{
  int rc;

  *made = 0;
  if (loop_find (file, dev, len)) {
    if (reuse)
      return CLI_EXIT_OK;
    return cli_error (CLI_EXIT_REFUSED, "%s is already attached as %s", file,
                      dev);
  }
  rc = loop_attach (file, read_only, dev, len);
  if (rc == -ENOENT)
    return cli_error (CLI_EXIT_REFUSED, "%s: no such device file", file);
  if (rc < 0)
    return cli_error (CLI_EXIT_REFUSED, "cannot attach %s: %s", file,
                      strerror (-rc));
  *made = 1;
  return CLI_EXIT_OK;
}

int
cli_devices_block (json_object *devices, const char *what, int read_only,
                   int reuse, char *dev, size_t len, int *made)
{
  const char *block = cli_block_device (devices), *file;
  json_object *nbd;

  *made = 0;
  if (block) {
    snprintf (dev, len, "%s", block);
    return CLI_EXIT_OK;
  }
  file = cli_fuse_file (devices);
  if (file)
    return cli_attach_file (file, read_only, reuse, dev, len, made);
  if (json_object_object_get_ex (devices, "nbd", &nbd))
    return cli_error (CLI_EXIT_REFUSED, "%s has no block device or device "
                      "file (fssnapd runs with --no-fuse): read it over NBD "
                      "at %s", what, json_object_get_string (nbd));
  return cli_error (CLI_EXIT_REFUSED, "%s has no device", what);
}

int
cli_attach_devices (json_object *devices, const char *what, int read_only)
{
  char dev[PATH_MAX];
  int made, r;

  r = cli_devices_block (devices, what, read_only, 0, dev, sizeof dev, &made);
  if (r == CLI_EXIT_OK)
    puts (dev);
  return r;
}

static int
cli_detach_dev (const char *dev)
{
  int rc = loop_detach (dev);

  if (rc == -EBUSY)
    return cli_error (CLI_EXIT_REFUSED, "%s is mounted: unmount it first",
                      dev);
  if (rc < 0)
    return cli_error (CLI_EXIT_REFUSED, "cannot detach %s: %s", dev,
                      strerror (-rc));
  return CLI_EXIT_OK;
}

int
cli_detach_file (const char *file)
{
  char dev[64];
  int r = CLI_EXIT_OK, n = 0;

  /* Detaching is immediate when nothing holds the device. */
  while (r == CLI_EXIT_OK && loop_find (file, dev, sizeof dev) && n++ < 16)
    r = cli_detach_dev (dev);
  return r;
}

int
cli_cmd_attach (struct cli *cli, int argc, char **argv)
{
  json_object *devices;
  int r, read_only;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "attach needs a snapshot number or "
                      "\"volume\"");
  r = cli_target_devices (cli, argv[optind], &devices, &read_only);
  if (r != CLI_EXIT_OK)
    return r;
  r = cli_attach_devices (devices, read_only ? "the snapshot" : "the volume",
                          read_only);
  json_object_put (devices);
  return r;
}

int
cli_cmd_detach (struct cli *cli, int argc, char **argv)
{
  json_object *devices;
  const char *file, *dev;
  char loop[64];
  int r, read_only;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "detach needs a snapshot number, "
                      "\"volume\" or a loop device");
  if (strncmp (argv[optind], "/dev/", 5) == 0)
    return cli_detach_dev (argv[optind]);
  r = cli_target_devices (cli, argv[optind], &devices, &read_only);
  if (r != CLI_EXIT_OK)
    return r;
  file = cli_fuse_file (devices);
  dev = cli_block_device (devices);
  if (file && loop_find (file, loop, sizeof loop))
    r = cli_detach_file (file);
  else if (dev)
    r = cli_error (CLI_EXIT_REFUSED, "%s is a block device of fssnapd's: "
                   "nothing to detach", dev);
  else
    r = cli_error (CLI_EXIT_REFUSED, "%s is not attached",
                   file ? file : argv[optind]);
  json_object_put (devices);
  return r;
}

void
cli_add_loop_fields (json_object *snaps)
{
  size_t i, n = json_object_array_length (snaps);
  json_object *s, *devices;
  const char *file;
  char dev[64];

  for (i = 0; i < n; i++) {
    s = json_object_array_get_idx (snaps, i);
    if (json_object_object_get_ex (s, "devices", &devices)
        && (file = cli_fuse_file (devices))
        && loop_find (file, dev, sizeof dev))
      json_object_object_add (s, "loop", json_object_new_string (dev));
  }
}
