/* SPDX-License-Identifier: MIT */
/*
 * Internals of the fssnap command-line tool: the exit codes it documents,
 * the connection to fssnapd's control socket and one function per
 * subcommand.
 */
#ifndef FSSNAP_CLI_H
#define FSSNAP_CLI_H

#include <json-c/json.h>

/* Exit codes, documented in fssnap --help. */
enum cli_exit {
  CLI_EXIT_OK = 0,
  CLI_EXIT_USAGE = 1,           /* bad command line or option value */
  CLI_EXIT_UNREACHABLE = 2,     /* no fssnapd found, or it did not answer */
  CLI_EXIT_NOSNAP = 3,          /* no such snapshot */
  CLI_EXIT_REFUSED = 4,         /* fssnapd refused the request */
  CLI_EXIT_UNTRUSTED = 5,       /* diff: the change maps cannot be trusted */
  CLI_EXIT_DIFF_USAGE = 6,      /* diff: bad arguments (1 means "differs") */
  CLI_EXIT_FS_ERRORS = 7,       /* scrub: e2fsck found errors */
  CLI_EXIT_CHECK_FAILED = 8,    /* scrub: e2fsck could not check */
  /* exec: fssnap's own failure, so that CMD's codes stay CMD's. */
  CLI_EXIT_EXEC_FAILED = 125,
  CLI_EXIT_EXEC_CANNOT_RUN = 126,       /* CMD found but not executable */
  CLI_EXIT_EXEC_NOT_FOUND = 127,        /* CMD not found */
};
/* diff exits like cmp: 0 (CLI_EXIT_OK) no difference, 1 differs. */
#define CLI_EXIT_DIFFERS 1

struct cli {
  const char *run_dir;          /* NULL: find the one fssnapd under /run */
  const char *run_root;         /* where to look: /run/fssnap by default */
};

/* The directory whose subdirectories are run dirs (--run-root). */
const char *cli_run_root (const struct cli *cli);
/* Connect to DIR/control.sock: the fd, or a negative errno. */
int cli_connect_dir (const char *dir);

/* Print "fssnap: MSG" on stderr and return code. */
int cli_error (int code, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* After getopt (with ':' leading its option string) returned c, '?' or
 * ':': one line naming the bad option; returns CLI_EXIT_USAGE.
 */
int cli_bad_option (int c, char **argv);

/* The run dir of the fssnapd to talk to: --run-dir, or the one found
 * under /run/fssnap.  Returns an exit code after a message.
 */
int cli_run_dir (struct cli *cli, char *dir, size_t len);

/* Send req (consumed) to fssnapd and wait for the reply.  Returns
 * CLI_EXIT_OK with the reply in *replyp (the caller puts it), or the exit
 * code after printing why: unreachable, no such snapshot (ENOENT for a
 * request with a "number" or an "a"), refused, untrusted (ESTALE).
 */
int cli_request (struct cli *cli, json_object *req, json_object **replyp);

/* A snapshot number from the command line, or -1 after a message. */
long cli_parse_number (const char *arg);
/* Parse [--json] (only if json is non-NULL) and at most max_args operands,
 * which are left at argv[optind...].
 */
int cli_simple_args (int argc, char **argv, int *json, int max_args);

/* Append arg, a -o argument of create, to *optstr (malloc'd, joined with
 * commas) after checking it with fssnapd's own parser.
 */
int cli_add_options (char **optstr, const char *arg);

/* Print a JSON value, pretty, on stdout. */
void cli_print_json (json_object *obj);
/* The value of obj[key] as text ("-" when absent); valid while obj is. */
const char *cli_field (json_object *obj, const char *key);
/* obj's "create_time" formatted with strftime's fmt in local time. */
void cli_format_time (json_object *obj, const char *fmt, char *buf,
                      size_t len);

/* Subcommands: argv[0] is the subcommand's name.  Each returns an exit
 * code.
 */
int cli_cmd_create (struct cli *cli, int argc, char **argv);
int cli_cmd_delete (struct cli *cli, int argc, char **argv);
int cli_cmd_list (struct cli *cli, int argc, char **argv);
int cli_cmd_info (struct cli *cli, int argc, char **argv);
int cli_cmd_stats (struct cli *cli, int argc, char **argv);
int cli_cmd_diff (struct cli *cli, int argc, char **argv);
int cli_cmd_mount (struct cli *cli, int argc, char **argv);
int cli_cmd_umount (struct cli *cli, int argc, char **argv);
int cli_cmd_exec (struct cli *cli, int argc, char **argv);
int cli_cmd_rollback (struct cli *cli, int argc, char **argv);
int cli_cmd_clone (struct cli *cli, int argc, char **argv);
int cli_cmd_delete_clone (struct cli *cli, int argc, char **argv);
int cli_cmd_scrub (struct cli *cli, int argc, char **argv);
/* The run dir (under the run root) of the fssnapd whose volume holds the
 * file system mounted on mount: its device is one the daemon names, or a
 * loop device over its device file.  An exit code, after a message.
 */
int cli_find_volume_daemon (struct cli *cli, const char *mount,
                            char *run_dir, size_t len);
/* create --mount A --mount B...: one snapshot per volume, in one instant
 * (cli/group.c).
 */
int cli_create_group (struct cli *cli, char **mounts, size_t n,
                      const char *optstr, int json);
/* The clones of a list reply, as a table after the snapshots. */
void cli_print_clones (json_object *clones);
/* fssnap info clone/K [--json]. */
int cli_clone_info (struct cli *cli, const char *arg, int json);

#endif /* FSSNAP_CLI_H */
