/* SPDX-License-Identifier: MIT */
/*
 * fssnap: the command-line tool of fssnap.  Reads the global options, then
 * hands the rest of the command line to one subcommand from the table
 * below; every subcommand talks to fssnapd through its control socket.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/devices.h"
#include "control/proto.h"

static const char cli_usage[] =
"Usage: fssnap [--run-dir DIR | --run-root DIR] COMMAND [ARGS]\n"
"\n"
"Create, list, compare and delete point-in-time snapshots of a volume\n"
"served by fssnapd(8).  Snapshot N is served as the read-only NBD export\n"
"\"snap/N\" and, with the FUSE frontend, as the file DIR/dev/snap/N.\n"
"fssnapd names each device; fssnap prints what it is told.\n"
"\n"
"Commands:\n"
"  create [-o OPTIONS] [--mount PATH | PATH] [--attach] [--json]\n"
"      Take a snapshot; print its device: a block device where fssnapd\n"
"      serves one, else its device file DIR/dev/snap/N, else (--no-fuse)\n"
"      its NBD export name snap/N; the last path element is the snapshot\n"
"      number.\n"
"      OPTIONS, comma-separated:\n"
"        backing-store=PATH  directory (or file) for the backing store;\n"
"                            default: fssnapd's state dir\n"
"        maxsize=SIZE        delete the snapshot when its store grows past\n"
"                            SIZE\n"
"        chunksize=SIZE      copy-on-write granularity (power of two, 512 to\n"
"                            1m); must match the origin's once snapshots\n"
"                            exist\n"
"        maxfilesize=SIZE    split the backing store into files of at most SIZE\n"
"        unlink              unlink the store files once open\n"
"        transient           no syncs; gone when fssnapd restarts\n"
"      SIZE takes a k, m, g or t suffix (powers of 1024).  --mount PATH\n"
"      (or PATH alone) freezes the file system mounted there (on the\n"
"      volume) while the snapshot is taken, so that it is consistent, and\n"
"      thaws it whatever happens; it is recorded as the mount point.\n"
"      --attach also attaches the snapshot and prints its block device.\n"
"      Several --mount options take one snapshot of each volume in the\n"
"      same instant (a group): each mount point's volume is found among\n"
"      the fssnapd run dirs under the run root (its device, or a loop\n"
"      device over its device file); every file system is frozen, in\n"
"      the order of their paths, a snapshot created on each volume with\n"
"      the same group UUID, and all are thawed, whatever happens.  If\n"
"      one fails, the snapshots already made are deleted: no partial\n"
"      group.  Prints one device per volume (--json: {\"group\",\n"
"      \"snapshots\": [info + \"run_dir\"]}); list shows the group.\n"
"  delete [--force] N\n"
"      Delete snapshot N.  An attached snapshot is refused unless --force,\n"
"      which detaches it first.  A snapshot whose block device (ublk) is\n"
"      mounted or held is always refused, naming the mount: unmount it\n"
"      first; one a process has open is refused unless --force, which\n"
"      deletes the device under it (its I/O then fails).\n"
"  attach N|volume\n"
"      Print the block device of snapshot N or of the volume: the one\n"
"      fssnapd serves, or else a new loop device (direct I/O; read-only\n"
"      for a snapshot) on the device file DIR/dev/snap/N or DIR/dev/volume.\n"
"  detach N|volume|/dev/loopX\n"
"      Detach it again (refused while it is mounted).\n"
"  list [--json]\n"
"      One line per snapshot: number, state, creation time, UUID, attached\n"
"      loop device, device; then \"group: UUID\" for one taken with other\n"
"      volumes; then the clones (number, base snapshot, creation time,\n"
"      loop device, chunks written, device).  --json: an array of\n"
"      snapshot objects, each with its \"clones\" (clone objects).\n"
"  info [N|clone/K] [-o KEY,...] [--json]\n"
"      Details of snapshot N (its clones included), of clone K, or of\n"
"      every snapshot.  With -o, only the values of these keys, one per\n"
"      line: number (snapnumber), device (blockdevname), mountpoint,\n"
"      state, backing_store (backing), backing_store_size (backingsize),\n"
"      maxsize, create_time (createtime), chunksize, uuid,\n"
"      candidate_chunks, preserved_chunks, owned_chunks, open_count,\n"
"      reason, group.\n"
"  stats [--json]\n"
"      Counters of the daemon: chunks and bytes copied, throttle waits...\n"
"  diff A B [--json]\n"
"      The byte ranges that may differ between snapshots A and B (either\n"
"      may be \"volume\", the live volume; the order does not matter), from\n"
"      the changed-block maps that fssnapd keeps per snapshot: one line\n"
"      \"OFFSET LENGTH\" (bytes, decimal) per range, ascending, adjacent\n"
"      ranges merged, whole chunks.  Every byte that differs is inside a\n"
"      range; a range may hold bytes written with the same data again.\n"
"      With --json: {\"a\": A, \"b\": B, \"extents\": [{\"offset\": O,\n"
"      \"length\": L}...], \"bytes\": TOTAL}.  Exits like cmp(1): 0 if\n"
"      nothing differs, 1 if something may; 5 if the maps cannot be\n"
"      trusted for this pair (a transient snapshot between them was lost\n"
"      at a restart, or metadata was damaged): then copy the whole\n"
"      snapshot instead.  Over NBD, export snap/B offers the same as\n"
"      the meta context \"qemu:dirty-bitmap:snap/A\" for every older\n"
"      snapshot A.\n"
"  mount N DIR\n"
"      Mount snapshot N read-only (and nosuid, nodev) on the directory\n"
"      DIR, for file-level tools: its block device as attach finds it,\n"
"      the file system type from libblkid, no journal replay (ext2/3/4:\n"
"      ro,noload; XFS: ro,norecovery,nouuid; others: ro).  A loop device\n"
"      made for it detaches itself at unmount.  Refused when DIR is\n"
"      missing or already a mount point, or the snapshot is disabled.\n"
"  umount DIR\n"
"      Unmount a snapshot that mount put on DIR (refused for anything\n"
"      else) and wait for its loop device to go.\n"
"  exec [-o OPTIONS] [--mount PATH] [--] CMD [ARG...]\n"
"      Create a snapshot as create does (-o, --mount PATH frozen), mount\n"
"      it read-only on a private directory in the run dir, run CMD there\n"
"      with FSSNAP_ROOT (that directory), FSSNAP_SNAPSHOT (the number),\n"
"      FSSNAP_UUID and FSSNAP_DEVICE (its block device) in the\n"
"      environment, then unmount it and delete the snapshot, whatever CMD\n"
"      does.  SIGINT, SIGTERM and SIGHUP sent to fssnap are passed on to\n"
"      CMD (a terminal's ^C reaches CMD itself) and the cleanup still\n"
"      runs.  Exits with CMD's status, 128+N if CMD was killed by signal\n"
"      N, 125 if fssnap itself failed (the message says whether before\n"
"      CMD, with nothing left behind, or in the cleanup), 126 if CMD\n"
"      cannot be run, 127 if it is not found.\n"
"  clone [--json] [--attach] N\n"
"      Make a writable clone of snapshot N and print its device: with\n"
"      fssnapd --ublk the block device /dev/fssnap/NAME/clone/K, else the\n"
"      device file DIR/dev/clone/K, else (--no-fuse) its NBD export name\n"
"      clone/K.  It reads as snapshot N except where it was written;\n"
"      writes go to an overlay in fssnapd's state dir, never to the\n"
"      snapshot.  It survives restarts; list and \"info clone/K\" show it.\n"
"      A snapshot with clones cannot be deleted.  --attach prints a\n"
"      read-write block device on it instead (the ublk one, else a loop\n"
"      device).\n"
"  delete-clone [--force] K    (or: delete clone/K)\n"
"      Drop clone K and its overlay; an attached one only with --force,\n"
"      which detaches it first.  Refused while its ublk device is mounted\n"
"      (even with --force) or open by a process (unless --force).\n"
"  scrub MOUNTPOINT\n"
"      Check the ext2/3/4 or XFS file system mounted on MOUNTPOINT (on a\n"
"      volume of fssnapd; without --run-dir, the one whose volume holds\n"
"      it) while it stays in use, as e2scrub(8) does with LVM: take a\n"
"      snapshot (frozen), clone it, attach the clone (its ublk device\n"
"      with fssnapd --ublk, else a loop device), let e2fsck replay\n"
"      its journal (\"-E journal_only -p\") and check it (\"-f -y\": only\n"
"      the clone is repaired), then drop the clone and the snapshot,\n"
"      whatever happened.  e2fsck's report goes to stdout, then\n"
"      \"scrub MOUNTPOINT: clean\".  Exits 0 when clean, 7 when e2fsck\n"
"      found errors (unmount and repair it), 8 when e2fsck could not\n"
"      check it or scrub was interrupted (SIGINT, SIGTERM, SIGHUP stop\n"
"      e2fsck; the clean-up still runs).  An XFS the same way, but\n"
"      xfs_repair cannot replay a log: the clone is mounted (nouuid) and\n"
"      unmounted, which replays it, then \"xfs_repair -n\" checks it.\n"
"  rollback [--force] [--json] N\n"
"      Make the volume read exactly as snapshot N again; every other\n"
"      snapshot, older or newer, stays as it is.  Only the chunks that\n"
"      may differ since N (the change maps) are examined, and only those\n"
"      that do differ are written back, as ordinary copy-on-write writes.\n"
"      Refused while the volume is attached (a loop device on its device\n"
"      file), mounted, or has NBD clients, unless --force says that\n"
"      whatever uses it has been stopped (its cached data is stale\n"
"      afterwards).  New snapshots are refused while it runs.  fssnapd\n"
"      records the rollback durably first: after a crash or kill it\n"
"      resumes when fssnapd starts (or at the next \"rollback N\") and\n"
"      ends with the same result.  Progress goes to a terminal's stderr;\n"
"      ^C stops only the watching.  --json prints the final status\n"
"      {\"state\", \"number\", \"uuid\", \"chunks\", \"examined\",\n"
"      \"moved\", \"error\"}.  Afterwards \"diff N volume\" compares\n"
"      contents where the maps name a chunk, so it is empty right after.\n"
"\n"
"Options:\n"
"  --run-dir DIR   the run dir of the fssnapd to talk to (its control.sock).\n"
"                  May be left out when exactly one fssnapd runs under\n"
"                  /run/fssnap.\n"
"  --run-root DIR  look for fssnapd run dirs under DIR instead of\n"
"                  /run/fssnap (without --run-dir, and for the volumes of\n"
"                  create --mount A --mount B).\n"
"  -h, --help      show this help and exit.\n"
"  -V, --version   show the version and exit.\n"
"\n"
"Snapshot numbers are reused after a delete; the UUID shown by list and\n"
"info tells a new snapshot from an old one with the same number.\n"
"\n"
"Exit status:\n"
"  0  success\n"
"  1  bad command line or option value (nothing was sent)\n"
"  2  fssnapd unreachable: none running, several and no --run-dir, no\n"
"     permission on its socket, or no valid reply\n"
"  3  no such snapshot (or clone)\n"
"  4  fssnapd refused the request (the message says why)\n"
"  5  diff: the change maps cannot be trusted for this pair; take a full\n"
"     copy\n"
"  6  diff: bad arguments after \"diff\" (for diff, 1 means \"differs\")\n"
"  7  scrub: the file system has errors\n"
"  8  scrub: e2fsck (xfs_repair) could not check the file system\n"
"  125, 126, 127, 128+N, or CMD's status: exec (see above)\n"
"Each error is one line on stderr starting with \"fssnap: \".  diff exits\n"
"like cmp: 0 when nothing differs, 1 when something may (with no line on\n"
"stderr), anything else on trouble.\n";

static const struct cli_command {
  const char *name;
  int (*run) (struct cli *cli, int argc, char **argv);
} cli_commands[] = {
  { "create", cli_cmd_create },
  { "delete", cli_cmd_delete },
  { "list", cli_cmd_list },
  { "info", cli_cmd_info },
  { "stats", cli_cmd_stats },
  { "diff", cli_cmd_diff },
  { "rollback", cli_cmd_rollback },
  { "clone", cli_cmd_clone },
  { "delete-clone", cli_cmd_delete_clone },
  { "scrub", cli_cmd_scrub },
  { "attach", cli_cmd_attach },
  { "detach", cli_cmd_detach },
  { "mount", cli_cmd_mount },
  { "umount", cli_cmd_umount },
  { "exec", cli_cmd_exec },
};

static const struct option cli_options[] = {
  { "run-dir", required_argument, NULL, 'r' },
  { "run-root", required_argument, NULL, 'R' },
  { "help", no_argument, NULL, 'h' },
  { "version", no_argument, NULL, 'V' },
  { NULL, 0, NULL, 0 },
};

int
main (int argc, char **argv)
{
  struct cli cli = { .run_dir = NULL };
  size_t i;
  int c;

  opterr = 0;                   /* one message per error, ours */
  while ((c = getopt_long (argc, argv, "+:hV", cli_options, NULL)) != -1) {
    switch (c) {
    case 'r': cli.run_dir = optarg; break;
    case 'R': cli.run_root = optarg; break;
    case 'h': fputs (cli_usage, stdout); return CLI_EXIT_OK;
    case 'V': printf ("fssnap %s\n", FSSNAP_VERSION); return CLI_EXIT_OK;
    default:
      return cli_bad_option (c, argv);
    }
  }
  if (optind == argc)
    return cli_error (CLI_EXIT_USAGE, "no command given (see fssnap --help)");
  for (i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++)
    if (strcmp (argv[optind], cli_commands[i].name) == 0) {
      char **sub = argv + optind;
      int subc = argc - optind;
      optind = 0;               /* restart getopt for the subcommand */
      return cli_commands[i].run (&cli, subc, sub);
    }
  return cli_error (CLI_EXIT_USAGE, "unknown command \"%s\" (see fssnap "
                    "--help)", argv[optind]);
}
