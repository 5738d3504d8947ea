/* SPDX-License-Identifier: MIT */
/*
 * fssnap's side of the device files: loop devices on them (attach,
 * detach, shown by list and info) and freezing the file system on the
 * volume while a snapshot is created.
 */
#ifndef FSSNAP_CLI_DEVICES_H
#define FSSNAP_CLI_DEVICES_H

#include <stddef.h>
#include <sys/types.h>
#include <json-c/json.h>

#include "cli/cli.h"

int cli_cmd_attach (struct cli *cli, int argc, char **argv);
int cli_cmd_detach (struct cli *cli, int argc, char **argv);

/* Print the block device of a snapshot (read-only) or of the volume, from
 * its "devices" object: the one a frontend serves, or a new loop device on
 * its FUSE device file.  what ("the snapshot") goes into messages.
 * Returns an exit code.
 */
int cli_attach_devices (json_object *devices, const char *what,
                        int read_only);
/* The block device of devices in dev, as cli_attach_devices finds or
 * makes it, without printing it.  With reuse, a loop device already on
 * the device file is taken instead of refused.  *made is 1 when a new
 * loop device was set up.
 */
int cli_devices_block (json_object *devices, const char *what,
                       int read_only, int reuse, char *dev, size_t len,
                       int *made);
/* Detach every loop device on file.  Returns an exit code. */
int cli_detach_file (const char *file);

/* The FUSE device file of snapshot num (num < 0: the volume) in path, ""
 * when fssnapd serves none.
 */
int cli_snapshot_file (struct cli *cli, long num, char *path, size_t len);

/* Add "loop": "/dev/loopN" to each snapshot object whose device file has
 * a loop device on it.
 */
void cli_add_loop_fields (json_object *snaps);

/* Freeze the file system mounted on mountpoint, run req through fssnapd,
 * thaw whatever happens.  A watchdog process thaws it if fssnap itself is
 * killed meanwhile.  Same result as cli_request.
 */
int cli_request_frozen (struct cli *cli, const char *mountpoint,
                        json_object *req, json_object **replyp);

/* The watchdog of cli_request_frozen, for callers that freeze several
 * file systems: start it before freezing mountpoint (*wfdp, *pidp are
 * its handle), stop it once thawed.  An exit code.
 */
int cli_watchdog_start (const char *mountpoint, int *wfdp, pid_t *pidp);
void cli_watchdog_stop (int wfd, pid_t pid);
/* The message and exit code for fs_freeze's error rc. */
int cli_freeze_error (const char *mountpoint, int rc);

#endif /* FSSNAP_CLI_DEVICES_H */
