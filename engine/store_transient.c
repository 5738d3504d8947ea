/* SPDX-License-Identifier: MIT */
/*
 * The transient backing store: fssnap's behaviour.  Copies go to the same
 * slots as the persistent store's (store_file.c), which this store wraps,
 * but are never synced and do not survive a restart: the engine never
 * waits for them, and recovery finds the snapshot gone.  Every operation
 * but sync is the wrapped store's; sync only writes the index (an older
 * persistent snapshot may read copies this one owns: after a kill -9 the
 * page cache still holds them).
 *
 * Locks: none of its own.
 */
#include <errno.h>
#include <stdlib.h>

#include "engine/store.h"

struct store_transient {
  struct store base;
  struct store *inner;
};

static struct store *
inner (struct store *st)
{
  return ((struct store_transient *) st)->inner;
}

/* Wrap a file store; frees it on failure. */
static int
store_transient_wrap (struct store *in, struct store **stp)
{
  struct store_transient *t = calloc (1, sizeof *t);
  if (!t) {
    store_destroy (in, true);
    return -ENOMEM;
  }
  t->base = *in;
  t->base.ops = &store_transient_ops;
  t->inner = in;
  *stp = &t->base;
  return 0;
}

static int
store_transient_create (const struct store_params *p, struct store **stp,
                        char *err, size_t errlen)
{
  struct store *in;
  int r = store_file_create (p, &in, err, errlen);
  return r < 0 ? r : store_transient_wrap (in, stp);
}

static int
store_transient_open (const struct store_params *p, struct store **stp,
                      char *err, size_t errlen)
{
  struct store *in;
  int r = store_file_open (p, &in, err, errlen);
  return r < 0 ? r : store_transient_wrap (in, stp);
}

static int
store_transient_check (struct store *st, uint64_t c, char *why, size_t len)
{
  return store_check (inner (st), c, why, len);
}

static int
store_transient_write (struct store *st, const struct store_copy *copies,
                       size_t n)
{
  return store_write_copies (inner (st), copies, n);
}

static int
store_transient_read (struct store *st, uint64_t c, void *buf, size_t skip,
                      size_t len)
{
  return store_read_chunk (inner (st), c, buf, skip, len);
}

static int
store_transient_sync (struct store *st)
{
  return store_file_write_index (inner (st));
}

static uint64_t
store_transient_usage (struct store *st)
{
  return store_usage (inner (st));
}

static void
store_transient_drop (struct store *st, bool remove)
{
  store_destroy (inner (st), remove);
  free (st);
}

const struct store_ops store_transient_ops = {
  .kind = "transient",
  .persistent = false,
  .create = store_transient_create,
  .open = store_transient_open,
  .check = store_transient_check,
  .write = store_transient_write,
  .read = store_transient_read,
  .sync = store_transient_sync,
  .usage = store_transient_usage,
  .drop = store_transient_drop,
};
