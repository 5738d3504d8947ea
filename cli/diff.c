/* SPDX-License-Identifier: MIT */
/*
 * fssnap diff A B: the byte ranges that may differ between two snapshots,
 * or a snapshot and the live volume, from fssnapd's changed-block maps.
 * The daemon answers in pages of at most 65536 extents; they are printed
 * as they come (adjacent ones merged across pages), so the output of a
 * huge volume is never held whole.  Exits like cmp: 0 same, 1 differs.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

/* The merged extent not yet printed, and what was printed so far. */
struct cli_diff {
  bool json;
  uint64_t start, len;
  uint64_t bytes;
  unsigned long printed;
  char a_uuid[64], b_uuid[64];  /* of the first page: the same on all */
};

/* "volume" or a snapshot number, into the request as key. */
static int
cli_diff_side (json_object *req, const char *key, const char *arg)
{
  long num;

  if (strcmp (arg, "volume") == 0) {
    json_object_object_add (req, key, json_object_new_string ("volume"));
    return CLI_EXIT_OK;
  }
  num = cli_parse_number (arg);
  if (num < 0)
    return CLI_EXIT_USAGE;
  json_object_object_add (req, key, json_object_new_int64 (num));
  return CLI_EXIT_OK;
}

static void
cli_diff_print (struct cli_diff *d)
{
  if (d->len == 0)
    return;
  if (d->json)
    printf ("%s\n  {\"offset\": %" PRIu64 ", \"length\": %" PRIu64 "}",
            d->printed ? "," : "", d->start, d->len);
  else
    printf ("%" PRIu64 " %" PRIu64 "\n", d->start, d->len);
  d->bytes += d->len;
  d->printed++;
  d->len = 0;
}

static void
cli_diff_add (struct cli_diff *d, uint64_t off, uint64_t len)
{
  if (d->len > 0 && d->start + d->len == off) {
    d->len += len;
    return;
  }
  cli_diff_print (d);
  d->start = off;
  d->len = len;
}

static uint64_t
cli_u64 (json_object *obj, const char *key)
{
  json_object *v;

  if (!json_object_object_get_ex (obj, key, &v))
    return 0;
  return json_object_get_uint64 (v);
}

/* Both pages speak of the same snapshots (not a reused number). */
static bool
cli_diff_same (struct cli_diff *d, json_object *reply, bool first)
{
  const char *a = cli_field (reply, "a_uuid"), *b = cli_field (reply, "b_uuid");

  if (first) {
    snprintf (d->a_uuid, sizeof d->a_uuid, "%s", a);
    snprintf (d->b_uuid, sizeof d->b_uuid, "%s", b);
    return true;
  }
  return strcmp (d->a_uuid, a) == 0 && strcmp (d->b_uuid, b) == 0;
}

/* Take one page's extents; *endp is where the next page starts. */
static int
cli_diff_page (struct cli_diff *d, json_object *reply, bool first,
               uint64_t *endp)
{
  json_object *exts;
  size_t i, n;

  if (!json_object_object_get_ex (reply, "extents", &exts)
      || !json_object_is_type (exts, json_type_array)
      || !json_object_object_get_ex (reply, "end", NULL))
    return cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks the "
                      "extents");
  if (!cli_diff_same (d, reply, first))
    return cli_error (CLI_EXIT_REFUSED, "a snapshot was deleted and its "
                      "number reused during the comparison");
  if (first && d->json)
    printf ("{\"a\": %s, \"b\": %s, \"extents\": [",
            json_object_to_json_string (json_object_object_get (reply, "a")),
            json_object_to_json_string (json_object_object_get (reply, "b")));
  n = json_object_array_length (exts);
  for (i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx (exts, i);
    cli_diff_add (d, cli_u64 (e, "offset"), cli_u64 (e, "length"));
  }
  *endp = cli_u64 (reply, "end");
  return CLI_EXIT_OK;
}

/* Ask for the pages from off on until the whole volume is described. */
static int
cli_diff_run (struct cli *cli, struct cli_diff *d, const char *a,
              const char *b)
{
  uint64_t off = 0, size = 1;
  bool first = true;
  int r = CLI_EXIT_OK;

  while (r == CLI_EXIT_OK && off < size) {
    json_object *req = json_object_new_object (), *reply;
    uint64_t end = off;
    json_object_object_add (req, "request", json_object_new_string ("diff"));
    if ((r = cli_diff_side (req, "a", a)) != CLI_EXIT_OK
        || (r = cli_diff_side (req, "b", b)) != CLI_EXIT_OK) {
      json_object_put (req);
      return r;
    }
    json_object_object_add (req, "offset", json_object_new_int64 (off));
    r = cli_request (cli, req, &reply);
    if (r != CLI_EXIT_OK)
      return r;
    size = cli_u64 (reply, "size");
    r = cli_diff_page (d, reply, first, &end);
    json_object_put (reply);
    if (r == CLI_EXIT_OK && end <= off && off < size)
      r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's diff made no progress");
    off = end;
    first = false;
  }
  return r;
}

int
cli_cmd_diff (struct cli *cli, int argc, char **argv)
{
  struct cli_diff d = { .json = false };
  int r, json = 0;

  /* diff exits like cmp: 1 says "differs", so its usage errors, which
   * exit 1 elsewhere, exit CLI_EXIT_DIFF_USAGE here.
   */
  r = cli_simple_args (argc, argv, &json, 2);
  if (r != CLI_EXIT_OK)
    return r == CLI_EXIT_USAGE ? CLI_EXIT_DIFF_USAGE : r;
  if (argc - optind != 2)
    return cli_error (CLI_EXIT_DIFF_USAGE, "diff needs two snapshot numbers "
                      "(or \"volume\")");
  d.json = json;
  r = cli_diff_run (cli, &d, argv[optind], argv[optind + 1]);
  if (r != CLI_EXIT_OK) {
    fflush (stdout);
    return r == CLI_EXIT_USAGE ? CLI_EXIT_DIFF_USAGE : r;
  }
  cli_diff_print (&d);
  if (d.json)
    printf ("%s], \"bytes\": %" PRIu64 "}\n", d.printed ? "\n" : "",
            d.bytes);
  if (fflush (stdout) != 0 || ferror (stdout))
    return cli_error (CLI_EXIT_REFUSED, "cannot write the extents: %m");
  return d.bytes > 0 ? CLI_EXIT_DIFFERS : CLI_EXIT_OK;
}
