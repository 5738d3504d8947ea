/* SPDX-License-Identifier: MIT */
/*
 * Model-based randomized test of the engine.
 *
 * The model keeps a reference copy of the origin and, per snapshot, the
 * image it must read (the origin at creation, with non-candidate chunks
 * zeroed) plus its candidate and preserved bits, from which it predicts the
 * exact number of copies the engine must make (one per chunk write that
 * finds a snapshot still needing the chunk, whatever the number of such
 * snapshots).  Random operations: unaligned writes, zeroes and trims that
 * span chunks; creates with random candidate maps; deletes of random
 * snapshots, some while open; reads of random ranges of random snapshots
 * and of the origin.  Every read is compared with the model.
 *
 * Concurrent phases run several writer threads (each owns every T-th KiB,
 * so threads share chunks and race to copy them) and a reader thread that
 * checks open snapshots while the copies happen.
 *
 * Seeds: a fixed list, one test case each; FSSNAP_SEED=N runs only seed N
 * (the seed is printed on failure), FSSNAP_MODEL_OPS sets the operations
 * per seed.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/engine/harness.h"

#define MAX_LIVE 12
#define THREADS 3
#define SLOT 1024                       /* writers interleave per KiB */

struct msnap {
  bool live;
  unsigned num;
  char *image;
  bool *cand, *pres;
  struct fssnap_snapshot *handle;
};

struct model {
  uint64_t seed, rng;
  struct fssnap_origin *o;
  uint64_t size;
  uint32_t cs;
  uint64_t nchunks;
  char *origin;
  bool trim_zeroes;                     /* the origin's fs punches holes */
  struct msnap snaps[MAX_LIVE];
  uint64_t expected_copies;
};

static uint64_t
rnd (struct model *m, uint64_t n)
{
  return n ? rng_next (&m->rng) % n : 0;
}

/* A chunk range was written: predict the copies, as the engine must. */
static void
model_touch (struct model *m, uint64_t off, uint64_t len)
{
  if (len == 0)
    return;
  for (uint64_t c = off / m->cs; c <= (off + len - 1) / m->cs; c++) {
    bool needed = false;
    for (int i = 0; i < MAX_LIVE; i++) {
      struct msnap *s = &m->snaps[i];
      if (s->live && s->cand[c] && !s->pres[c]) {
        s->pres[c] = true;
        needed = true;
      }
    }
    m->expected_copies += needed;
  }
}

static void
random_range (struct model *m, uint64_t *off, uint64_t *len)
{
  *off = rnd (m, m->size);
  *len = 1 + rnd (m, 3 * m->cs);
  if (*len > m->size - *off)
    *len = m->size - *off;
}

static void
op_write (struct model *m)
{
  uint64_t off, len;
  random_range (m, &off, &len);
  char *buf = malloc (len);
  for (uint64_t i = 0; i < len; i++)
    buf[i] = (char) rng_next (&m->rng);
  assert_int_equal (fssnap_origin_write (m->o, buf, len, off, 0), 0);
  memcpy (m->origin + off, buf, len);
  model_touch (m, off, len);
  free (buf);
}

static void
op_zero_or_trim (struct model *m, bool trim)
{
  uint64_t off, len;
  random_range (m, &off, &len);
  if (trim)
    assert_int_equal (fssnap_origin_trim (m->o, len, off, 0), 0);
  else
    assert_int_equal (fssnap_origin_zero (m->o, len, off, 0), 0);
  if (!trim || m->trim_zeroes)
    memset (m->origin + off, 0, len);
  model_touch (m, off, len);
}

struct cand_ctx {
  struct model *m;
  struct msnap *s;
};

/* Candidate callback: all, none, or random byte ranges. */
static int
random_candidates (void *opaque, struct fssnap_candidates *c)
{
  struct cand_ctx *ctx = opaque;
  struct model *m = ctx->m;
  switch (rnd (m, 3)) {
  case 0:
    break;                              /* no candidate at all */
  default:
    for (int k = rnd (m, 20); k > 0; k--) {
      uint64_t off = rnd (m, m->size + m->cs), len = rnd (m, 4 * m->cs);
      fssnap_candidates_mark (c, off, len);
      if (len == 0 || off >= m->size)
        continue;
      uint64_t end = off + len < m->size ? off + len : m->size;
      for (uint64_t ch = off / m->cs; ch <= (end - 1) / m->cs; ch++)
        ctx->s->cand[ch] = true;
    }
  }
  return 0;
}

static int
all_candidates_model (void *opaque, struct fssnap_candidates *c)
{
  struct cand_ctx *ctx = opaque;
  fssnap_candidates_mark_all (c);
  for (uint64_t ch = 0; ch < ctx->m->nchunks; ch++)
    ctx->s->cand[ch] = true;
  return 0;
}

static void
op_create (struct model *m)
{
  struct msnap *s = NULL;
  for (int i = 0; i < MAX_LIVE && !s; i++)
    if (!m->snaps[i].live)
      s = &m->snaps[i];
  if (!s)
    return;
  s->cand = calloc (m->nchunks, 1);
  s->pres = calloc (m->nchunks, 1);
  struct cand_ctx ctx = { m, s };
  bool full = rnd (m, 4) == 0;
  struct fssnap_create_opts opts = {
    .candidates = full ? all_candidates_model : random_candidates,
    .candidates_opaque = &ctx,
  };
  char err[256];
  assert_int_equal (fssnap_snapshot_create (m->o, &opts, &s->num, err,
                                            sizeof err), 0);
  s->image = malloc (m->size);
  memcpy (s->image, m->origin, m->size);
  for (uint64_t c = 0; c < m->nchunks; c++)
    if (!s->cand[c]) {
      uint64_t n = m->size - c * m->cs < m->cs ? m->size - c * m->cs : m->cs;
      memset (s->image + c * m->cs, 0, n);
    }
  assert_int_equal (fssnap_snapshot_open (m->o, s->num, &s->handle), 0);
  s->live = true;
}

static struct msnap *
random_live (struct model *m)
{
  int live[MAX_LIVE], n = 0;
  for (int i = 0; i < MAX_LIVE; i++)
    if (m->snaps[i].live)
      live[n++] = i;
  return n ? &m->snaps[live[rnd (m, n)]] : NULL;
}

static void
msnap_forget (struct msnap *s)
{
  free (s->image);
  free (s->cand);
  free (s->pres);
  memset (s, 0, sizeof *s);
}

static void
op_delete (struct model *m)
{
  struct msnap *s = random_live (m);
  if (!s)
    return;
  char b;
  if (rnd (m, 3) == 0) {                /* delete while open */
    assert_int_equal (fssnap_snapshot_delete (m->o, s->num), 0);
    assert_int_equal (fssnap_snapshot_read (s->handle, &b, 1, 0), -EIO);
    fssnap_snapshot_close (s->handle);
  }
  else {
    fssnap_snapshot_close (s->handle);
    assert_int_equal (fssnap_snapshot_delete (m->o, s->num), 0);
  }
  struct fssnap_snapshot_info info;
  assert_int_equal (fssnap_snapshot_info (m->o, s->num, &info), -ENOENT);
  msnap_forget (s);
}

static void
check_snapshot_range (struct model *m, struct msnap *s, uint64_t off,
                      uint64_t len)
{
  char *buf = malloc (len ? len : 1);
  assert_int_equal (fssnap_snapshot_read (s->handle, buf, len, off), 0);
  if (memcmp (buf, s->image + off, len) != 0) {
    uint64_t i = 0;
    while (buf[i] == s->image[off + i])
      i++;
    fail_msg ("seed %llu: snapshot %u differs at byte %llu (chunk %llu)",
              (unsigned long long) m->seed, s->num,
              (unsigned long long) (off + i),
              (unsigned long long) ((off + i) / m->cs));
  }
  free (buf);
}

static void
op_read_snapshot (struct model *m)
{
  struct msnap *s = random_live (m);
  if (!s)
    return;
  uint64_t off, len;
  random_range (m, &off, &len);
  check_snapshot_range (m, s, off, len);
}

static void
op_read_origin (struct model *m)
{
  uint64_t off, len;
  random_range (m, &off, &len);
  char *buf = malloc (len);
  assert_int_equal (fssnap_origin_read (m->o, buf, len, off), 0);
  if (memcmp (buf, m->origin + off, len) != 0)
    fail_msg ("seed %llu: origin differs in [%llu, +%llu)",
              (unsigned long long) m->seed, (unsigned long long) off,
              (unsigned long long) len);
  free (buf);
}

/* Changed-block tracking covers every chunk that differs, for every pair
 * of live snapshots and between each and the volume.
 */
static void
check_changes (struct model *m)
{
  for (int i = 0; i < MAX_LIVE; i++) {
    struct msnap *a = &m->snaps[i];
    if (!a->live)
      continue;
    for (int j = -1; j < MAX_LIVE; j++) {
      struct msnap *b = j >= 0 ? &m->snaps[j] : NULL;
      if (b && !b->live)
        continue;
      int r;
      int64_t missed = harness_changes_missed (
        m->o, a->num, b ? (int) b->num : FSSNAP_VOLUME, a->image,
        b ? b->image : m->origin, &r);
      if (r != 0 || missed >= 0)
        fail_msg ("seed %llu: changes between snapshot %u and %s %d: "
                  "error %d, chunk %lld missed", (unsigned long long) m->seed,
                  a->num, b ? "snapshot" : "the volume", b ? (int) b->num : -1,
                  r, (long long) missed);
    }
  }
}

static void
check_everything (struct model *m)
{
  check_changes (m);
  for (int i = 0; i < MAX_LIVE; i++)
    if (m->snaps[i].live)
      check_snapshot_range (m, &m->snaps[i], 0, m->size);
  char *img = malloc (m->size);
  assert_int_equal (fssnap_origin_read (m->o, img, m->size, 0), 0);
  assert_memory_equal (img, m->origin, m->size);
  free (img);
  struct fssnap_stats st;
  fssnap_origin_stats (m->o, &st);
  if (st.chunks_copied != m->expected_copies)
    fail_msg ("seed %llu: engine made %llu copies, the model %llu",
              (unsigned long long) m->seed,
              (unsigned long long) st.chunks_copied,
              (unsigned long long) m->expected_copies);
}

/* ---- Concurrent phase ------------------------------------------------- */

struct worker {
  struct model *m;
  int id;
  uint64_t rng;
  unsigned ops;
  bool *touched;                        /* chunks this writer wrote */
  const char *failure;
};

static void *
phase_writer (void *arg)
{
  struct worker *w = arg;
  struct model *m = w->m;
  uint64_t nslots = m->size / SLOT;
  char buf[SLOT];
  for (unsigned k = 0; k < w->ops; k++) {
    uint64_t slot = rng_next (&w->rng) % (nslots / THREADS) * THREADS + w->id;
    if (slot >= nslots)
      continue;
    uint64_t in = rng_next (&w->rng) % SLOT;
    uint64_t len = 1 + rng_next (&w->rng) % (SLOT - in);
    uint64_t off = slot * SLOT + in;
    int r;
    if (rng_next (&w->rng) % 8 == 0) {
      r = fssnap_origin_zero (m->o, len, off, 0);
      memset (buf, 0, len);
    }
    else {
      for (uint64_t i = 0; i < len; i++)
        buf[i] = (char) rng_next (&w->rng);
      r = fssnap_origin_write (m->o, buf, len, off, 0);
    }
    if (r != 0) {
      w->failure = "origin write failed";
      return NULL;
    }
    memcpy (m->origin + off, buf, len);   /* bytes only this thread owns */
    for (uint64_t c = off / m->cs; c <= (off + len - 1) / m->cs; c++)
      w->touched[c] = true;
  }
  return NULL;
}

static void *
phase_reader (void *arg)
{
  struct worker *w = arg;
  struct model *m = w->m;
  char *buf = malloc (3 * m->cs);
  for (unsigned k = 0; k < w->ops && !w->failure; k++) {
    struct msnap *s = &m->snaps[rng_next (&w->rng) % MAX_LIVE];
    if (!s->live)
      continue;
    uint64_t off = rng_next (&w->rng) % m->size;
    uint64_t len = 1 + rng_next (&w->rng) % (3 * m->cs);
    if (len > m->size - off)
      len = m->size - off;
    if (fssnap_snapshot_read (s->handle, buf, len, off) != 0
        || memcmp (buf, s->image + off, len) != 0)
      w->failure = "a snapshot read differed during concurrent writes";
  }
  free (buf);
  return NULL;
}

static void
op_concurrent_phase (struct model *m, unsigned ops)
{
  pthread_t t[THREADS + 1];
  struct worker w[THREADS + 1];
  for (int i = 0; i <= THREADS; i++) {
    w[i] = (struct worker) { .m = m, .id = i, .rng = rng_next (&m->rng) | 1,
                             .ops = ops,
                             .touched = calloc (m->nchunks, 1) };
    pthread_create (&t[i], NULL, i < THREADS ? phase_writer : phase_reader,
                    &w[i]);
  }
  for (int i = 0; i <= THREADS; i++)
    pthread_join (t[i], NULL);
  for (uint64_t c = 0; c < m->nchunks; c++) {
    bool touched = false;
    for (int i = 0; i < THREADS; i++)
      touched |= w[i].touched[c];
    if (touched)
      model_touch (m, c * m->cs, 1);
  }
  for (int i = 0; i <= THREADS; i++) {
    if (w[i].failure)
      fail_msg ("seed %llu: %s", (unsigned long long) m->seed, w[i].failure);
    free (w[i].touched);
  }
}

/* ---- Driver ----------------------------------------------------------- */

static unsigned
model_ops (void)
{
  const char *s = getenv ("FSSNAP_MODEL_OPS");
  return s ? (unsigned) strtoul (s, NULL, 10) : 3000;
}

static bool
punch_zeroes (const char *dir)
{
  char path[128];
  snprintf (path, sizeof path, "%s/punch-probe", dir);
  int fd = open (path, O_RDWR | O_CREAT, 0600);
  char x[8192];
  memset (x, 'x', sizeof x);
  bool ok = fd >= 0 && pwrite (fd, x, sizeof x, 0) == (ssize_t) sizeof x
    && fssnap_io_posix ()->discard (NULL, fd, 100, 5000) == 0
    && pread (fd, x, sizeof x, 0) == (ssize_t) sizeof x && x[100] == 0
    && x[5099] == 0 && x[99] == 'x' && x[5100] == 'x';
  if (fd >= 0)
    close (fd);
  unlink (path);
  return ok;
}

static void
run_seed (uint64_t seed)
{
  static const uint32_t sizes[] = { 512, 4096, 65536, 1024 };
  struct model m = { .seed = seed, .rng = seed * 0x9E3779B97F4A7C15ull | 1 };
  m.cs = sizes[seed % 4];
  m.size = 64 * 1024 + rnd (&m, 16) * m.cs * 3 + 700;  /* a short last chunk */
  if (m.size < 4 * m.cs)
    m.size = 4 * m.cs + 700;
  m.nchunks = (m.size + m.cs - 1) / m.cs;
  struct harness *h = harness_new (m.size);
  m.trim_zeroes = punch_zeroes (h->dir);
  m.o = harness_origin (h, m.cs, 16 * m.cs);   /* a small throttle too */
  m.origin = harness_image (h);

  unsigned ops = model_ops ();
  for (unsigned k = 0; k < ops; k++) {
    unsigned p = rnd (&m, 100);
    if (p < 30) op_write (&m);
    else if (p < 34) op_zero_or_trim (&m, false);
    else if (p < 38) op_zero_or_trim (&m, true);
    else if (p < 45) op_create (&m);
    else if (p < 50) op_delete (&m);
    else if (p < 85) op_read_snapshot (&m);
    else if (p < 95) op_read_origin (&m);
    else if (p < 97) op_concurrent_phase (&m, 200);
    else check_everything (&m);
  }
  check_everything (&m);
  for (int i = 0; i < MAX_LIVE; i++)
    if (m.snaps[i].live) {
      fssnap_snapshot_close (m.snaps[i].handle);
      msnap_forget (&m.snaps[i]);
    }
  fssnap_origin_close (m.o);
  free (m.origin);
  harness_free (h);
}

static void
test_model_seed (void **state)
{
  uint64_t seed = *(uint64_t *) *state;
  fprintf (stderr, "model: seed %llu (replay with FSSNAP_SEED=%llu)\n",
           (unsigned long long) seed, (unsigned long long) seed);
  run_seed (seed);
}

static uint64_t seeds[] = { 1, 2, 3, 4, 5, 6, 7, 8, 1009, 65537 };

int
main (void)
{
  const char *replay = getenv ("FSSNAP_SEED");
  if (replay) {
    seeds[0] = strtoull (replay, NULL, 10);
    const struct CMUnitTest one[] = {
      cmocka_unit_test_prestate (test_model_seed, &seeds[0]),
    };
    return cmocka_run_group_tests (one, NULL, NULL);
  }
  struct CMUnitTest tests[sizeof seeds / sizeof seeds[0]];
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
    tests[i] = (struct CMUnitTest) cmocka_unit_test_prestate (test_model_seed,
                                                              &seeds[i]);
  return _cmocka_run_group_tests ("model", tests, sizeof tests / sizeof tests[0],
                                  NULL, NULL);
}
