/* SPDX-License-Identifier: MIT */
/* CRC-32C (Castagnoli), as used by iSCSI, ext4 and btrfs metadata. */
#ifndef FSSNAP_CRC32C_H
#define FSSNAP_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf; pass 0 as crc to start, or a previous result to go on. */
uint32_t crc32c (uint32_t crc, const void *buf, size_t len);

#endif /* FSSNAP_CRC32C_H */
