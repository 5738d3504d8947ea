/* SPDX-License-Identifier: MIT */
/*
 * fssnap info and stats.  The human form of info follows illumos
 * "fssnap -i"; "-o KEY,..." prints raw values (bytes, seconds since the
 * epoch), one per line, for scripts; --json prints the daemon's objects.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"
#include "cli/cli.h"
#include "cli/devices.h"

enum cli_format { CLI_RAW, CLI_SIZE, CLI_MAXSIZE, CLI_TIME, CLI_OPTIONAL,
                  CLI_CLONES };

struct cli_info_key {
  const char *key;              /* as in the daemon's JSON */
  const char *alias;            /* illumos fssnap -o name, or NULL */
  const char *label;            /* human form; NULL: only with -o */
  enum cli_format format;
};

static const struct cli_info_key cli_info_keys[] = {
  { "number", "snapnumber", "Snapshot number", CLI_RAW },
  { "device", "blockdevname", "Block Device", CLI_RAW },
  { "loop", NULL, "Attached loop device", CLI_OPTIONAL },
  { "mountpoint", NULL, "Mount point", CLI_OPTIONAL },
  { "state", NULL, "Device state", CLI_RAW },
  { "backing_store", "backing", "Backing store path", CLI_RAW },
  { "backing_store_size", "backingsize", "Backing store size", CLI_SIZE },
  { "maxsize", NULL, "Maximum backing store size", CLI_MAXSIZE },
  { "create_time", "createtime", "Snapshot create time", CLI_TIME },
  { "chunksize", NULL, "Copy-on-write granularity", CLI_SIZE },
  { "uuid", NULL, "UUID", CLI_RAW },
  { "candidate_chunks", NULL, "Candidate chunks", CLI_RAW },
  { "preserved_chunks", NULL, "Preserved chunks", CLI_RAW },
  { "reason", NULL, "Unavailable because", CLI_OPTIONAL },
  { "group", NULL, "Group (several volumes)", CLI_OPTIONAL },
  { "clones", NULL, "Writable clones", CLI_CLONES },
  { "owned_chunks", NULL, NULL, CLI_RAW },
  { "chunks", NULL, NULL, CLI_RAW },
  { "open_count", NULL, NULL, CLI_RAW },
  { "backing_files", NULL, NULL, CLI_RAW },
  { "maxfilesize", NULL, NULL, CLI_RAW },
  { "transient", NULL, NULL, CLI_RAW },
  { "unlinked", NULL, NULL, CLI_RAW },
  { "seq", NULL, NULL, CLI_RAW },
};
#define CLI_NKEYS (sizeof cli_info_keys / sizeof cli_info_keys[0])

static const struct cli_info_key *
cli_info_key_find (const char *name)
{
  size_t i;

  for (i = 0; i < CLI_NKEYS; i++)
    if (strcmp (name, cli_info_keys[i].key) == 0
        || (cli_info_keys[i].alias
            && strcmp (name, cli_info_keys[i].alias) == 0))
      return &cli_info_keys[i];
  return NULL;
}

/* Split "-o a,b,c" into keys[]; returns how many or -1 after a message. */
static int
cli_info_parse_keys (char *arg, const struct cli_info_key **keys)
{
  char *save = NULL, *name;
  int n = 0;

  for (name = strtok_r (arg, ",", &save); name;
       name = strtok_r (NULL, ",", &save)) {
    if ((size_t) n == CLI_NKEYS) {
      cli_error (CLI_EXIT_USAGE, "too many -o keys");
      return -1;
    }
    keys[n] = cli_info_key_find (name);
    if (!keys[n]) {
      cli_error (CLI_EXIT_USAGE, "unknown info key \"%s\" (see fssnap "
                 "--help)", name);
      return -1;
    }
    n++;
  }
  if (n == 0)
    cli_error (CLI_EXIT_USAGE, "-o needs at least one key");
  return n ? n : -1;
}

/* "K (DEVICE), ..." for the clones of a snapshot, or "-". */
static void
cli_info_clones (json_object *clones, char *buf, size_t len)
{
  size_t i, n = clones ? json_object_array_length (clones) : 0, at = 0;

  snprintf (buf, len, "-");
  for (i = 0; i < n && at < len; i++) {
    json_object *cl = json_object_array_get_idx (clones, i);
    int w = snprintf (buf + at, len - at, "%s%s (%s)", i ? ", " : "",
                      cli_field (cl, "number"), cli_field (cl, "device"));
    if (w < 0)
      break;
    at += (size_t) w;
  }
}

static void
cli_info_value (json_object *snap, const struct cli_info_key *k,
                char *buf, size_t len)
{
  const char *raw = cli_field (snap, k->key);
  json_object *v = NULL;
  uint64_t n = json_object_object_get_ex (snap, k->key, &v)
               ? json_object_get_uint64 (v) : 0;

  switch (k->format) {
  case CLI_MAXSIZE:
    if (n == 0) {
      snprintf (buf, len, "Unlimited");
      break;
    }
    /* fall through */
  case CLI_SIZE: size_format (n, buf, len); break;
  case CLI_TIME: cli_format_time (snap, "%a %b %d %H:%M:%S %Y", buf, len);
    break;
  case CLI_OPTIONAL: snprintf (buf, len, "%s", *raw ? raw : "-"); break;
  case CLI_RAW: snprintf (buf, len, "%s", raw); break;
  case CLI_CLONES: cli_info_clones (v, buf, len); break;
  }
}

static void
cli_info_print_human (json_object *snap)
{
  size_t i;

  for (i = 0; i < CLI_NKEYS; i++) {
    const struct cli_info_key *k = &cli_info_keys[i];
    char value[4200];
    if (!k->label)
      continue;
    if (strcmp (k->key, "reason") == 0 && !*cli_field (snap, k->key))
      continue;
    cli_info_value (snap, k, value, sizeof value);
    printf ("%-30s: %s\n", k->label, value);
  }
}

/* The selected keys of snap as a new JSON object. */
static json_object *
cli_info_select (json_object *snap, const struct cli_info_key **keys,
                 int nkeys)
{
  json_object *obj = json_object_new_object (), *v;
  int i;

  for (i = 0; i < nkeys; i++)
    if (json_object_object_get_ex (snap, keys[i]->key, &v))
      json_object_object_add (obj, keys[i]->key, json_object_get (v));
  return obj;
}

/* Human form, or with -o the raw values one per line; a blank line
 * between snapshots.
 */
static void
cli_info_print_text (json_object *snaps, const struct cli_info_key **keys,
                     int nkeys)
{
  size_t i, n = json_object_array_length (snaps);
  int k;

  for (i = 0; i < n; i++) {
    json_object *snap = json_object_array_get_idx (snaps, i);
    if (i > 0)
      putchar ('\n');
    if (nkeys == 0)
      cli_info_print_human (snap);
    for (k = 0; k < nkeys; k++)
      puts (cli_field (snap, keys[k]->key));
  }
}

/* An array of (selected) info objects, or one object for "info N". */
static void
cli_info_print_json (json_object *snaps, const struct cli_info_key **keys,
                     int nkeys, bool one)
{
  json_object *out = json_object_new_array ();
  size_t i, n = json_object_array_length (snaps);

  for (i = 0; i < n; i++) {
    json_object *snap = json_object_array_get_idx (snaps, i);
    json_object_array_add (out, nkeys ? cli_info_select (snap, keys, nkeys)
                                      : json_object_get (snap));
  }
  cli_print_json (one && n == 1 ? json_object_array_get_idx (out, 0) : out);
  json_object_put (out);
}

/* Parse "info [N] [-o KEY,...] [--json]" into a request. */
static int
cli_info_args (int argc, char **argv, json_object *req,
               const struct cli_info_key **keys, int *nkeys, int *json)
{
  static const struct option longopts[] = {
    { "json", no_argument, NULL, 'j' },
    { NULL, 0, NULL, 0 },
  };
  long num;
  int c;

  while ((c = getopt_long (argc, argv, ":o:", longopts, NULL)) != -1) {
    if (c == 'j')
      *json = 1;
    else if (c != 'o')
      return cli_bad_option (c, argv);
    else if ((*nkeys = cli_info_parse_keys (optarg, keys)) < 0)
      return CLI_EXIT_USAGE;
  }
  if (argc - optind > 1)
    return cli_error (CLI_EXIT_USAGE, "info: unexpected argument \"%s\"",
                      argv[optind + 1]);
  if (optind == argc)
    return CLI_EXIT_OK;
  if (strncmp (argv[optind], "clone/", 6) == 0) {
    json_object_object_add (req, "clone",
                            json_object_new_string (argv[optind]));
    return CLI_EXIT_OK;
  }
  num = cli_parse_number (argv[optind]);
  if (num < 0)
    return CLI_EXIT_USAGE;
  json_object_object_add (req, "number", json_object_new_int64 (num));
  return CLI_EXIT_OK;
}

int
cli_cmd_info (struct cli *cli, int argc, char **argv)
{
  const struct cli_info_key *keys[CLI_NKEYS];
  json_object *req, *reply, *snaps;
  int r, nkeys = 0, json = 0;
  bool one;

  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("info"));
  r = cli_info_args (argc, argv, req, keys, &nkeys, &json);
  if (r != CLI_EXIT_OK) {
    json_object_put (req);
    return r;
  }
  if (json_object_object_get_ex (req, "clone", &snaps)) {
    r = cli_clone_info (cli, json_object_get_string (snaps), json);
    json_object_put (req);
    return r;
  }
  one = json_object_object_get_ex (req, "number", NULL);
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "snapshots", &snaps)
      || !json_object_is_type (snaps, json_type_array))
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks snapshots");
  else if (cli_add_loop_fields (snaps), json)
    cli_info_print_json (snaps, keys, nkeys, one);
  else
    cli_info_print_text (snaps, keys, nkeys);
  json_object_put (reply);
  return r;
}

/* ---- stats ------------------------------------------------------------- */

static const struct {
  const char *key, *label;
  bool size;
} cli_stats_keys[] = {
  { "size", "Volume size", true },
  { "chunksize", "Copy-on-write granularity", true },
  { "snapshots", "Snapshots", false },
  { "retained", "Deleted, kept for older ones", false },
  { "highest_number", "Highest snapshot number", false },
  { "chunks_copied", "Chunks copied", false },
  { "bytes_copied", "Bytes copied", true },
  { "throttle_waits", "Throttle waits", false },
  { "mem_chunks", "Chunks in memory", false },
  { "mem_chunks_peak", "Chunks in memory, peak", false },
  { "max_mem_chunks", "Chunks in memory, limit", false },
  { "store_errors", "Backing store errors", false },
  { "origin_opened_elsewhere", "Origin opened elsewhere", false },
  { "staged_bytes", "Staged writes in memory", true },
  { "staged_bytes_peak", "Staged writes in memory, peak", true },
  { "max_staged_bytes", "Staged writes in memory, limit", true },
  { "staged_writes", "Writes staged", false },
  { "staging_waits", "Staging waits", false },
};

static void
cli_stats_print (json_object *stats)
{
  size_t i;

  for (i = 0; i < sizeof cli_stats_keys / sizeof cli_stats_keys[0]; i++) {
    json_object *v;
    char value[64];
    if (!json_object_object_get_ex (stats, cli_stats_keys[i].key, &v))
      continue;
    if (cli_stats_keys[i].size)
      size_format (json_object_get_uint64 (v), value, sizeof value);
    else
      snprintf (value, sizeof value, "%s", json_object_get_string (v));
    printf ("%-30s: %s\n", cli_stats_keys[i].label, value);
  }
}

int
cli_cmd_stats (struct cli *cli, int argc, char **argv)
{
  json_object *req, *reply, *stats;
  int r, json = 0;

  r = cli_simple_args (argc, argv, &json, 0);
  if (r != CLI_EXIT_OK)
    return r;
  req = json_object_new_object ();
  json_object_object_add (req, "request", json_object_new_string ("stats"));
  r = cli_request (cli, req, &reply);
  if (r != CLI_EXIT_OK)
    return r;
  if (!json_object_object_get_ex (reply, "stats", &stats))
    r = cli_error (CLI_EXIT_UNREACHABLE, "fssnapd's reply lacks stats");
  else if (json)
    cli_print_json (stats);
  else
    cli_stats_print (stats);
  json_object_put (reply);
  return r;
}
