/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the fssnap subcommands: parsing the common arguments, and
 * printing JSON as is, fields of reply objects as text, times in the local
 * time zone.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli/cli.h"

void
cli_print_json (json_object *obj)
{
  puts (json_object_to_json_string_ext (obj, JSON_C_TO_STRING_PRETTY
                                        | JSON_C_TO_STRING_SPACED
                                        | JSON_C_TO_STRING_NOSLASHESCAPE));
}

const char *
cli_field (json_object *obj, const char *key)
{
  json_object *v;

  if (!json_object_object_get_ex (obj, key, &v) || !v)
    return "-";
  return json_object_get_string (v);
}

void
cli_format_time (json_object *obj, const char *fmt, char *buf, size_t len)
{
  json_object *v;
  time_t t;
  struct tm tm;

  if (!json_object_object_get_ex (obj, "create_time", &v)) {
    snprintf (buf, len, "-");
    return;
  }
  t = (time_t) json_object_get_int64 (v);
  if (!localtime_r (&t, &tm) || !strftime (buf, len, fmt, &tm))
    snprintf (buf, len, "%lld", (long long) t);
}

long
cli_parse_number (const char *arg)
{
  char *end;
  long n;

  errno = 0;
  n = strtol (arg, &end, 10);
  if (arg[0] < '0' || arg[0] > '9' || *end || errno || n > INT_MAX) {
    cli_error (CLI_EXIT_USAGE, "\"%s\" is not a snapshot number", arg);
    return -1;
  }
  return n;
}

int
cli_simple_args (int argc, char **argv, int *json, int max_args)
{
  static const struct option longopts[] = {
    { "json", no_argument, NULL, 'j' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  while ((c = getopt_long (argc, argv, ":", json ? longopts : longopts + 1,
                           NULL)) != -1) {
    if (c != 'j')
      return cli_bad_option (c, argv);
    *json = 1;
  }
  if (argc - optind > max_args)
    return cli_error (CLI_EXIT_USAGE, "%s: unexpected argument \"%s\"",
                      argv[0], argv[optind + max_args]);
  return CLI_EXIT_OK;
}
