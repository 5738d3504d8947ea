/* SPDX-License-Identifier: MIT */
/*
 * Write-back staging (staging.c): origin writes whose chunks wait for a
 * commit epoch are acknowledged once they are in memory and in the staging
 * log, and reach the origin after the epoch commits.  See staging.c.
 */
#ifndef FSSNAP_STAGING_H
#define FSSNAP_STAGING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fssnap_origin;
struct fssnap_stats;

enum staging_kind {
  STAGING_WRITE = 1,
  STAGING_ZERO = 2,
  STAGING_TRIM = 3,
  STAGING_ZERO_ALLOC = 4,       /* write zeros: FSSNAP_ZERO_NO_HOLE */
};

/* Set up staging for o (no thread, no file yet).  -ENOMEM on failure. */
int staging_init (struct fssnap_origin *o);
/* Apply what a staging log left by an earlier run holds (after a crash),
 * then start the applier.  Called by fssnap_origin_open once the store
 * writers and the committer run.
 */
int staging_start (struct fssnap_origin *o);
/* Apply everything staged, make it durable with the log's marker, end the
 * applier and close the log.  Safe on a staging that never started.
 */
void staging_stop (struct fssnap_origin *o);
void staging_free (struct fssnap_origin *o);

/* Whether a change that must wait for commit epoch 'epoch' (0: none), or
 * that would overtake staged changes, must be staged.  No lock.
 */
bool staging_needed (struct fssnap_origin *o, uint64_t epoch);
/* Whether a change of len bytes fits the staging bound at all. */
bool staging_fits (struct fssnap_origin *o, enum staging_kind kind,
                   size_t len);
/* Stage a change; returns its sequence number (> 0) once it is in memory
 * and written to the log, or a negative errno.  Waits for room.  Caller
 * holds io_lock shared.
 */
int64_t staging_add (struct fssnap_origin *o, enum staging_kind kind,
                     const void *buf, size_t len, uint64_t off,
                     uint64_t epoch);
/* Wait until every change staged up to seq (0: everything staged so far)
 * is on the origin (written, not synced): 0, or the errno of a change
 * that cannot be applied now (it stays staged and is retried).  Takes
 * staging->lock.
 */
int staging_wait (struct fssnap_origin *o, uint64_t seq);
/* Make the log's applied marker durable (after an origin fsync), so that
 * no change already on the origin is replayed over later ones.
 */
int staging_sync_marker (struct fssnap_origin *o);
/* Read the origin through fd (the origin's, or its O_DIRECT twin) with
 * staged changes laid over it.
 */
int staging_read (struct fssnap_origin *o, int fd, void *buf, size_t len,
                  uint64_t off);
void staging_stats (struct fssnap_origin *o, struct fssnap_stats *st);

#endif /* FSSNAP_STAGING_H */
