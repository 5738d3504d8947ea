/* SPDX-License-Identifier: MIT */
/*
 * Mounting a snapshot read-only for file-level tools (fssnap mount,
 * umount and exec), in mount.c.
 */
#ifndef FSSNAP_CLI_MOUNT_H
#define FSSNAP_CLI_MOUNT_H

#include <stddef.h>
#include <json-c/json.h>

#include "cli/cli.h"

/* The info object of snapshot num in *snapp (the caller puts it). */
int cli_snapshot_info (struct cli *cli, long num, json_object **snapp);

/* Mount the snapshot described by snap (an info object: "number",
 * "state", "devices") read-only on dir, an existing directory that is not
 * a mount point.  A loop device made for it detaches itself at unmount.
 * Its block device goes to dev.  Returns an exit code after a message.
 */
int cli_mount_snapshot (json_object *snap, const char *dir, char *dev,
                        size_t len);

/* Unmount dir and wait for the loop device that cli_mount_snapshot made
 * for it to go.  With lazy, a mount still busy after a few seconds is
 * detached lazily (umount -l) instead of refused.  Returns an exit code.
 */
int cli_unmount (const char *dir, int lazy);

#endif /* FSSNAP_CLI_MOUNT_H */
