/* SPDX-License-Identifier: MIT */
/*
 * The control protocol of fssnapd, shared by the daemon and the fssnap CLI.
 *
 * A client connects to RUN_DIR/control.sock (a unix stream socket, mode
 * 0600; the daemon also checks that the peer is root or its own user) and
 * sends one JSON object per line; the daemon answers each with one JSON
 * object on one line, in order.  A line that is not a JSON object, names an
 * unknown request or has a field of the wrong type gets an error reply and
 * changes nothing; the connection stays usable.
 *
 * Requests ("request" names the operation):
 *   {"request":"create", "options":"backing-store=DIR,maxsize=1g,unlink",
 *    "mount":"/mnt"}
 *       "options" uses the syntax of fssnap -o.  The same settings may also
 *       be given as fields: "backing-store", "mount" (strings), "maxsize",
 *       "chunksize", "maxfilesize" (integer bytes or a size string such as
 *       "64k"), "unlink", "transient" (booleans); fields override "options".
 *       "group" (a UUID) is recorded with the snapshot: fssnap gives the
 *       snapshots of several volumes taken in one instant the same one.
 *       Reply: "snapshot": the new snapshot's info object.
 *   {"request":"delete", "number":N, "force":false}
 *                                             Reply: "number": N.
 *       Refused (EBUSY) while a block device of the snapshot is mounted
 *       or held, and, unless "force", while a process has it open.
 *   {"request":"list"}                        Reply: "snapshots": [short info],
 *                                             "volume": {size, device, devices}
 *   {"request":"info"} or {"request":"info", "number":N}
 *                                             Reply: "snapshots": [info]
 *   {"request":"stats"}                       Reply: "stats": {...}
 *   {"request":"diff", "a":A, "b":B, "offset":O, "length":L}
 *       A and B: a snapshot number or "volume" (the live volume), in any
 *       order; "offset" and "length" (bytes, optional) limit the range,
 *       by default the whole volume.  Reply: "a", "b" as asked, "a_uuid",
 *       "b_uuid" (for snapshots), "size", "chunksize", "extents": the
 *       byte ranges that may differ, [{"offset":..,"length":..}], whole
 *       chunks, adjacent ones merged, ascending; "bytes": their total;
 *       "end": the reply describes [offset, end), which is offset+length
 *       unless it stopped at 65536 extents: then ask again from "end".
 *       A map that cannot be trusted for this pair (a transient snapshot,
 *       damaged metadata) is the error ESTALE: take a full copy.
 *       "exact": true compares contents where the maps name a chunk (only
 *       chunks that differ now are reported); fssnapd does so by itself
 *       for the volume against the target of the last rollback.  The
 *       reply's "exact" says which.
 *   {"request":"rollback", "number":N, "force":false}
 *       Start making the volume read as snapshot N (refused while the
 *       volume is attached, mounted or has NBD clients, unless "force").
 *       Reply: "rollback": {state, number, uuid, chunks, examined, moved,
 *       error[, errno]}; state is none, running, done, stopped or failed.
 *   {"request":"rollback-status"}             Reply: "rollback": as above
 *   {"request":"clone", "number":N}           a writable clone of snapshot
 *       N.  Reply: "clone": {number, base, base_uuid, device, devices,
 *       size, chunksize, written_chunks, create_time, overlay}.
 *   {"request":"delete-clone", "number":K[, "force":true]}
 *       Reply: "number": K.  Refused (EBUSY) while its block device is
 *       mounted, or open by a process unless "force".
 *       list and info replies carry "clones": [clone objects], and each
 *       snapshot object its own "clones" (those based on it).  delete of
 *       a snapshot that has clones is refused (EBUSY).
 *
 * Every reply has "ok" (boolean).  A failed request has "ok":false, "error"
 * (a one-line explanation) and "errno" (the name of the errno value, such as
 * "ENOENT" for a snapshot that does not exist).
 *
 * Devices: "devices" is an object naming, per frontend ("ublk", "fuse",
 * "nbd"), what serves the snapshot or volume: a block device, a device
 * file, an NBD URI; each frontend reports its own names.  "device" is the
 * one to open: a block device before a device file; with neither, the NBD
 * export name ("snap/N" or "volume").  Its last path element is always
 * the snapshot number.
 *
 * Info objects: number, uuid, device, devices, state, reason,
 * mountpoint, backing_store, backing_store_size, backing_files, maxsize,
 * maxfilesize, create_time (seconds since the epoch), chunksize, chunks,
 * candidate_chunks, preserved_chunks, owned_chunks, open_count, transient,
 * unlinked, seq, group.  Short info (list): number, uuid, device, devices,
 * state, create_time, group ("" when not in a group).  Stats: size, chunksize, snapshots, retained, highest_number,
 * chunks_copied, bytes_copied, throttle_waits, mem_chunks, mem_chunks_peak,
 * max_mem_chunks, store_errors, staged_bytes, staged_bytes_peak,
 * max_staged_bytes, staged_writes, staging_waits.  Sizes are in bytes.
 */
#ifndef FSSNAP_CONTROL_PROTO_H
#define FSSNAP_CONTROL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <json-c/json.h>

#ifndef FSSNAP_VERSION
#define FSSNAP_VERSION "0.2.0"
#endif

#define CTL_SOCKET_NAME "control.sock"
/* The longest request line; replies may be longer. */
#define CTL_LINE_MAX    (64u << 10)

/* The name of an errno value ("ENOENT"), or "EUNKNOWN". */
const char *ctl_errno_name (int err);

/* {"ok":true} */
json_object *ctl_reply_ok (void);
/* {"ok":false,"error":MSG,"errno":NAME}; err is a positive errno value. */
json_object *ctl_reply_error (int err, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Parse one line (without its newline) into a JSON object.  Returns NULL and
 * a message in err when the line is not exactly one JSON object.
 */
json_object *ctl_parse_line (const char *line, size_t len,
                             char *err, size_t errlen);

/* Write obj as one line.  Returns 0 or a negative errno. */
int ctl_send (int fd, json_object *obj);

/* Splits what arrives on a socket into lines. */
struct ctl_reader {
  char buf[CTL_LINE_MAX];
  size_t len;                   /* bytes in buf */
  size_t used;                  /* bytes of buf already returned as lines */
  bool skipping;                /* dropping the rest of an overlong line */
};

void ctl_reader_init (struct ctl_reader *r);
/* Next line from fd, without its newline and NUL-terminated in r->buf:
 * returns 1 and sets *line and *len; 0 at end of file; -E2BIG once for a
 * line longer than CTL_LINE_MAX (the rest of it is skipped); another
 * negative errno on a read error.
 */
int ctl_read_line (int fd, struct ctl_reader *r, char **line, size_t *len);

#endif /* FSSNAP_CONTROL_PROTO_H */
