/* SPDX-License-Identifier: MIT */
/*
 * One ublk queue: a thread of its own with its own io_uring (128-byte SQEs
 * for URING_CMD), the queue's descriptor array mapped from /dev/ublkcN and
 * one buffer per tag.  The thread hands every tag to the kernel with
 * FETCH_REQ; each completion means the request for that tag is in
 * iods[tag]; the thread runs it against the engine and answers with
 * COMMIT_AND_FETCH_REQ, which also re-arms the tag.  Answers of one batch
 * of completions go out together in one io_uring_enter.
 *
 * The queue thread hands each request to a few workers (so that several
 * engine calls are in flight) and answers for them when they are done:
 * the kernel takes io commands of a queue from one task only.  A hand-off
 * costs two thread wake-ups, more than a write into the page cache; so
 * reads and writes that have lately been quick (they did not sleep, see
 * ublk_queue_pick) run in the queue thread, and only the slow ones (a
 * cold read, a write that must copy a chunk for a snapshot, flushes) go
 * to the workers.
 *
 * Reads of the volume larger than UBLK_QUICK_MAX bypass fssnapd's page
 * cache (fssnap_origin_read_direct): the kernel caches above the device
 * already, and a second copy through our cache cut 1 MiB sequential
 * reads to a third or a quarter (ublk/README.md).  Smaller reads stay
 * cached, and quick.
 *
 * The thread leaves when every tag has come back aborted (STOP_DEV) or
 * when ublk_queue_leave writes to its eventfd (polled in the same ring),
 * after answering what the workers still had;
 * closing the ring then hands whatever the kernel still holds back to the
 * driver, which with user recovery keeps it for the next server.
 *
 * Everything here belongs to the queue thread; the device's fields are
 * read-only while it runs.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ublk/internal.h"

#define UBLK_STOP_TAG UINT64_MAX
#define UBLK_DONE_TAG (UINT64_MAX - 1)
#define UBLK_WORKERS  16        /* engine calls in flight per queue (as NBD) */
#define UBLK_QUICK_RUN 8        /* quick ones in a row before the queue
                                   thread runs that kind itself */
#define UBLK_QUICK_MAX (64u << 10)      /* larger: always a worker's */

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static size_t
ublk_round_page (size_t n)
{
  size_t page = (size_t) sysconf (_SC_PAGESIZE);

  return (n + page - 1) / page * page;
}

/* ---- The thread's own mount namespace ---------------------------------
 *
 * A queue thread is what serves the I/O of our block devices, so it must
 * never be the one to drop the last reference to a file system mounted on
 * one of them: that final unmount writes to the device and waits for the
 * very thread that is going away (ublksrv's README: the server must not
 * share a mount namespace with a user of its device).  A thread started
 * after a crash would copy the user's mounts of our devices into its
 * namespace with unshare; so it makes its namespace private (later mounts
 * do not propagate in) and lazily detaches every mount of a ublk device
 * it finds there.  Its namespace then holds no file system on our
 * devices, whatever order the user unmounts and fssnapd stops in.  Only the
 * queue threads move: the FUSE device files and everything else stay in
 * the namespace fssnapd was started in, where users see them.
 */

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void
ublk_unescape (char *s)
{
  char *out = s;

  for (; *s; s++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] && s[3]) {
      *out++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 3;
    }
    else
      *out++ = *s;
  }
  *out = '\0';
}

static bool
ublk_is_ublk_bdev (const char *majmin)
{
  char link[64], target[PATH_MAX];
  ssize_t n;

  snprintf (link, sizeof link, "/sys/dev/block/%s", majmin);
  n = readlink (link, target, sizeof target - 1);
  if (n < 0)
    return false;
  target[n] = '\0';
  return strstr (target, "/ublkb") != NULL;
}

static void
ublk_queue_own_mounts (struct ublk_queue *q)
{
  char line[2 * PATH_MAX], majmin[32], target[PATH_MAX];
  FILE *f;

  if (unshare (CLONE_NEWNS) < 0
      || mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
    ublk_log (q->dev->ctrl, FSSNAP_LOG_WARN,
              "ublk%u: queue %u: no mount namespace of its own: %s",
              q->dev->info.dev_id, q->id, strerror (errno));
    return;
  }
  f = fopen ("/proc/thread-self/mountinfo", "re");
  if (!f)
    return;
  while (fgets (line, sizeof line, f)) {
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT ... */
    if (sscanf (line, "%*s %*s %31s %*s %4095s", majmin, target) != 2
        || !ublk_is_ublk_bdev (majmin))
      continue;
    ublk_unescape (target);
    if (umount2 (target, MNT_DETACH) < 0)
      ublk_log (q->dev->ctrl, FSSNAP_LOG_WARN, "ublk%u: queue %u: cannot "
                "detach its copy of %s: %s", q->dev->info.dev_id, q->id,
                target, strerror (errno));
  }
  fclose (f);
}

/* ---- Requests ---------------------------------------------------------- */

/* One request to a writable clone: each to the clone's call (DISCARD
 * frees the overlay's space, WRITE_ZEROES may unless NOUNMAP).
 */
static int
ublk_queue_run_clone (struct fssnap_clone *clone, unsigned op, void *buf,
                      size_t len, uint64_t off, unsigned flags)
{
  int r;

  switch (op) {
  case UBLK_IO_OP_READ:
    r = fssnap_clone_read (clone, buf, len, off);
    return r < 0 ? r : (int) len;
  case UBLK_IO_OP_WRITE:
    r = fssnap_clone_write (clone, buf, len, off, flags);
    return r < 0 ? r : (int) len;
  case UBLK_IO_OP_FLUSH:
    return fssnap_clone_flush (clone);
  case UBLK_IO_OP_DISCARD:
    return fssnap_clone_trim (clone, len, off, flags);
  case UBLK_IO_OP_WRITE_ZEROES:
    return fssnap_clone_zero (clone, len, off, flags);
  default:
    return -EOPNOTSUPP;
  }
}

/* Run one request; the result to commit (bytes, 0 or a negative errno). */
static int
ublk_queue_run (struct ublk_dev *dev, const struct ublksrv_io_desc *iod,
                void *buf)
{
  uint64_t off = iod->start_sector << 9;
  size_t len = (size_t) iod->nr_sectors << 9;
  unsigned op = iod->op_flags & 0xff;
  bool fua = iod->op_flags & UBLK_IO_F_FUA;
  unsigned flags = fua ? FSSNAP_FUA : 0;
  int r;

  if (op == UBLK_IO_OP_WRITE_ZEROES && (iod->op_flags & UBLK_IO_F_NOUNMAP))
    flags |= FSSNAP_ZERO_NO_HOLE;
  if (dev->clone)
    return ublk_queue_run_clone (dev->clone, op, buf, len, off, flags);
  if (op == UBLK_IO_OP_READ) {
    if (dev->snap)
      r = fssnap_snapshot_read (dev->snap, buf, len, off);
    else if (len > UBLK_QUICK_MAX)    /* the page cache above us has it */
      r = fssnap_origin_read_direct (dev->origin, buf, len, off);
    else
      r = fssnap_origin_read (dev->origin, buf, len, off);
    return r < 0 ? r : (int) len;
  }
  if (dev->snap)                /* read-only: the kernel should not ask */
    return op == UBLK_IO_OP_FLUSH ? 0 : -EROFS;
  switch (op) {
  case UBLK_IO_OP_WRITE:
    r = fssnap_origin_write (dev->origin, buf, len, off, flags);
    return r < 0 ? r : (int) len;
  case UBLK_IO_OP_FLUSH:
    return fssnap_origin_flush (dev->origin);
  case UBLK_IO_OP_DISCARD:
    r = fssnap_origin_trim (dev->origin, len, off, flags);
    return r == -EOPNOTSUPP ? 0 : r;    /* a hint: nothing was promised */
  case UBLK_IO_OP_WRITE_ZEROES:
    return fssnap_origin_zero (dev->origin, len, off, flags);
  default:
    return -EOPNOTSUPP;
  }
}

/* Queue FETCH_REQ (first time) or COMMIT_AND_FETCH_REQ with result. */
static int
ublk_queue_arm (struct ublk_queue *q, unsigned tag, bool commit, int result)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&q->ring);
  struct ublksrv_io_cmd cmd = {
    .q_id = (uint16_t) q->id, .tag = (uint16_t) tag, .result = result,
    .addr = (uint64_t) (uintptr_t) (q->bufs
                                    + (size_t) tag
                                      * q->dev->info.max_io_buf_bytes),
  };
  unsigned op;

  if (!sqe)
    return -EBUSY;
  if (q->dev->ctrl->ioctl_encode)
    op = commit ? UBLK_U_IO_COMMIT_AND_FETCH_REQ : UBLK_U_IO_FETCH_REQ;
  else
    op = commit ? UBLK_IO_COMMIT_AND_FETCH_REQ : UBLK_IO_FETCH_REQ;
  memset (sqe, 0, 2 * sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = q->dev->cdev_fd;
  sqe->cmd_op = op;
  sqe->user_data = tag;
  memcpy (sqe->cmd, &cmd, sizeof cmd);
  q->owned++;
  return 0;
}

/* ---- Quick requests in the queue thread ------------------------------
 *
 * A request is quick if running it did not make its thread sleep (no
 * voluntary context switch: the data was in the page cache, the write
 * needed no copy-on-write commit), whatever the CPU's speed.  Per kind
 * (read, write) the queue counts how many in a row were quick, wherever
 * they ran: after UBLK_QUICK_RUN of them the kind runs in the queue
 * thread, and one that sleeps sends it back to the workers.  The run
 * keeps the queue thread from taking a kind that is only sometimes quick:
 * while the queue thread sleeps in one, it answers and dispatches
 * nothing.  So a request's kind is judged when it arrives, before it
 * runs: a write to the volume that the engine says may have to copy a
 * chunk or wait for a commit (fssnap_origin_write_may_wait: a fresh
 * snapshot's first write to each chunk) is no plain write but always a
 * worker's, and does not count against the plain ones.  Requests larger
 * than UBLK_QUICK_MAX go to the workers too: the hand-off saves little
 * beside copying that much data, and several workers copy on several
 * CPUs where the queue thread would copy them one after another (and
 * dispatch nothing meanwhile).  Flushes, FUA writes, discards and zeroing
 * always go to the workers.
 */

static long
ublk_sleeps (void)
{
  struct rusage ru;

  return getrusage (RUSAGE_THREAD, &ru) == 0 ? ru.ru_nvcsw : -1;
}

/* The kind of the request in iod: 0 reads, 1 plain writes, UBLK_KINDS
 * always a worker's (not counted).
 */
static unsigned
ublk_queue_kind (const struct ublk_dev *dev,
                 const struct ublksrv_io_desc *iod)
{
  if (((size_t) iod->nr_sectors << 9) > UBLK_QUICK_MAX)
    return UBLK_KINDS;
  switch (iod->op_flags & 0xff) {
  case UBLK_IO_OP_READ:
    return 0;
  case UBLK_IO_OP_WRITE:
    if (iod->op_flags & UBLK_IO_F_FUA)
      return UBLK_KINDS;
    if (!dev->snap && !dev->clone
        && fssnap_origin_write_may_wait (dev->origin,
                                         iod->start_sector << 9,
                                         (size_t) iod->nr_sectors << 9))
      return UBLK_KINDS;
    return 1;
  default:
    return UBLK_KINDS;
  }
}

/* Whether the queue thread runs this request (of kind) itself. */
static bool
ublk_queue_pick (struct ublk_queue *q, unsigned kind)
{
  return kind < UBLK_KINDS
         && atomic_load_explicit (&q->quick_run[kind], memory_order_relaxed)
            >= UBLK_QUICK_RUN;
}

/* Run tag's request in this thread (the queue's or a worker) and count
 * whether it slept, against its kind; its result.
 */
static int
ublk_queue_run_timed (struct ublk_queue *q, unsigned tag, unsigned kind)
{
  struct ublk_dev *dev = q->dev;
  long before = ublk_sleeps ();
  int r;

  r = ublk_queue_run (dev, &q->iods[tag],
                      q->bufs + (size_t) tag * dev->info.max_io_buf_bytes);
  if (kind < UBLK_KINDS) {
    if (before >= 0 && ublk_sleeps () == before) {
      if (atomic_load_explicit (&q->quick_run[kind], memory_order_relaxed)
          < UBLK_QUICK_RUN)
        atomic_fetch_add_explicit (&q->quick_run[kind], 1,
                                   memory_order_relaxed);
    }
    else
      atomic_store_explicit (&q->quick_run[kind], 0, memory_order_relaxed);
  }
  if (r < 0 && r != -EOPNOTSUPP)
    ublk_log (dev->ctrl, FSSNAP_LOG_DEBUG, "ublk%u: op %u at sector %llu: "
              "%s", dev->info.dev_id, q->iods[tag].op_flags & 0xff,
              (unsigned long long) q->iods[tag].start_sector, strerror (-r));
  return r;
}

/* ---- Workers ----------------------------------------------------------- */

static void *
ublk_worker_thread (void *arg)
{
  struct ublk_queue *q = arg;
  struct ublk_dev *dev = q->dev;
  uint64_t one = 1;
  unsigned tag;
  bool first;
  int r;

  prctl (PR_SET_IO_FLUSHER, 1, 0, 0, 0);        /* as the queue thread */
  pthread_mutex_lock (&q->lock);
  for (;;) {
    while (q->ntodo == 0 && !q->quit)
      pthread_cond_wait (&q->work, &q->lock);
    if (q->ntodo == 0)
      break;
    tag = q->todo[q->todo_head];
    q->todo_head = (q->todo_head + 1) % dev->info.queue_depth;
    q->ntodo--;
    pthread_mutex_unlock (&q->lock);
    r = ublk_queue_run_timed (q, tag, q->kinds[tag]);
    pthread_mutex_lock (&q->lock);
    q->results[tag] = r;
    q->done[q->ndone++] = tag;
    first = q->ndone == 1;
    pthread_mutex_unlock (&q->lock);
    /* Only the first of a batch pokes: the queue thread takes them all. */
    if (first && write (q->done_fd, &one, sizeof one) < 0)
      ublk_log (dev->ctrl, FSSNAP_LOG_ERR, "ublk%u: queue %u: eventfd: %s",
                dev->info.dev_id, q->id, strerror (errno));
    pthread_mutex_lock (&q->lock);
  }
  pthread_mutex_unlock (&q->lock);
  return NULL;
}

/* Read done_fd again (its next completion is the next batch). */
static void
ublk_queue_watch_done (struct ublk_queue *q)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&q->ring);

  io_uring_prep_read (sqe, q->done_fd, &q->done_count, sizeof q->done_count,
                      0);
  io_uring_sqe_set_data64 (sqe, UBLK_DONE_TAG);
}

/* Answer every request the workers have finished.  Takes queue.lock. */
static void
ublk_queue_answer (struct ublk_queue *q)
{
  unsigned i, n, *tags = q->done + q->dev->info.queue_depth;

  pthread_mutex_lock (&q->lock);
  n = q->ndone;
  memcpy (tags, q->done, n * sizeof *tags);
  q->ndone = 0;
  pthread_mutex_unlock (&q->lock);
  for (i = 0; i < n; i++) {
    ublk_queue_arm (q, tags[i], true, q->results[tags[i]]);
    q->busy--;
  }
  ublk_queue_watch_done (q);
}

static int
ublk_queue_start_workers (struct ublk_queue *q)
{
  unsigned depth = q->dev->info.queue_depth;
  int r;

  q->todo = calloc (depth, sizeof *q->todo);
  q->done = calloc (2 * depth, sizeof *q->done);  /* list + a copy */
  q->results = calloc (depth, sizeof *q->results);
  q->kinds = calloc (depth, sizeof *q->kinds);
  q->workers = calloc (UBLK_WORKERS, sizeof *q->workers);
  if (!q->todo || !q->done || !q->results || !q->kinds || !q->workers)
    return -ENOMEM;
  for (; q->nworkers < UBLK_WORKERS; q->nworkers++) {
    r = pthread_create (&q->workers[q->nworkers], NULL, ublk_worker_thread,
                        q);
    if (r != 0)
      return -r;
  }
  return 0;
}

static void
ublk_queue_stop_workers (struct ublk_queue *q)
{
  unsigned i;

  pthread_mutex_lock (&q->lock);
  q->quit = true;
  pthread_cond_broadcast (&q->work);
  pthread_mutex_unlock (&q->lock);
  for (i = 0; i < q->nworkers; i++)
    pthread_join (q->workers[i], NULL);
  q->nworkers = 0;
  free (q->todo);
  free (q->done);
  free (q->results);
  free (q->kinds);
  free (q->workers);
  q->todo = q->done = NULL;
  q->results = NULL;
  q->kinds = NULL;
  q->workers = NULL;
}

/* ---- The queue thread --------------------------------------------------- */

static void
ublk_queue_complete (struct ublk_queue *q, struct io_uring_cqe *cqe)
{
  unsigned tag = (unsigned) cqe->user_data, kind;
  struct ublk_dev *dev = q->dev;

  if (cqe->user_data == UBLK_STOP_TAG) {
    q->leaving = true;
    return;
  }
  if (cqe->user_data == UBLK_DONE_TAG) {
    ublk_queue_answer (q);
    return;
  }
  q->owned--;
  if (cqe->res == UBLK_IO_RES_ABORT)
    return;                     /* the device is stopping */
  if (cqe->res != UBLK_IO_RES_OK) {
    ublk_log (dev->ctrl, FSSNAP_LOG_ERR, "ublk%u: queue %u tag %u: %s",
              dev->info.dev_id, q->id, tag, strerror (-cqe->res));
    return;
  }
  kind = ublk_queue_kind (dev, &q->iods[tag]);
  if (ublk_queue_pick (q, kind)) {
    q->ran_here++;
    ublk_queue_arm (q, tag, true, ublk_queue_run_timed (q, tag, kind));
    return;
  }
  q->handed_off++;
  pthread_mutex_lock (&q->lock);
  q->kinds[tag] = (unsigned char) kind;
  q->todo[(q->todo_head + q->ntodo++) % dev->info.queue_depth] = tag;
  pthread_cond_signal (&q->work);
  pthread_mutex_unlock (&q->lock);
  q->busy++;
}

static void
ublk_queue_loop (struct ublk_queue *q)
{
  struct io_uring_cqe *cqe;
  unsigned head, n;
  int r;

  /* Leaving or not, what the workers have is answered first. */
  while (q->busy > 0 || (!q->leaving && q->owned > 0)) {
    r = io_uring_submit_and_wait (&q->ring, 1);
    if (r < 0 && r != -EINTR) {
      ublk_log (q->dev->ctrl, FSSNAP_LOG_ERR, "ublk%u: queue %u: %s",
                q->dev->info.dev_id, q->id, strerror (-r));
      return;
    }
    n = 0;
    io_uring_for_each_cqe (&q->ring, head, cqe) {
      ublk_queue_complete (q, cqe);
      n++;
    }
    io_uring_cq_advance (&q->ring, n);
  }
  io_uring_submit (&q->ring);   /* answers of the last batch */
}

/* ---- Set-up ------------------------------------------------------------ */

static int
ublk_queue_setup (struct ublk_queue *q)
{
  const struct ublksrv_ctrl_dev_info *info = &q->dev->info;
  off_t off = UBLKSRV_CMD_BUF_OFFSET
              + (off_t) q->id
                * ublk_round_page (UBLK_MAX_QUEUE_DEPTH
                                   * sizeof (struct ublksrv_io_desc));
  struct io_uring_sqe *sqe;
  void *p;
  unsigned tag;
  int r;

  q->iods_len = ublk_round_page (info->queue_depth
                                 * sizeof (struct ublksrv_io_desc));
  p = mmap (NULL, q->iods_len, PROT_READ, MAP_SHARED | MAP_POPULATE,
            q->dev->cdev_fd, off);
  if (p == MAP_FAILED)
    return -errno;
  q->iods = p;
  q->bufs_len = (size_t) info->queue_depth * info->max_io_buf_bytes;
  p = mmap (NULL, q->bufs_len, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return -errno;
  q->bufs = p;
  r = ublk_queue_start_workers (q);
  if (r < 0)
    return r;
  r = io_uring_queue_init (info->queue_depth + 4, &q->ring,
                           IORING_SETUP_SQE128);
  if (r < 0)
    return r;
  q->ring_ok = true;
  sqe = io_uring_get_sqe (&q->ring);
  io_uring_prep_poll_add (sqe, q->stop_fd, POLLIN);
  io_uring_sqe_set_data64 (sqe, UBLK_STOP_TAG);
  ublk_queue_watch_done (q);
  for (tag = 0; tag < info->queue_depth; tag++)
    ublk_queue_arm (q, tag, false, 0);
  r = io_uring_submit (&q->ring);
  return r < 0 ? r : 0;
}

static void
ublk_queue_ready (struct ublk_queue *q, int error)
{
  pthread_mutex_lock (q->ready_lock);
  q->setup_error = error;
  (*q->nready)++;
  pthread_cond_broadcast (q->ready_cond);
  pthread_mutex_unlock (q->ready_lock);
}

static void *
ublk_queue_thread (void *arg)
{
  struct ublk_queue *q = arg;
  int r;

  /* Memory reclaim may write to our devices: this thread must not wait
   * on reclaim that waits on it.
   */
  if (prctl (PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
    ublk_log (q->dev->ctrl, FSSNAP_LOG_WARN, "ublk%u: queue %u: "
              "PR_SET_IO_FLUSHER: %s", q->dev->info.dev_id, q->id,
              strerror (errno));
  ublk_queue_own_mounts (q);
  r = ublk_queue_setup (q);
  ublk_queue_ready (q, r);
  if (r == 0)
    ublk_queue_loop (q);
  ublk_log (q->dev->ctrl, FSSNAP_LOG_DEBUG, "ublk%u: queue %u ran %llu "
            "requests itself, handed %llu to its workers", q->dev->info.dev_id,
            q->id, (unsigned long long) q->ran_here,
            (unsigned long long) q->handed_off);
  ublk_queue_stop_workers (q);
  return NULL;
}

int
ublk_queue_start (struct ublk_queue *q)
{
  int r;

  q->stop_fd = eventfd (0, EFD_CLOEXEC);
  q->done_fd = eventfd (0, EFD_CLOEXEC);
  if (q->stop_fd < 0 || q->done_fd < 0) {
    r = -errno;
    goto fail;
  }
  pthread_mutex_init (&q->lock, NULL);
  pthread_cond_init (&q->work, NULL);
  r = pthread_create (&q->thread, NULL, ublk_queue_thread, q);
  if (r != 0) {
    r = -r;
    pthread_mutex_destroy (&q->lock);
    pthread_cond_destroy (&q->work);
    goto fail;
  }
  q->started = true;
  return 0;

fail:
  if (q->stop_fd >= 0)
    close (q->stop_fd);
  if (q->done_fd >= 0)
    close (q->done_fd);
  q->stop_fd = q->done_fd = -1;
  return r;
}

void
ublk_queue_leave (struct ublk_queue *q)
{
  uint64_t one = 1;

  if (q->started && write (q->stop_fd, &one, sizeof one) < 0)
    ublk_log (q->dev->ctrl, FSSNAP_LOG_ERR, "ublk%u: queue %u: eventfd: %s",
              q->dev->info.dev_id, q->id, strerror (errno));
}

void
ublk_queue_join (struct ublk_queue *q)
{
  if (!q->started)
    return;
  pthread_join (q->thread, NULL);
  q->started = false;
  if (q->ring_ok)
    io_uring_queue_exit (&q->ring);
  if (q->iods)
    munmap ((void *) q->iods, q->iods_len);
  if (q->bufs)
    munmap (q->bufs, q->bufs_len);
  close (q->stop_fd);
  close (q->done_fd);
  pthread_mutex_destroy (&q->lock);
  pthread_cond_destroy (&q->work);
  q->done_fd = -1;
  q->ring_ok = false;
  q->iods = NULL;
  q->bufs = NULL;
  q->stop_fd = -1;
}
