/* SPDX-License-Identifier: MIT */
/* CRC-32C, bytewise with a table built on first use (reflected 0x82F63B78). */
#include <pthread.h>

#include "common/crc32c.h"

static uint32_t crc32c_table[256];
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
}

uint32_t
crc32c (uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;
  pthread_once (&crc32c_once, crc32c_init);
  crc = ~crc;
  while (len--)
    crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}
