/* SPDX-License-Identifier: MIT */
/*
 * fssnap rollback N: ask fssnapd to make the volume read as snapshot N,
 * then poll "rollback-status" until it is over, showing the progress on a
 * terminal.  The rollback runs inside fssnapd: a ^C here only stops the
 * watching (fssnapd goes on, and resumes it after a crash).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define CLI_ROLLBACK_POLL_MS 100

enum { CLI_OPT_FORCE = 256 };

static json_object *
cli_rollback_req (const char *name)
{
  json_object *req = json_object_new_object ();

  json_object_object_add (req, "request", json_object_new_string (name));
  return req;
}

static long long
cli_rollback_num (json_object *st, const char *key)
{
  json_object *v;

  return json_object_object_get_ex (st, key, &v) ? json_object_get_int64 (v)
                                                 : 0;
}

static void
cli_rollback_show (json_object *st, int tty)
{
  if (!tty)
    return;
  fprintf (stderr, "\rrollback to snapshot %s: %lld of %lld chunks examined, "
           "%lld moved", cli_field (st, "number"),
           cli_rollback_num (st, "examined"), cli_rollback_num (st, "chunks"),
           cli_rollback_num (st, "moved"));
}

/* Poll until the rollback is no longer running; *stp is its last status. */
static int
cli_rollback_wait (struct cli *cli, json_object *reply, json_object **replyp,
                   int tty)
{
  struct timespec ts = { 0, CLI_ROLLBACK_POLL_MS * 1000000L };
  json_object *st;
  int r = CLI_EXIT_OK;

  while (json_object_object_get_ex (reply, "rollback", &st)
         && strcmp (cli_field (st, "state"), "running") == 0) {
    cli_rollback_show (st, tty);
    nanosleep (&ts, NULL);
    json_object_put (reply);
    r = cli_request (cli, cli_rollback_req ("rollback-status"), &reply);
    if (r != CLI_EXIT_OK)
      return r;
  }
  if (!json_object_object_get_ex (reply, "rollback", &st)) {
    json_object_put (reply);
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                      "rollback status");
  }
  cli_rollback_show (st, tty);
  if (tty)
    fputc ('\n', stderr);
  *replyp = reply;
  return CLI_EXIT_OK;
}

int
cli_cmd_rollback (struct cli *cli, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "force", no_argument, NULL, CLI_OPT_FORCE },
    { "json", no_argument, NULL, 'j' },
    { NULL, 0, NULL, 0 },
  };
  json_object *req, *reply, *st;
  int c, r, force = 0, json = 0;
  long num;

  while ((c = getopt_long (argc, argv, ":", longopts, NULL)) != -1) {
    if (c == CLI_OPT_FORCE)
      force = 1;
    else if (c == 'j')
      json = 1;
    else
      return cli_bad_option (c, argv);
  }
  if (optind != argc - 1)
    return cli_error (CLI_EXIT_USAGE, "rollback takes one snapshot number");
  num = cli_parse_number (argv[optind]);
  if (num < 0)
    return CLI_EXIT_USAGE;
  req = cli_rollback_req ("rollback");
  json_object_object_add (req, "number", json_object_new_int64 (num));
  if (force)
    json_object_object_add (req, "force", json_object_new_boolean (1));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  r = cli_rollback_wait (cli, reply, &reply, !json && isatty (STDERR_FILENO));
  if (r != CLI_EXIT_OK)
    return r;
  json_object_object_get_ex (reply, "rollback", &st);
  if (json)
    cli_print_json (st);
  if (strcmp (cli_field (st, "state"), "done") != 0)
    r = cli_error (CLI_EXIT_REFUSED, "rollback to snapshot %ld %s: %s", num,
                   cli_field (st, "state"), cli_field (st, "error"));
  else if (!json)
    printf ("volume rolled back to snapshot %ld (%lld chunks moved)\n", num,
            cli_rollback_num (st, "moved"));
  json_object_put (reply);
  return r;
}
