/* SPDX-License-Identifier: MIT */
/*
 * Start-up steps of fssnapd that touch the file system: locking the origin,
 * taking the run dir, binding the sockets, going to the background and the
 * pidfile.  Each returns 0, or -1 with a one-line reason in err (without the
 * "fssnapd: " prefix) for main to print before exiting 1.
 */
#ifndef FSSNAP_DAEMON_SETUP_H
#define FSSNAP_DAEMON_SETUP_H

#include <stddef.h>
#include <sys/types.h>

/* The sockets fssnapd makes in its run dir. */
#define DAEMON_NBD_SOCKET "nbd.sock"
#define DAEMON_CTL_SOCKET "control.sock"

/* path made absolute against the current directory (malloc'd), so that it
 * still works after the daemon changes to "/".
 */
char *daemon_abspath (const char *path);
/* mkdir -p with this mode for the directories it creates. */
int daemon_mkdirs (const char *dir, mode_t mode, char *err, size_t errlen);

/* Open the origin (a regular file or block device) read-write and take an
 * exclusive flock on it, held for as long as *fdp stays open: a second
 * fssnapd on the same origin finds it locked.  A block device is opened
 * O_EXCL; one that is mounted, held, swapped on or backs a loop device
 * (itself or its whole disk or partitions), or an image that backs a loop
 * device, is refused (claim.h).
 */
int daemon_origin_lock (const char *path, int *fdp, char *err, size_t errlen);

/* Create the run dir if needed and lock RUN_DIR/fssnapd.lock; refuse if a
 * live fssnapd holds it or something still answers on its sockets.  Stale
 * sockets of a dead daemon are removed.  The lock holds while *fdp is open.
 */
int daemon_rundir_take (const char *dir, int *fdp, char *err, size_t errlen);
/* Record pid in the run dir's lock file (for the "in use" message). */
void daemon_rundir_set_pid (int lockfd, pid_t pid);
/* Remove the sockets fssnapd made in the run dir. */
void daemon_rundir_clean (const char *dir);

/* A listening unix socket at path with this mode. */
int daemon_listen_unix (const char *path, mode_t mode, int *fdp,
                        char *err, size_t errlen);
/* Listening TCP sockets for "PORT", ":PORT", "HOST:PORT" or "[V6]:PORT";
 * the host defaults to loopback.  Up to max fds go to fds[], their number
 * to *nfdsp.
 */
int daemon_listen_tcp (const char *spec, int *fds, size_t max, size_t *nfdsp,
                       char *err, size_t errlen);

/* Go to the background: double fork, new session, cwd "/", stdin from
 * /dev/null.  The original process waits and exits with the status the
 * daemon passes to daemon_background_done (1 if it dies first); stderr stays
 * open until then so start-up errors reach the terminal.  Returns in the
 * daemon only.
 */
int daemon_background (int *notifyfdp, char *err, size_t errlen);
/* Tell the waiting parent how start-up went (0 ready, else the exit code),
 * then point stdout and stderr at /dev/null.
 */
void daemon_background_done (int notifyfd, int status);

int daemon_pidfile_write (const char *path, char *err, size_t errlen);

#endif /* FSSNAP_DAEMON_SETUP_H */
