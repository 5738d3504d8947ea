/* SPDX-License-Identifier: MIT */
/*
 * Inside the NBD frontend.  One client connection is one session:
 *
 *   transport (wire.c)   a byte stream: a socket, or a buffer in the fuzzer
 *   handshake.c          option haggling, ends with an open export
 *   export.c             export names -> volume or snapshot, and the I/O
 *                        calls on it (the only file that calls the engine)
 *   conn.c               transmission: a reader, a pool of workers
 *   reply.c              simple and structured replies, errno -> NBD error
 *   server.c             listeners, client threads, stop
 *
 * nbd_session_run() drives one connection from the first byte to the end
 * without knowing where the bytes come from, so that the fuzzer and the
 * unit tests can run it in-process.
 *
 * Locks of a connection (struct nbd_conn), in the order they may be
 * taken (never an earlier one while holding a later one):
 *   conn->recv_lock   the incoming stream and its read-ahead buffer: the
 *                     worker holding it is the one reading requests
 *   conn->lock        the in-flight payload budget
 *   conn->send_lock   one reply at a time on the wire
 * conn->lock and conn->send_lock are never held together.
 */
#ifndef FSSNAP_NBD_INTERNAL_H
#define FSSNAP_NBD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "libfssnap.h"
#include "nbd/nbd.h"
#include "nbd/protocol.h"
#include "nbd/tls.h"

/* ---- Transport (wire.c) ------------------------------------------------ */

struct nbd_transport {
  void *opaque;
  /* Receive up to len bytes: the count, 0 at end of stream, or -errno. */
  ssize_t (*recv) (void *opaque, void *buf, size_t len);
  /* Send up to len bytes (more: another part of the message follows):
   * the count or -errno.
   */
  ssize_t (*send) (void *opaque, const void *buf, size_t len, bool more);
  /* Optional: make recv and send fail from now on (the peer is gone). */
  void (*shutdown) (void *opaque);
  /* Optional: make recv fail with -EAGAIN after this many seconds of
   * silence (0: wait for ever).
   */
  void (*set_timeout) (void *opaque, unsigned seconds);
  /* Optional: wait up to ms milliseconds for something to receive: 1
   * ready, 0 not yet, or -errno (TLS waits with it; absent: never waits).
   */
  int (*wait_readable) (void *opaque, unsigned ms);
};

/* Receive exactly len bytes; -ECONNRESET at a premature end of stream. */
int nbd_recv_all (const struct nbd_transport *t, void *buf, size_t len);
/* Receive and drop len bytes (a payload the server will not use). */
int nbd_recv_discard (const struct nbd_transport *t, uint64_t len);
int nbd_send_all (const struct nbd_transport *t, const void *buf,
                  size_t len, bool more);

/* ---- Environment and logging ----------------------------------------- */

struct nbd_env {
  struct fssnap_origin *origin;
  fssnap_log_fn log;            /* NULL: stderr */
  void *log_opaque;
  unsigned workers;             /* request threads per client; 0: default */
  unsigned handshake_timeout;   /* seconds; 0: none */
  /* Sessions in transmission on the volume export (NULL: not counted). */
  _Atomic unsigned *volume_sessions;
  struct fssnap_clones *clones; /* NULL: no clone exports */
  enum nbd_tls tls;             /* this socket's TLS policy */
  const struct tls_creds *tls_creds;  /* NULL unless tls != NBD_TLS_OFF */
};

void nbd_log (const struct nbd_env *env, enum fssnap_log_level level,
              const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

/* ---- Exports (export.c) ---------------------------------------------- */

enum nbd_export_kind { NBD_EXPORT_VOLUME, NBD_EXPORT_SNAPSHOT,
                       NBD_EXPORT_CLONE };

struct nbd_export {
  enum nbd_export_kind kind;
  unsigned num;                 /* snapshot number */
  struct fssnap_origin *origin;
  struct fssnap_snapshot *snap; /* open handle, snapshots only */
  struct fssnap_clone *clone;   /* a reference, clones only */
  uint64_t size;
};

/* Map a name to an export: "" and "volume" are the volume, "snap/<N>"
 * (N in canonical decimal) snapshot N, "clone/<K>" writable clone K.
 * -ENOENT for any other name.
 * Does not check that the snapshot exists.
 */
int nbd_export_parse (const char *name, enum nbd_export_kind *kind,
                      unsigned *num);
/* Parse and open; -ENOENT if no such export, or the engine's error. */
/* Why opening export name failed with r, for the client: the state and
 * reason of a snapshot that is offline or disabled, else strerror.
 */
void nbd_export_why (struct fssnap_origin *origin, const char *name, int r,
                     char *buf, size_t len);
int nbd_export_open (const struct nbd_env *env, const char *name,
                     struct nbd_export *exp);
void nbd_export_close (struct nbd_export *exp);
bool nbd_export_readonly (const struct nbd_export *exp);
uint16_t nbd_export_flags (const struct nbd_export *exp, bool structured);
/* One line for humans (NBD_OPT_LIST, NBD_INFO_DESCRIPTION). */
int nbd_export_describe (const struct nbd_env *env,
                         enum nbd_export_kind kind, unsigned num,
                         char *buf, size_t len);

int nbd_export_read (struct nbd_export *exp, void *buf, uint32_t len,
                     uint64_t off);
int nbd_export_write (struct nbd_export *exp, const void *buf, uint32_t len,
                      uint64_t off, bool fua);
int nbd_export_zero (struct nbd_export *exp, uint32_t len, uint64_t off,
                     bool fua, bool no_hole);
int nbd_export_trim (struct nbd_export *exp, uint32_t len, uint64_t off,
                     bool fua);
int nbd_export_flush (struct nbd_export *exp);

#define NBD_MAX_EXTENTS 256      /* descriptors in one block status chunk */

/* base:allocation extents of [off, off+len) as (length, flags) pairs in
 * descs[2*i], descs[2*i+1]: at most max of them, at least one.  Returns
 * how many, or a negative errno.
 */
int nbd_export_extents (struct nbd_export *exp, uint64_t off, uint32_t len,
                        uint32_t *descs, unsigned max);

/* The context qemu:dirty-bitmap:snap/A: snapshot A, identified by its
 * creation sequence as well, so that a number deleted and reused after
 * the context was chosen is not taken for it.
 */
struct nbd_bitmap {
  unsigned num;
  uint64_t seq;
};

/* The dirty-bitmap contexts an export offers: for snap/B every snapshot
 * older than B (created earlier), for the volume every snapshot, in
 * ascending number order.  Fills at most max; returns how many, or a
 * negative errno (-ENOENT: no snapshot B).
 */
int nbd_export_bitmaps (struct fssnap_origin *origin,
                        enum nbd_export_kind kind, unsigned num,
                        struct nbd_bitmap *bms, unsigned max);
/* The qemu:dirty-bitmap extents of [off, off+len) against bm, as for
 * nbd_export_extents: NBD_STATE_DIRTY where the data may differ from
 * snapshot A, 0 where it is the same.  -ESTALE when the change maps
 * cannot be trusted, -ENOENT when A is gone: never "clean" for a doubt.
 * On error, why in errmsg.
 */
int nbd_export_changes (struct nbd_export *exp, const struct nbd_bitmap *bm,
                        uint64_t off, uint32_t len, uint32_t *descs,
                        unsigned max, char *errmsg, size_t errlen);

/* ---- Session --------------------------------------------------------- */

struct nbd_session {
  const struct nbd_env *env;
  const struct nbd_transport *t;  /* the plain one, or tls's after STARTTLS */
  struct tls_session *tls;      /* after a successful NBD_OPT_STARTTLS */
  time_t handshake_end;         /* CLOCK_MONOTONIC s; 0: no deadline */
  bool no_zeroes;               /* client asked for NBD_FLAG_C_NO_ZEROES */
  bool structured;              /* NBD_OPT_STRUCTURED_REPLY acknowledged */
  bool meta;                    /* base:allocation selected ... */
  unsigned nbitmaps;            /* ... and these dirty bitmaps ... */
  struct nbd_bitmap bitmaps[FSSNAP_MAX_SNAPSHOTS];
  enum nbd_export_kind meta_kind;  /* ... for this export */
  unsigned meta_num;
  bool have_export;
  struct nbd_export exp;        /* chosen by GO or EXPORT_NAME */
};

/* Option haggling.  1: an export is open, go to transmission; 0: the
 * client ended the session; negative errno: drop the connection.
 */
int nbd_handshake (struct nbd_session *s);

/* Transmission phase until NBD_CMD_DISC, end of stream or a broken
 * protocol; waits for every request in flight.
 */
void nbd_transmission (struct nbd_session *s);

/* One connection from the first byte to the end. */
void nbd_session_run (const struct nbd_env *env,
                      const struct nbd_transport *t);

/* ---- Replies (reply.c) ----------------------------------------------- */

struct nbd_conn {
  struct nbd_session *s;
  pthread_mutex_t send_lock;    /* guards the wire and send_failed */
  bool send_failed;
  pthread_mutex_t recv_lock;    /* guards the fields up to lock */
  uint8_t *rbuf;                /* read-ahead: bytes received, not parsed */
  size_t rpos, rlen;            /* unparsed bytes are rbuf[rpos, rlen) */
  bool done;                    /* the stream ended: no more requests */
  pthread_mutex_t lock;         /* guards the fields below */
  pthread_cond_t room_cv;       /* a request gave its payload budget back */
  uint64_t inflight_bytes;      /* payloads of requests read, not done */
};

/* NBD error value for a negative errno. */
uint32_t nbd_errno_to_nbd (int err);

/* Each takes conn->send_lock; a failed send marks the connection broken
 * and shuts the transport down.  They return 0 or -errno.
 */
int nbd_reply_ok (struct nbd_conn *c, uint64_t handle);
int nbd_reply_error (struct nbd_conn *c, uint64_t handle, int err,
                     const char *what);
int nbd_reply_read (struct nbd_conn *c, uint64_t handle, uint64_t off,
                    const void *data, uint32_t len);
/* One BLOCK_STATUS chunk: n (length, flags) pairs for context id. */
struct nbd_status_chunk {
  uint32_t id;
  const uint32_t *descs;
  unsigned n;
};
/* Every chunk of one block status reply, the last one flagged done. */
int nbd_reply_block_status (struct nbd_conn *c, uint64_t handle,
                            const struct nbd_status_chunk *chunks,
                            unsigned nchunks);

#endif /* FSSNAP_NBD_INTERNAL_H */
