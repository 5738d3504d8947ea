/* SPDX-License-Identifier: MIT */
/*
 * NBD wire format: the magic numbers, flags, option, reply and command
 * codes of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md) that
 * fssnapd speaks, and big-endian accessors for building and parsing
 * messages byte by byte (no packed structs: every field is placed by hand).
 */
#ifndef FSSNAP_NBD_PROTOCOL_H
#define FSSNAP_NBD_PROTOCOL_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

/* Handshake. */
#define NBD_MAGIC                  UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_IHAVEOPT               UINT64_C(0x49484156454f5054) /* IHAVEOPT */
#define NBD_OPT_REPLY_MAGIC        UINT64_C(0x0003e889045565a9)

#define NBD_FLAG_FIXED_NEWSTYLE    (1u << 0)   /* handshake flags */
#define NBD_FLAG_NO_ZEROES         (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE  (1u << 0)   /* client flags */
#define NBD_FLAG_C_NO_ZEROES       (1u << 1)

/* Transmission flags, sent per export. */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)

/* Options. */
#define NBD_OPT_EXPORT_NAME        1u
#define NBD_OPT_ABORT              2u
#define NBD_OPT_LIST               3u
#define NBD_OPT_STARTTLS           5u
#define NBD_OPT_INFO               6u
#define NBD_OPT_GO                 7u
#define NBD_OPT_STRUCTURED_REPLY   8u
#define NBD_OPT_LIST_META_CONTEXT  9u
#define NBD_OPT_SET_META_CONTEXT   10u

/* Option replies; errors have bit 31 set. */
#define NBD_REP_ACK                1u
#define NBD_REP_SERVER             2u
#define NBD_REP_INFO               3u
#define NBD_REP_META_CONTEXT       4u
#define NBD_REP_ERR_UNSUP          (0x80000000u | 1u)
#define NBD_REP_ERR_POLICY         (0x80000000u | 2u)
#define NBD_REP_ERR_INVALID        (0x80000000u | 3u)
#define NBD_REP_ERR_TLS_REQD       (0x80000000u | 5u)
#define NBD_REP_ERR_UNKNOWN        (0x80000000u | 6u)
#define NBD_REP_ERR_SHUTDOWN       (0x80000000u | 7u)
#define NBD_REP_ERR_TOO_BIG        (0x80000000u | 9u)

/* NBD_REP_INFO payload types. */
#define NBD_INFO_EXPORT            0u
#define NBD_INFO_NAME              1u
#define NBD_INFO_DESCRIPTION       2u
#define NBD_INFO_BLOCK_SIZE        3u

/* Transmission: requests and replies. */
#define NBD_REQUEST_MAGIC          UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC     UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)
#define NBD_REQUEST_SIZE           28u   /* magic flags type handle off len */
#define NBD_SIMPLE_REPLY_SIZE      16u
#define NBD_CHUNK_HEADER_SIZE      20u

#define NBD_CMD_READ               0u
#define NBD_CMD_WRITE              1u
#define NBD_CMD_DISC               2u
#define NBD_CMD_FLUSH              3u
#define NBD_CMD_TRIM               4u
#define NBD_CMD_WRITE_ZEROES       6u
#define NBD_CMD_BLOCK_STATUS       7u

#define NBD_CMD_FLAG_FUA           (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE       (1u << 1)
#define NBD_CMD_FLAG_DF            (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE       (1u << 3)

#define NBD_REPLY_FLAG_DONE        (1u << 0)
#define NBD_REPLY_TYPE_NONE        0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR       ((1u << 15) | 1u)

/* base:allocation extent flags. */
#define NBD_STATE_HOLE             (1u << 0)
#define NBD_STATE_ZERO             (1u << 1)
/* qemu:dirty-bitmap:NAME extent flag: the range may have changed. */
#define NBD_STATE_DIRTY            (1u << 0)

/* Error values on the wire (not the host's errno numbers). */
#define NBD_EPERM                  1u
#define NBD_EIO                    5u
#define NBD_ENOMEM                 12u
#define NBD_EINVAL                 22u
#define NBD_ENOSPC                 28u
#define NBD_EOVERFLOW              75u
#define NBD_ENOTSUP                95u
#define NBD_ESHUTDOWN              108u

/* Limits of this server. */
#define NBD_MAX_STRING             4096u        /* names, queries */
#define NBD_MAX_PAYLOAD            (32u << 20)  /* read or write request */
#define NBD_MAX_OPTION_DATA        (64u << 10)  /* larger: ERR_TOO_BIG */
#define NBD_PREFERRED_BLOCK        4096u
#define NBD_META_BASE_ALLOCATION   "base:allocation"
#define NBD_META_ID                1u           /* base:allocation's id */
/* qemu:dirty-bitmap:snap/A, the chunks changed since snapshot A, has the
 * context id 2 + A.
 */
#define NBD_META_DIRTY_BITMAP      "qemu:dirty-bitmap:"
#define NBD_META_BITMAP_ID(a)      (2u + (a))

static inline void
nbd_put16 (uint8_t *p, uint16_t v)
{
  v = htobe16 (v);
  memcpy (p, &v, sizeof v);
}

static inline void
nbd_put32 (uint8_t *p, uint32_t v)
{
  v = htobe32 (v);
  memcpy (p, &v, sizeof v);
}

static inline void
nbd_put64 (uint8_t *p, uint64_t v)
{
  v = htobe64 (v);
  memcpy (p, &v, sizeof v);
}

static inline uint16_t
nbd_get16 (const uint8_t *p)
{
  uint16_t v;
  memcpy (&v, p, sizeof v);
  return be16toh (v);
}

static inline uint32_t
nbd_get32 (const uint8_t *p)
{
  uint32_t v;
  memcpy (&v, p, sizeof v);
  return be32toh (v);
}

static inline uint64_t
nbd_get64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, sizeof v);
  return be64toh (v);
}

#endif /* FSSNAP_NBD_PROTOCOL_H */
