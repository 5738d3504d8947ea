/* SPDX-License-Identifier: MIT */
/*
 * fssnap create, delete and list.  Option values are checked here with the
 * control protocol's parser (fssnapd's own) before anything is sent, so a typo is a usage error
 * (exit 1) and never reaches fssnapd.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/devices.h"
#include "control/options.h"
#include "fs/loop.h"

enum { CLI_OPT_MOUNT = 256, CLI_OPT_ATTACH, CLI_OPT_FORCE };
#define CLI_MAX_GROUP 16        /* --mount options of one create */

int
cli_add_options (char **optstr, const char *arg)
{
  struct fssnap_create_opts opts;
  char *joined, *storage = NULL, err[256] = "";

  if (asprintf (&joined, "%s%s%s", *optstr ? *optstr : "",
                *optstr ? "," : "", arg) < 0)
    return cli_error (CLI_EXIT_USAGE, "out of memory");
  free (*optstr);
  *optstr = joined;
  memset (&opts, 0, sizeof opts);
  if (ctl_options_parse (arg, &opts, &storage, err, sizeof err) < 0) {
    free (storage);
    return cli_error (CLI_EXIT_USAGE, "bad -o option \"%s\": %s", arg,
                      *err ? err : "not understood");
  }
  free (storage);
  return CLI_EXIT_OK;
}

/* --mount PATH: canonical, recorded, frozen during the create. */
static int
cli_mount_arg (json_object *req, const char *arg, char *mount)
{
  if (!realpath (arg, mount))
    return cli_error (CLI_EXIT_USAGE, "mount point %s: %s", arg,
                      strerror (errno));
  json_object_object_add (req, "mount", json_object_new_string (mount));
  return CLI_EXIT_OK;
}

int
cli_cmd_create (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "mount", required_argument, NULL, CLI_OPT_MOUNT },
    { "json", no_argument, NULL, 'j' },
    { "attach", no_argument, NULL, CLI_OPT_ATTACH },
    { NULL, 0, NULL, 0 },
  };
  char *optstr = NULL, mount[PATH_MAX] = "", *mounts[CLI_MAX_GROUP];
  json_object *req, *reply, *snap, *dev, *devices;
  int c, r = CLI_EXIT_OK, json = 0, attach = 0;
  size_t nmounts = 0;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("create"));
  while (r == CLI_EXIT_OK
         && (c = getopt_long (argc, argv, ":o:", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': r = cli_add_options (&optstr, optarg); break;
    case 'j': json = 1; break;
    case CLI_OPT_ATTACH: attach = 1; break;
    case CLI_OPT_MOUNT:
      if (nmounts == CLI_MAX_GROUP)
        r = cli_error (CLI_EXIT_USAGE, "at most %d --mount", CLI_MAX_GROUP);
      else
        mounts[nmounts++] = optarg;
      if (r == CLI_EXIT_OK && nmounts == 1)
        r = cli_mount_arg (req, optarg, mount);
      break;
    default: r = cli_bad_option (c, argv);
    }
  }
  /* "fssnap create /mnt/data", as illumos fssnap takes it. */
  if (r == CLI_EXIT_OK && optind == argc - 1 && !*mount)
    r = cli_mount_arg (req, argv[optind++], mount);
  if (r == CLI_EXIT_OK && optind != argc)
    r = cli_error (CLI_EXIT_USAGE, "create takes no argument \"%s\"",
                   argv[optind]);
  if (r == CLI_EXIT_OK && nmounts > 1 && attach)
    r = cli_error (CLI_EXIT_USAGE, "--attach takes one snapshot, not a "
                   "group");
  if (r != CLI_EXIT_OK || nmounts > 1) {
    json_object_put (req);
    if (r == CLI_EXIT_OK)
      r = cli_create_group (cli, mounts, nmounts, optstr, json);
    free (optstr);
    return r;
  }
  if (optstr)
    json_object_object_add (req, "options", json_object_new_string (optstr));
  free (optstr);
  if (*mount)
    r = cli_request_frozen (cli, mount, req, &reply);
  else
    r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "snapshot", &snap)
      || !json_object_object_get_ex (snap, "device", &dev)
      || !json_object_object_get_ex (snap, "devices", &devices))
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the device");
  else if (attach)
    r = cli_attach_devices (devices, "the snapshot", 1);
  else if (json)
    cli_print_json (snap);
  else
    puts (json_object_get_string (dev));
  json_object_put (reply);
  return r;
}

/* A snapshot attached to a loop device is deleted only with --force,
 * which detaches it.
 */
static int
cli_delete_detach (struct cli *cli, long num, int force)
{
  char file[PATH_MAX], loop[64];
  int r;

  r = cli_snapshot_file (cli, num, file, sizeof file);
  if (r != CLI_EXIT_OK || !*file || !loop_find (file, loop, sizeof loop))
    return r;
  if (!force)
    return cli_error (CLI_EXIT_REFUSED, "snapshot %ld is attached as %s: "
                      "detach it first or use --force", num, loop);
  return cli_detach_file (file);
}

int
cli_cmd_delete (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "force", no_argument, NULL, CLI_OPT_FORCE },
    { NULL, 0, NULL, 0 },
  };
  json_object *req, *reply;
  long num;
  int c, r, force = 0;

  while ((c = getopt_long (argc, argv, ":", longopts, NULL)) != -1) {
    if (c != CLI_OPT_FORCE)
      return cli_bad_option (c, argv);
    force = 1;
  }
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "delete needs a snapshot number");
  if (optind != argc - 1)
    return cli_error (CLI_EXIT_USAGE, "delete takes one snapshot number");
  if (strncmp (argv[optind], "clone/", 6) == 0) {
    optind = 0;
    return cli_cmd_delete_clone (cli, argc, argv);
  }
  num = cli_parse_number (argv[optind]);
  if (num < 0)
    return CLI_EXIT_USAGE;
  r = cli_delete_detach (cli, num, force);
  if (r != CLI_EXIT_OK)
    return r;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("delete"));
  json_object_object_add (req, "number", json_object_new_int64 (num));
  if (force)
    json_object_object_add (req, "force", json_object_new_boolean (1));
  r = cli_request (cli, req, &reply);
  if (r == CLI_EXIT_OK)
    json_object_put (reply);
  return r;
}

static void
cli_list_print (json_object *snaps)
{
  size_t i, n = json_object_array_length (snaps);

  printf ("%-4s %-9s %-19s %-36s %-12s %s\n", "NUM", "STATE", "CREATED",
          "UUID", "ATTACHED", "DEVICE");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (snaps, i);
    char when[64];
    cli_format_time (s, "%Y-%m-%d %H:%M:%S", when, sizeof when);
    printf ("%-4s %-9s %-19s %-36s %-12s %s\n", cli_field (s, "number"),
            cli_field (s, "state"), when, cli_field (s, "uuid"),
            cli_field (s, "loop"), cli_field (s, "device"));
    if (*cli_field (s, "reason"))       /* why disabled or offline */
      printf ("     reason: %s\n", cli_field (s, "reason"));
    if (*cli_field (s, "group") && strcmp (cli_field (s, "group"), "-"))
      printf ("     group: %s\n", cli_field (s, "group"));
  }
}

int
cli_cmd_list (struct cli *cli, int argc, char **argv)
{
  json_object *req, *reply, *snaps;
  int r, json = 0;

  r = cli_simple_args (argc, argv, &json, 0);
  if (r != CLI_EXIT_OK)
    return r;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("list"));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "snapshots", &snaps)
      || !json_object_is_type (snaps, json_type_array))
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the list");
  else if (cli_add_loop_fields (snaps), json)
    cli_print_json (snaps);
  else {
    json_object *clones = NULL;
    cli_list_print (snaps);
    json_object_object_get_ex (reply, "clones", &clones);
    cli_print_clones (clones);
  }
  json_object_put (reply);
  return r;
}
