/* SPDX-License-Identifier: MIT */
/*
 * A fault-injecting backing store for the engine tests: it wraps the store
 * the engine made (store_set_wrap) and, before each copy it writes, sleeps
 * store_delay_us, counts the write, and fails it with store_errno once
 * store_budget bytes have been written (all in struct harness).  Every
 * other operation is the wrapped store's, and so is persistence.  Stores
 * reopened at start-up are not wrapped.  Header-only, for harness.h.
 */
#ifndef FSSNAP_TEST_STORE_FAULT_H
#define FSSNAP_TEST_STORE_FAULT_H

#include <stdlib.h>
#include <time.h>

#include "engine/store.h"

struct harness;
static bool store_fault_should_fail (struct harness *h, size_t len,
                                     int *err);

struct store_fault {
  struct store base;
  struct store *inner;
  struct harness *h;
};

static struct store *
store_fault_inner (struct store *st)
{
  return ((struct store_fault *) st)->inner;
}

static int
store_fault_check (struct store *st, uint64_t c, char *why, size_t len)
{
  return store_check (store_fault_inner (st), c, why, len);
}

/* A batch fails as a whole if one of its copies does. */
static int
store_fault_write (struct store *st, const struct store_copy *copies,
                   size_t n)
{
  struct store_fault *f = (struct store_fault *) st;
  int err = 0;
  bool fail = false;
  for (size_t i = 0; i < n; i++)
    fail |= store_fault_should_fail (f->h, copies[i].len, &err);
  return fail ? -err : store_write_copies (f->inner, copies, n);
}

static int
store_fault_read (struct store *st, uint64_t c, void *buf, size_t skip,
                  size_t len)
{
  return store_read_chunk (store_fault_inner (st), c, buf, skip, len);
}

static int
store_fault_sync (struct store *st)
{
  return store_sync (store_fault_inner (st));
}

static uint64_t
store_fault_usage (struct store *st)
{
  return store_usage (store_fault_inner (st));
}

static void
store_fault_drop (struct store *st, bool remove)
{
  store_destroy (store_fault_inner (st), remove);
  free (st);
}

/* Made only by wrapping: create and open are the wrapped kind's. */
#define STORE_FAULT_OPS(persist)                                          \
  { .kind = "fault-injecting", .persistent = persist,                     \
    .check = store_fault_check, .write = store_fault_write,               \
    .read = store_fault_read, .sync = store_fault_sync,                   \
    .usage = store_fault_usage, .drop = store_fault_drop }
static const struct store_ops store_fault_ops[2] = {
  STORE_FAULT_OPS (false), STORE_FAULT_OPS (true),
};

/* store_wrap_fn: wrap inner (opaque is the harness). */
static struct store *
store_fault_wrap (void *opaque, struct store *inner)
{
  struct store_fault *f = calloc (1, sizeof *f);
  if (!f)
    abort ();
  f->base = *inner;
  f->base.ops = &store_fault_ops[store_persistent (inner)];
  f->inner = inner;
  f->h = opaque;
  return &f->base;
}

#endif /* FSSNAP_TEST_STORE_FAULT_H */
