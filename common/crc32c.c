/* SPDX-License-Identifier: MIT */
/* CRC-32C (reflected 0x82F63B78): with the SSE4.2 crc32 instruction where the
 * CPU has it (the staging log checksums every staged write), else bytewise
 * with a table built on first use.
 */
#include <pthread.h>
#include <string.h>

#include "common/crc32c.h"

static uint32_t crc32c_table[256];
static bool crc32c_hw;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void
crc32c_init (void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc32c_table[i] = c;
  }
#if defined(__x86_64__)
  crc32c_hw = __builtin_cpu_supports ("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__ ((target ("sse4.2")))
static uint32_t
crc32c_sse42 (uint32_t crc, const unsigned char *p, size_t len)
{
  uint64_t c = crc;
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    memcpy (&v, p, 8);
    c = __builtin_ia32_crc32di (c, v);
  }
  uint32_t c32 = (uint32_t) c;
  while (len--)
    c32 = __builtin_ia32_crc32qi (c32, *p++);
  return c32;
}
#endif

uint32_t
crc32c (uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;
  pthread_once (&crc32c_once, crc32c_init);
  crc = ~crc;
#if defined(__x86_64__)
  if (crc32c_hw)
    return ~crc32c_sse42 (crc, p, len);
#endif
  while (len--)
    crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}
