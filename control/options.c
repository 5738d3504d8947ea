/* SPDX-License-Identifier: MIT */
/*
 * The snapshot option string of the control protocol's "options" field,
 * as fssnap(1M) takes it after -o:
 *   backing-store=PATH (or bs=PATH)  directory or file for the store
 *   maxsize=SIZE                     delete the snapshot past this size
 *   chunksize=SIZE                   copy-on-write granularity
 *   maxfilesize=SIZE                 split the store into files this big
 *   unlink                           unlink the store files once open
 *   transient                        no syncs; gone at restart
 * SIZE takes k/m/g/t suffixes.  Each option may appear once.  fssnap
 * checks its -o arguments with this parser before sending them and
 * fssnapd parses them again, so both sides agree on the syntax; the CLI
 * needs nothing of the engine for it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/size.h"
#include "control/options.h"

static int
opts_error (char *errmsg, size_t errlen, const char *fmt, ...)
{
  if (errmsg && errlen) {
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (errmsg, errlen, fmt, ap);
    va_end (ap);
  }
  return -EINVAL;
}

enum opt_kind { OPT_PATH, OPT_SIZE, OPT_FLAG };
enum opt_id { OPT_BACKING_STORE, OPT_MAXSIZE, OPT_CHUNKSIZE, OPT_MAXFILESIZE,
              OPT_UNLINK, OPT_TRANSIENT };

struct opt_desc {
  const char *name;
  const char *alias;
  enum opt_kind kind;
};

static const struct opt_desc opt_table[] = {
  [OPT_BACKING_STORE] = { "backing-store", "bs", OPT_PATH },
  [OPT_MAXSIZE] = { "maxsize", NULL, OPT_SIZE },
  [OPT_CHUNKSIZE] = { "chunksize", NULL, OPT_SIZE },
  [OPT_MAXFILESIZE] = { "maxfilesize", NULL, OPT_SIZE },
  [OPT_UNLINK] = { "unlink", NULL, OPT_FLAG },
  [OPT_TRANSIENT] = { "transient", NULL, OPT_FLAG },
};
#define NOPTS (sizeof opt_table / sizeof opt_table[0])

static int
opts_lookup (const char *name)
{
  for (unsigned i = 0; i < NOPTS; i++)
    if (strcmp (name, opt_table[i].name) == 0
        || (opt_table[i].alias && strcmp (name, opt_table[i].alias) == 0))
      return i;
  return -1;
}

/* Store one parsed option into opts. */
static int
opts_apply (enum opt_id id, char *value, uint64_t size,
            struct fssnap_create_opts *opts, char *errmsg, size_t errlen)
{
  switch (id) {
  case OPT_BACKING_STORE: opts->backing_store = value; break;
  case OPT_MAXSIZE: opts->maxsize = size; break;
  case OPT_CHUNKSIZE:
    if (size < FSSNAP_CHUNKSIZE_MIN || size > FSSNAP_CHUNKSIZE_MAX
        || (size & (size - 1)) != 0)
      return opts_error (errmsg, errlen, "chunksize=%s: must be a power of "
                         "two from 512 to 1m", value);
    opts->chunksize = size;
    break;
  case OPT_MAXFILESIZE: opts->max_backfile_size = size; break;
  case OPT_UNLINK: opts->unlink = true; break;
  case OPT_TRANSIENT: opts->transient = true; break;
  }
  return 0;
}

static int
opts_parse_one (char *item, bool *seen, struct fssnap_create_opts *opts,
                char *errmsg, size_t errlen)
{
  char *value = strchr (item, '=');
  if (value)
    *value++ = '\0';
  int i = opts_lookup (item);
  if (i < 0)
    return opts_error (errmsg, errlen, "unknown option '%s'", item);
  const struct opt_desc *d = &opt_table[i];
  if (seen[i])
    return opts_error (errmsg, errlen, "option '%s' given twice", d->name);
  seen[i] = true;
  if (d->kind == OPT_FLAG && value)
    return opts_error (errmsg, errlen, "option '%s' takes no value", d->name);
  if (d->kind != OPT_FLAG && (!value || !*value))
    return opts_error (errmsg, errlen, "option '%s' needs a value", d->name);
  uint64_t size = 0;
  if (d->kind == OPT_SIZE && (size_parse (value, &size) < 0 || size == 0))
    return opts_error (errmsg, errlen, "%s=%s: not a size (a number with an "
                       "optional k, m, g or t suffix)", d->name, value);
  return opts_apply (i, value, size, opts, errmsg, errlen);
}

int
ctl_options_parse (const char *optstr, struct fssnap_create_opts *opts,
                   char **storage, char *errmsg, size_t errlen)
{
  bool seen[NOPTS] = { false };
  struct fssnap_create_opts parsed = *opts;
  char *copy = strdup (optstr ? optstr : "");
  if (!copy)
    return -ENOMEM;
  char *save = NULL;
  for (char *item = strtok_r (copy, ",", &save); item;
       item = strtok_r (NULL, ",", &save)) {
    int r = opts_parse_one (item, seen, &parsed, errmsg, errlen);
    if (r < 0) {
      free (copy);
      return r;
    }
  }
  *opts = parsed;
  *storage = copy;
  return 0;
}
