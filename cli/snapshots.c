/* SPDX-License-Identifier: MIT */
/*
 * fssnap create, delete and list.  Option values are checked here with the
 * engine's own parser before anything is sent, so a typo is a usage error
 * (exit 1) and never reaches fssnapd.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libfssnap.h"
#include "cli/cli.h"

enum { CLI_OPT_MOUNT = 256 };

/* Join the -o arguments with commas and check them. */
static int
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
  if (fssnap_create_opts_parse (arg, &opts, &storage, err, sizeof err) < 0) {
    free (storage);
    return cli_error (CLI_EXIT_USAGE, "bad -o option \"%s\": %s", arg,
                      *err ? err : "not understood");
  }
  free (storage);
  return CLI_EXIT_OK;
}

int
cli_cmd_create (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "mount", required_argument, NULL, CLI_OPT_MOUNT },
    { "json", no_argument, NULL, 'j' },
    { NULL, 0, NULL, 0 },
  };
  char *optstr = NULL, mount[PATH_MAX];
  json_object *req, *reply, *snap, *dev;
  int c, r = CLI_EXIT_OK, json = 0;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("create"));
  while (r == CLI_EXIT_OK
         && (c = getopt_long (argc, argv, ":o:", longopts, NULL)) != -1) {
    switch (c) {
    case 'o': r = cli_add_options (&optstr, optarg); break;
    case 'j': json = 1; break;
    case CLI_OPT_MOUNT:
      if (!realpath (optarg, mount))
        r = cli_error (CLI_EXIT_USAGE, "mount point %s: %s", optarg,
                       strerror (errno));
      else
        json_object_object_add (req, "mount", json_object_new_string (mount));
      break;
    default: r = cli_bad_option (c, argv);
    }
  }
  if (r == CLI_EXIT_OK && optind != argc)
    r = cli_error (CLI_EXIT_USAGE, "create takes no argument \"%s\"",
                   argv[optind]);
  if (r != CLI_EXIT_OK) {
    free (optstr);
    json_object_put (req);
    return r;
  }
  if (optstr)
    json_object_object_add (req, "options", json_object_new_string (optstr));
  free (optstr);
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "snapshot", &snap)
      || !json_object_object_get_ex (snap, "device", &dev))
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the device");
  else if (json)
    cli_print_json (snap);
  else
    puts (json_object_get_string (dev));
  json_object_put (reply);
  return r;
}

int
cli_cmd_delete (struct cli *cli, int argc, char **argv)
{
  json_object *req, *reply;
  long num;
  int r;

  r = cli_simple_args (argc, argv, NULL, 1);
  if (r != CLI_EXIT_OK)
    return r;
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "delete needs a snapshot number");
  num = cli_parse_number (argv[optind]);
  if (num < 0)
    return CLI_EXIT_USAGE;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("delete"));
  json_object_object_add (req, "number", json_object_new_int64 (num));
  r = cli_request (cli, req, &reply);
  if (r == CLI_EXIT_OK)
    json_object_put (reply);
  return r;
}

static void
cli_list_print (json_object *snaps)
{
  size_t i, n = json_object_array_length (snaps);

  printf ("%-4s %-9s %-19s %-36s %s\n", "NUM", "STATE", "CREATED", "UUID",
          "DEVICE");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (snaps, i);
    char when[64];
    cli_format_time (s, "%Y-%m-%d %H:%M:%S", when, sizeof when);
    printf ("%-4s %-9s %-19s %-36s %s\n", cli_field (s, "number"),
            cli_field (s, "state"), when, cli_field (s, "uuid"),
            cli_field (s, "device"));
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
  else if (json)
    cli_print_json (snaps);
  else
    cli_list_print (snaps);
  json_object_put (reply);
  return r;
}
