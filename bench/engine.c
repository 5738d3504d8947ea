/* SPDX-License-Identifier: MIT */
/*
 * bench/engine: what copy-on-write costs.
 *
 * On a scratch origin (default 256 MiB, 64 KiB chunks, in $TMPDIR) it times
 * 4 KiB writes, one at the start of every chunk:
 *   - with no snapshot                           (baseline)
 *   - the first write after 1 snapshot           (every write copies)
 *   - a second pass over the same chunks         (nothing left to copy)
 *   - the first write after 8 snapshots          (still one copy a chunk)
 * and prints each as writes/s, and the ratios: first write vs repeat
 * write, 8 snapshots vs 1, and bytes copied per byte written.  Those use
 * transient snapshots (no syncs).  Then the cost of persistence: the first
 * write after 1 persistent snapshot vs 1 transient one, with one writer
 * and with 8 writer threads (whose copies share group commits).  The
 * persistent figures depend on the disk under $TMPDIR (fsync latency).
 * Usage: engine [SIZE_MIB [CHUNK_KIB]]
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libfssnap.h"

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die (const char *what, int err)
{
  fprintf (stderr, "bench/engine: %s: %s\n", what, strerror (-err));
  exit (1);
}

/* One 4 KiB write at the start of every chunk; returns seconds. */
static double
pass (struct fssnap_origin *o, char fill)
{
  uint32_t cs = fssnap_origin_chunksize (o);
  uint64_t size = fssnap_origin_size (o);
  char buf[4096];
  memset (buf, fill, sizeof buf);
  double t0 = now ();
  for (uint64_t off = 0; off + sizeof buf <= size; off += cs) {
    int r = fssnap_origin_write (o, buf, sizeof buf, off, 0);
    if (r < 0)
      die ("write", r);
  }
  return now () - t0;
}

/* Only warnings and errors: the engine logs every create and delete. */
static void
quiet_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  if (level <= FSSNAP_LOG_WARN)
    fprintf (stderr, "bench/engine: %s\n", msg);
}

static struct fssnap_origin *
open_origin (const char *path, const char *dir, uint32_t cs)
{
  struct fssnap_origin_opts oo = { .path = path, .state_dir = dir,
                                   .chunksize = cs, .log = quiet_log };
  struct fssnap_origin *o;
  int r = fssnap_origin_open (&oo, &o);
  if (r < 0)
    die ("open", r);
  return o;
}

struct pass_thread {
  struct fssnap_origin *o;
  int id, nthreads;
};

static void *
pass_thread_main (void *arg)
{
  struct pass_thread *t = arg;
  uint32_t cs = fssnap_origin_chunksize (t->o);
  uint64_t size = fssnap_origin_size (t->o);
  char buf[4096];
  memset (buf, 'p', sizeof buf);
  for (uint64_t off = (uint64_t) t->id * cs; off + sizeof buf <= size;
       off += (uint64_t) t->nthreads * cs) {
    int r = fssnap_origin_write (t->o, buf, sizeof buf, off, 0);
    if (r < 0)
      die ("write", r);
  }
  return NULL;
}

/* Like pass(), with the chunks shared out among n threads. */
static double
pass_threads (struct fssnap_origin *o, int n)
{
  pthread_t tid[8];
  struct pass_thread t[8];
  double t0 = now ();
  for (int i = 0; i < n; i++) {
    t[i] = (struct pass_thread) { o, i, n };
    pthread_create (&tid[i], NULL, pass_thread_main, &t[i]);
  }
  for (int i = 0; i < n; i++)
    pthread_join (tid[i], NULL);
  return now () - t0;
}

/* Fresh origin with k snapshots; time the first and the repeat pass. */
static void
measure (const char *path, const char *dir, uint32_t cs, int k,
         double *first, double *repeat, double *copied_per_written)
{
  struct fssnap_origin *o = open_origin (path, dir, cs);
  struct fssnap_create_opts opts = { .transient = true };
  for (int i = 0; i < k; i++) {
    unsigned num;
    char err[256];
    int r = fssnap_snapshot_create (o, &opts, &num, err, sizeof err);
    if (r < 0) {
      fprintf (stderr, "bench/engine: create: %s\n", err);
      exit (1);
    }
  }
  *first = pass (o, 'a');
  *repeat = pass (o, 'b');
  struct fssnap_stats st;
  fssnap_origin_stats (o, &st);
  uint64_t written = 2 * (fssnap_origin_size (o) / cs) * 4096;
  *copied_per_written = (double) st.bytes_copied / written;
  for (int i = 0; i < k; i++)
    fssnap_snapshot_delete (o, i);
  fssnap_origin_close (o);
}

/* First-write pass with n threads after one snapshot, persistent or not. */
static double
measure_persistence (const char *path, const char *dir, uint32_t cs,
                     bool transient, int nthreads)
{
  struct fssnap_origin *o = open_origin (path, dir, cs);
  struct fssnap_create_opts opts = { .transient = transient };
  unsigned num;
  char err[256];
  if (fssnap_snapshot_create (o, &opts, &num, err, sizeof err) < 0) {
    fprintf (stderr, "bench/engine: create: %s\n", err);
    exit (1);
  }
  double t = pass_threads (o, nthreads);
  fssnap_snapshot_delete (o, num);
  fssnap_origin_close (o);
  return t;
}

int
main (int argc, char **argv)
{
  uint64_t mib = argc > 1 ? strtoull (argv[1], NULL, 10) : 256;
  uint32_t cs = (argc > 2 ? strtoul (argv[2], NULL, 10) : 64) * 1024;
  const char *tmp = getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp";
  char dir[256], path[300];
  snprintf (dir, sizeof dir, "%s/fssnap-bench.XXXXXX", tmp);
  if (!mkdtemp (dir)) {
    perror ("bench/engine: mkdtemp");
    return 1;
  }
  snprintf (path, sizeof path, "%s/origin.img", dir);
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate (fd, mib << 20) < 0) {
    perror ("bench/engine: origin");
    return 1;
  }
  close (fd);

  uint64_t writes = (mib << 20) / cs;
  struct fssnap_origin *o = open_origin (path, dir, cs);
  pass (o, 'w');                                   /* allocate the image */
  double base = pass (o, 'x');
  fssnap_origin_close (o);
  double f1, r1, c1, f8, r8, c8;
  measure (path, dir, cs, 1, &f1, &r1, &c1);
  measure (path, dir, cs, 8, &f8, &r8, &c8);
  double tr1 = measure_persistence (path, dir, cs, true, 1);
  double pe1 = measure_persistence (path, dir, cs, false, 1);
  double tr8 = measure_persistence (path, dir, cs, true, 8);
  double pe8 = measure_persistence (path, dir, cs, false, 8);
  unlink (path);
  rmdir (dir);

  printf ("bench/engine: %llu MiB origin, %u KiB chunks, %llu writes of 4 KiB "
          "per pass (one per chunk)\n", (unsigned long long) mib, cs / 1024,
          (unsigned long long) writes);
  printf ("%-34s %10s %12s\n", "pass", "writes/s", "us/write");
  struct { const char *name; double t; } rows[] = {
    { "no snapshot", base }, { "1 snapshot, first write", f1 },
    { "1 snapshot, repeat write", r1 }, { "8 snapshots, first write", f8 },
    { "8 snapshots, repeat write", r8 },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    printf ("%-34s %10.0f %12.2f\n", rows[i].name, writes / rows[i].t,
            rows[i].t / writes * 1e6);
  printf ("ratio first/repeat write, 1 snapshot:   %.2f\n", f1 / r1);
  printf ("ratio first/repeat write, 8 snapshots:  %.2f\n", f8 / r8);
  printf ("ratio first write, 8 vs 1 snapshots:    %.2f\n", f8 / f1);
  printf ("bytes copied per byte written: 1 snapshot %.2f, 8 snapshots %.2f "
          "(one copy per chunk either way)\n", c1, c8);
  printf ("%-34s %10s %12s\n", "first write after 1 snapshot", "writes/s",
          "us/write");
  struct { const char *name; double t; } prow[] = {
    { "transient, 1 writer", tr1 }, { "persistent, 1 writer", pe1 },
    { "transient, 8 writers", tr8 }, { "persistent, 8 writers", pe8 },
  };
  for (size_t i = 0; i < sizeof prow / sizeof prow[0]; i++)
    printf ("%-34s %10.0f %12.2f\n", prow[i].name, writes / prow[i].t,
            prow[i].t / writes * 1e6);
  printf ("ratio persistent/transient write throughput, 1 writer:  %.3f\n",
          tr1 / pe1);
  printf ("ratio persistent/transient write throughput, 8 writers: %.3f\n",
          tr8 / pe8);
  return 0;
}
