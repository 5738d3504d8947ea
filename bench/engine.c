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
 * and prints each as MB/s and writes/s, and the ratios: first write vs
 * repeat write, 8 snapshots vs 1, and bytes copied per byte written.
 * Usage: engine [SIZE_MIB [CHUNK_KIB]]
 */
#include <fcntl.h>
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
  return 0;
}
