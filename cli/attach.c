/* SPDX-License-Identifier: MIT */
/*
 * fssnap attach N|volume and fssnap detach N|volume|/dev/loopN: a loop
 * device with direct I/O on fssnapd's device file (read-only for a
 * snapshot), so that one command gives what mount and fsck take.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/devices.h"
#include "fs/loop.h"

int
cli_snapshot_file (struct cli *cli, long num, char *path, size_t len)
{
  json_object *req, *reply, *snaps, *dev = NULL;
  int r;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("info"));
  json_object_object_add (req, "number", json_object_new_int64 (num));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (json_object_object_get_ex (reply, "snapshots", &snaps) &&
      json_object_array_length (snaps) == 1)
    json_object_object_get_ex (json_object_array_get_idx (snaps, 0),
                               "device", &dev);
  if (dev)
    snprintf (path, len, "%s", json_object_get_string (dev));
  else
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the device");
  json_object_put (reply);
  return r;
}

/* "volume" or a snapshot number -> the device file. */
static int
cli_target_file (struct cli *cli, const char *arg, char *path, size_t len,
                 int *read_only)
{
  long num;

  *read_only = strcmp (arg, "volume") != 0;
  if (!*read_only) {
    if (!cli->run_dir)
      return cli_error (CLI_EXIT_USAGE, "the volume needs --run-dir");
    snprintf (path, len, "%s/dev/volume", cli->run_dir);
    return CLI_EXIT_OK;
  }
  num = cli_parse_number (arg);
  if (num < 0)
    return CLI_EXIT_USAGE;
  return cli_snapshot_file (cli, num, path, len);
}

int
cli_attach_file (const char *file, int read_only)
{
  char dev[64];
  int rc;

  if (loop_find (file, dev, sizeof dev))
    return cli_error (CLI_EXIT_REFUSED, "%s is already attached as %s", file,
                      dev);
  rc = loop_attach (file, read_only, dev, sizeof dev);
  if (rc == -ENOENT)
    return cli_error (CLI_EXIT_REFUSED, "%s: no such device file (is "
                      "fssnapd running without --no-fuse?)", file);
  if (rc < 0)
    return cli_error (CLI_EXIT_REFUSED, "cannot attach %s: %s", file,
                      strerror (-rc));
  puts (dev);
  return CLI_EXIT_OK;
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
  char file[PATH_MAX];
  int r, read_only;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "attach needs a snapshot number or "
                      "\"volume\"");
  r = cli_target_file (cli, argv[optind], file, sizeof file, &read_only);
  if (r != CLI_EXIT_OK)
    return r;
  return cli_attach_file (file, read_only);
}

int
cli_cmd_detach (struct cli *cli, int argc, char **argv)
{
  char file[PATH_MAX], dev[64];
  int r, read_only;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "detach needs a snapshot number, "
                      "\"volume\" or a loop device");
  if (strncmp (argv[optind], "/dev/", 5) == 0)
    return cli_detach_dev (argv[optind]);
  r = cli_target_file (cli, argv[optind], file, sizeof file, &read_only);
  if (r != CLI_EXIT_OK)
    return r;
  if (!loop_find (file, dev, sizeof dev))
    return cli_error (CLI_EXIT_REFUSED, "%s is not attached", file);
  return cli_detach_file (file);
}

void
cli_add_loop_fields (json_object *snaps)
{
  size_t i, n = json_object_array_length (snaps);
  json_object *s, *file;
  char dev[64];

  for (i = 0; i < n; i++) {
    s = json_object_array_get_idx (snaps, i);
    if (json_object_object_get_ex (s, "device", &file) &&
        loop_find (json_object_get_string (file), dev, sizeof dev))
      json_object_object_add (s, "loop", json_object_new_string (dev));
  }
}
