/* SPDX-License-Identifier: MIT */
/*
 * fssnapd: serves one origin (image file or block device) and its
 * snapshots.  This file only reads the options and wires the parts
 * together; start-up runs in this order:
 *
 *   lock the origin -> take the run dir -> bind the sockets -> background
 *   -> pidfile -> open the engine -> start each frontend -> report ready
 *
 * Everything that can refuse (missing origin, origin already served, run
 * dir in use, address taken) happens before going to the background, so the
 * user sees the reason and exit code 1.  Signals are blocked in every
 * thread; the main thread waits for SIGTERM/SIGINT and then stops the
 * frontends in reverse order, flushes and closes the origin.
 *
 * Frontends are a table (daemon_frontends below): a new way to reach the
 * engine is one start and one stop function and one line in the table.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libfssnap.h"
#include "common/size.h"
#include "control/proto.h"
#include "control/server.h"
#include "daemon/claim.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/rollback.h"
#include "daemon/setup.h"
#include "daemon/ublk.h"
#include "fs/fs.h"
#include "fs/loop.h"
#include "fuse/devfs.h"
#include "nbd/nbd.h"
#include "nbd/tls.h"

#define DAEMON_MAX_TCP 8
#define DAEMON_ERRLEN  512

struct daemon {
  /* Options. */
  char *origin_path;
  char *run_dir;
  char *state_dir;
  char *pidfile;
  const char *listen[DAEMON_MAX_TCP];
  size_t nlisten;
  uint32_t chunksize;
  bool foreground;
  bool syslog;
  bool no_fuse;
  int tls_mode;                 /* enum nbd_tls, or -1: not given */
  struct tls_config tls;
  bool ublk;

  /* Held from start-up to exit. */
  int origin_lock_fd;           /* handed to the engine at start */
  int rundir_lock_fd;
  int notify_fd;                /* to the waiting parent; -1 in foreground */
  int nbd_fds[1 + DAEMON_MAX_TCP * 4];
  size_t nnbd_fds;
  int ctl_fd;
  struct fssnap_origin *origin;
  struct fssnap_clones *clones;  /* opened after the origin, closed before */

  /* Frontends. */
  struct nbd_server *nbd;
  struct devfs *devfs;
  struct daemon_ublk *ublk_devs;
  struct ctl_server *ctl;
  struct rollback_job rollback;
  struct tls_creds *tls_creds;  /* loaded before the fork */
  struct ctl_context ctl_ctx;
  struct fs_candidates_ctx fs_ctx;      /* the engine calls it serially */
  struct claim_watch watch;             /* the lease on an image origin */
  char volume_file[PATH_MAX];           /* RUN_DIR/dev/volume */
  const char *volume_files[3];          /* fs_ctx.volume_files */
};

static const char daemon_usage[] =
"Usage: fssnapd [OPTIONS] ORIGIN\n"
"\n"
"Serve ORIGIN (an image file or block device) and its point-in-time\n"
"copy-on-write snapshots.  The live volume is the NBD export \"volume\" (also\n"
"the default export); snapshot N is the read-only export \"snap/N\".\n"
"Snapshots are created, listed and deleted with fssnap(8) through the\n"
"control socket.  Every write to ORIGIN must go through fssnapd: a write\n"
"that bypasses it makes the snapshots inconsistent.\n"
"\n"
"Options:\n"
"  --run-dir DIR       sockets go here: DIR/nbd.sock (NBD) and DIR/control.sock\n"
"                      (control), both mode 0600: the volume is as private\n"
"                      as a block device.  Default: /run/fssnap/NAME, where\n"
"                      NAME is the basename of ORIGIN.\n"
"  --state-dir DIR     snapshot metadata and, unless backing-store= says\n"
"                      otherwise, backing stores.  Default:\n"
"                      /var/lib/fssnap/NAME.  At start fssnapd reopens the\n"
"                      snapshots recorded here (transient ones are gone).\n"
"  --listen HOST:PORT  also serve NBD over TCP (may be repeated).  HOST\n"
"                      defaults to loopback (\":10809\" or \"10809\"); use\n"
"                      \"[::]:PORT\" or \"0.0.0.0:PORT\" for every interface.\n"
"                      Without this option fssnapd never listens on TCP.\n"
"  --tls=off|on|require\n"
"                      TLS (NBD_OPT_STARTTLS) on the NBD sockets.  off:\n"
"                      plaintext only; on: TLS offered, plaintext clients\n"
"                      served too; require: a client must start TLS before\n"
"                      anything else (every other option is refused with\n"
"                      NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME disconnects).\n"
"                      Given explicitly, the mode applies to every NBD\n"
"                      socket, RUN_DIR/nbd.sock included (clients then use\n"
"                      nbds+unix://).  Default: require on the --listen\n"
"                      sockets and off on RUN_DIR/nbd.sock, which is mode\n"
"                      0600 and never leaves the host; so --listen needs\n"
"                      --tls-psk or --tls-certificates, or --tls=off for a\n"
"                      plaintext network export.  Whatever a client\n"
"                      negotiated before STARTTLS is forgotten after it.\n"
"  --tls-psk=FILE      pre-shared keys, one \"user:hexkey\" line per client,\n"
"                      as psktool(1) writes them (psktool -u USER -p FILE).\n"
"                      The client names the user (nbds://USER@HOST/...).\n"
"  --tls-certificates=DIR\n"
"                      X.509: DIR holds ca-cert.pem, server-cert.pem,\n"
"                      server-key.pem and optionally ca-crl.pem (as nbdkit\n"
"                      and qemu-nbd expect).  Not with --tls-psk.\n"
"  --tls-verify-peer   with --tls-certificates: a client must present a\n"
"                      certificate signed by ca-cert.pem (and not revoked).\n"
"                      A client that fails TLS is disconnected and logged.\n"
"  --ublk              also serve the volume (read-write), every snapshot\n"
"                      (read-only) and every writable clone as ublk block\n"
"                      devices /dev/ublkbK, named /dev/fssnap/NAME/volume,\n"
"                      /dev/fssnap/NAME/snap/N and /dev/fssnap/NAME/clone/K\n"
"                      (NAME: the basename of ORIGIN); snapshots and clones\n"
"                      created or deleted later get or lose theirs.  Needs Linux's\n"
"                      ublk driver (6.0 or later; modprobe ublk_drv): without\n"
"                      it fssnapd refuses to start.  The devices survive\n"
"                      fssnapd: after a crash or kill -9 the same command\n"
"                      (same --state-dir, where their ids are kept) takes\n"
"                      them over, and I/O held meanwhile resumes, so a file\n"
"                      system mounted on them sees no error.  On SIGTERM a\n"
"                      device nobody uses is deleted; one that is mounted or\n"
"                      open is left for the next fssnapd (its I/O waits).\n"
"  --no-fuse           do not mount the device files RUN_DIR/dev/volume and\n"
"                      RUN_DIR/dev/snap/N (FUSE; for losetup and fssnap\n"
"                      attach).\n"
"  --chunksize SIZE    copy-on-write granularity for an origin without\n"
"                      snapshots: a power of two from 512 to 1m (suffixes\n"
"                      k, m, g, t).  Default: set by the first snapshot, 64k.\n"
"  -f, --foreground    stay in the foreground; log to stderr.\n"
"  --pidfile FILE      write the daemon's pid to FILE (removed at exit).\n"
"  --syslog            log to syslog (facility daemon) instead of stderr.\n"
"                      In the background fssnapd always logs to syslog once\n"
"                      it has started; start-up errors go to stderr.\n"
"  -v, --verbose       log debug messages too.\n"
"  -h, --help          show this help and exit.\n"
"  -V, --version       show the version and exit.\n"
"\n"
"fssnapd refuses to start, with one line on stderr, when ORIGIN is missing\n"
"or cannot be opened read-write, is already served by another fssnapd\n"
"(it holds an flock on ORIGIN), is in use (below), the run dir belongs to\n"
"a live fssnapd, TLS is asked for without usable credentials (a\n"
"missing or malformed key file, a certificate that does not match its\n"
"key), or --ublk is given on a kernel without the ublk driver.\n"
"Sockets left behind by a dead fssnapd are removed.  Messages start\n"
"with \"fssnapd: \".\n"
"\n"
"The origin is fssnapd's alone.  A block device is opened with O_EXCL, the\n"
"kernel's exclusive claim: one that is mounted, held by device-mapper or\n"
"md, used as swap or claimed by another program is refused with a line\n"
"naming what holds it (\"origin DEV is in use: mounted on /mnt (unmount\n"
"it first: umount /mnt)\"), and so is one whose whole disk or partition\n"
"is, or that backs a loop device (a loop device does not claim its\n"
"backing device).  While fssnapd serves it, mount, mkfs, dmsetup and swapon\n"
"of the device, its partitions or its whole disk fail with EBUSY; a\n"
"program that opens it without O_EXCL (dd, losetup) is not stopped, but a\n"
"loop device set up on it is logged and counted (\"Origin opened\n"
"elsewhere\" in fssnap stats) within two seconds.\n"
"An image file that backs a loop device is refused.  Otherwise fssnapd\n"
"holds a write lease on it (F_SETLEASE): when another program opens the\n"
"image (losetup, mount -o loop, cp, dd) fssnapd logs a warning at once,\n"
"counts it (\"Origin opened elsewhere\" in fssnap stats), lets the open go\n"
"on, and takes the lease again once no other program has the image open\n"
"for writing.  Where no lease can be had (a file system without leases,\n"
"or an unprivileged fssnapd on a file it does not own) it logs that the\n"
"image cannot be watched.\n"
"\n"
"Signals: SIGTERM or SIGINT stops accepting clients, lets requests in\n"
"flight finish, flushes the origin and exits 0.  With --ublk, devices in\n"
"use stay (see --ublk): unmount first to stop for good.\n"
"\n"
"Exit status: 0 after a clean stop, 1 when it could not start (bad\n"
"options included).\n"
"\n"
"Example:\n"
"  fssnapd --run-dir /run/fssnap/disk disk.img\n"
"  nbdinfo 'nbd+unix:///volume?socket=/run/fssnap/disk/nbd.sock'\n"
"  fssnap --run-dir /run/fssnap/disk create\n"
"\n"
"  psktool -u backup -p /etc/fssnap/keys.psk\n"
"  fssnapd --listen 0.0.0.0:10809 --tls-psk=/etc/fssnap/keys.psk disk.img\n"
"  nbdcopy 'nbds://backup@HOST/snap/0?tls-psk-file=keys.psk' backup.img\n"
"  fssnapd --ublk disk.img && mount /dev/fssnap/disk.img/volume /mnt\n";

enum { OPT_RUN_DIR = 256, OPT_STATE_DIR, OPT_LISTEN, OPT_CHUNKSIZE,
       OPT_PIDFILE, OPT_SYSLOG, OPT_NO_FUSE, OPT_TLS, OPT_TLS_PSK,
       OPT_TLS_CERTS, OPT_TLS_VERIFY, OPT_UBLK };

static const struct option daemon_options[] = {
  { "run-dir", required_argument, NULL, OPT_RUN_DIR },
  { "state-dir", required_argument, NULL, OPT_STATE_DIR },
  { "listen", required_argument, NULL, OPT_LISTEN },
  { "chunksize", required_argument, NULL, OPT_CHUNKSIZE },
  { "foreground", no_argument, NULL, 'f' },
  { "pidfile", required_argument, NULL, OPT_PIDFILE },
  { "syslog", no_argument, NULL, OPT_SYSLOG },
  { "no-fuse", no_argument, NULL, OPT_NO_FUSE },
  { "tls", required_argument, NULL, OPT_TLS },
  { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
  { "tls-certificates", required_argument, NULL, OPT_TLS_CERTS },
  { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY },
  { "ublk", no_argument, NULL, OPT_UBLK },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { "version", no_argument, NULL, 'V' },
  { NULL, 0, NULL, 0 },
};

static void __attribute__ ((noreturn))
daemon_die (const char *fmt, ...)
{
  char msg[DAEMON_ERRLEN];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  fprintf (stderr, "fssnapd: %s\n", msg);
  exit (1);
}

static uint32_t
daemon_parse_chunksize (const char *arg)
{
  uint64_t v;

  if (size_parse (arg, &v) < 0 || v < FSSNAP_CHUNKSIZE_MIN
      || v > FSSNAP_CHUNKSIZE_MAX || (v & (v - 1)) != 0)
    daemon_die ("bad --chunksize \"%s\": a power of two from 512 to 1m is "
                "needed", arg);
  return (uint32_t) v;
}

/* "/run/fssnap/NAME" for the default run and state dirs. */
static char *
daemon_default_dir (const char *parent, const char *origin)
{
  const char *slash = strrchr (origin, '/');
  const char *name = slash ? slash + 1 : origin;
  char *dir;

  if (!*name)
    daemon_die ("cannot name a default directory after \"%s\"", origin);
  if (asprintf (&dir, "%s/%s", parent, name) < 0)
    daemon_die ("out of memory");
  return dir;
}

static char *
daemon_abs_or_die (const char *path)
{
  char *abs = daemon_abspath (path);

  if (!abs)
    daemon_die ("out of memory");
  return abs;
}

static int
daemon_parse_tls (const char *arg)
{
  if (strcmp (arg, "off") == 0)
    return NBD_TLS_OFF;
  if (strcmp (arg, "on") == 0)
    return NBD_TLS_ON;
  if (strcmp (arg, "require") == 0)
    return NBD_TLS_REQUIRE;
  daemon_die ("bad --tls \"%s\": off, on or require is needed", arg);
}

/* The TLS policy of the unix socket and of the TCP sockets. */
static enum nbd_tls
daemon_tls_unix (const struct daemon *d)
{
  return d->tls_mode >= 0 ? (enum nbd_tls) d->tls_mode : NBD_TLS_OFF;
}

static enum nbd_tls
daemon_tls_tcp (const struct daemon *d)
{
  return d->tls_mode >= 0 ? (enum nbd_tls) d->tls_mode : NBD_TLS_REQUIRE;
}

/* The TLS options must agree with each other before anything is loaded. */
static void
daemon_check_tls (const struct daemon *d)
{
  bool creds = d->tls.psk_file || d->tls.cert_dir;
  bool used = daemon_tls_unix (d) != NBD_TLS_OFF
              || (d->nlisten > 0 && daemon_tls_tcp (d) != NBD_TLS_OFF);

  if (d->tls.psk_file && d->tls.cert_dir)
    daemon_die ("--tls-psk and --tls-certificates exclude each other");
  if (d->tls.verify_peer && !d->tls.cert_dir)
    daemon_die ("--tls-verify-peer needs --tls-certificates");
  if (used && !creds)
    daemon_die ("TLS is %s but has no credentials: give --tls-psk=FILE or "
                "--tls-certificates=DIR (or --tls=off for plaintext)",
                d->tls_mode >= 0 ? "asked for" : "required on --listen "
                                                 "sockets by default");
  if (creds && !used)
    daemon_die ("TLS credentials given but TLS is off on every socket "
                "(use --tls=on or --tls=require, or --listen)");
}

static void
daemon_parse_options (struct daemon *d, int argc, char **argv)
{
  int c;

  opterr = 0;                   /* one message per error, ours */
  while ((c = getopt_long (argc, argv, ":fvhV", daemon_options, NULL)) != -1) {
    switch (c) {
    case OPT_RUN_DIR: d->run_dir = daemon_abs_or_die (optarg); break;
    case OPT_STATE_DIR: d->state_dir = daemon_abs_or_die (optarg); break;
    case OPT_LISTEN:
      if (d->nlisten == DAEMON_MAX_TCP)
        daemon_die ("at most %d --listen options", DAEMON_MAX_TCP);
      d->listen[d->nlisten++] = optarg;
      break;
    case OPT_CHUNKSIZE: d->chunksize = daemon_parse_chunksize (optarg); break;
    case 'f': d->foreground = true; break;
    case OPT_PIDFILE: d->pidfile = daemon_abs_or_die (optarg); break;
    case OPT_SYSLOG: d->syslog = true; break;
    case OPT_NO_FUSE: d->no_fuse = true; break;
    case OPT_TLS: d->tls_mode = daemon_parse_tls (optarg); break;
    case OPT_TLS_PSK: d->tls.psk_file = daemon_abs_or_die (optarg); break;
    case OPT_TLS_CERTS: d->tls.cert_dir = daemon_abs_or_die (optarg); break;
    case OPT_TLS_VERIFY: d->tls.verify_peer = true; break;
    case OPT_UBLK: d->ublk = true; break;
    case 'v': daemon_log_set_level (FSSNAP_LOG_DEBUG); break;
    case 'h': fputs (daemon_usage, stdout); exit (0);
    case 'V': printf ("fssnapd %s\n", FSSNAP_VERSION); exit (0);
    case ':':
      daemon_die ("option \"%s\" needs a value", argv[optind - 1]);
    default:
      if (optopt)
        daemon_die ("unknown option \"-%c\" (see fssnapd --help)", optopt);
      daemon_die ("unknown option \"%s\" (see fssnapd --help)",
                  argv[optind - 1]);
    }
  }
  if (optind != argc - 1)
    daemon_die (optind == argc ? "no ORIGIN given (see fssnapd --help)"
                               : "one ORIGIN only (see fssnapd --help)");
  d->origin_path = daemon_abs_or_die (argv[optind]);
  daemon_check_tls (d);
  if (!d->run_dir)
    d->run_dir = daemon_default_dir ("/run/fssnap", d->origin_path);
  if (!d->state_dir)
    d->state_dir = daemon_default_dir ("/var/lib/fssnap", d->origin_path);
}

/* Everything that may refuse to start, before going to the background. */
static void
daemon_claim (struct daemon *d)
{
  char err[DAEMON_ERRLEN], path[PATH_MAX];
  size_t i, n;

  if ((d->tls.psk_file || d->tls.cert_dir)
      && tls_creds_load (&d->tls, &d->tls_creds, err, sizeof err) < 0)
    daemon_die ("%s", err);
  if (daemon_origin_lock (d->origin_path, &d->origin_lock_fd,
                          err, sizeof err) < 0
      || daemon_rundir_take (d->run_dir, &d->rundir_lock_fd,
                             err, sizeof err) < 0
      || daemon_mkdirs (d->state_dir, 0700, err, sizeof err) < 0
      || (d->ublk && daemon_ublk_probe (err, sizeof err) < 0))
    daemon_die ("%s", err);
  snprintf (path, sizeof path, "%s/%s", d->run_dir, DAEMON_NBD_SOCKET);
  if (daemon_listen_unix (path, 0600, &d->nbd_fds[0], err, sizeof err) < 0)
    daemon_die ("%s", err);
  d->nnbd_fds = 1;
  for (i = 0; i < d->nlisten; i++) {
    if (daemon_listen_tcp (d->listen[i], d->nbd_fds + d->nnbd_fds,
                           sizeof d->nbd_fds / sizeof d->nbd_fds[0]
                             - d->nnbd_fds, &n, err, sizeof err) < 0) {
      daemon_rundir_clean (d->run_dir);
      daemon_die ("%s", err);
    }
    d->nnbd_fds += n;
  }
  snprintf (path, sizeof path, "%s/%s", d->run_dir, DAEMON_CTL_SOCKET);
  if (daemon_listen_unix (path, 0600, &d->ctl_fd, err, sizeof err) < 0) {
    daemon_rundir_clean (d->run_dir);
    daemon_die ("%s", err);
  }
}

/* ---- Frontends --------------------------------------------------------- */

static int
daemon_start_nbd (struct daemon *d)
{
  struct nbd_server_opts opts = { .origin = d->origin,
                                  .clones = d->clones,
                                  .log = daemon_log_engine,
                                  .tls_creds = d->tls_creds };
  size_t i;
  int r;

  r = nbd_server_new (&opts, &d->nbd);
  for (i = 0; r == 0 && i < d->nnbd_fds; i++) {
    /* nbd_fds[0] is RUN_DIR/nbd.sock, the rest TCP. */
    r = nbd_server_add_listener_tls (d->nbd, d->nbd_fds[i],
                                     i == 0 ? daemon_tls_unix (d)
                                            : daemon_tls_tcp (d));
    d->nbd_fds[i] = -1;         /* the server owns it now */
  }
  return r;
}

static void
daemon_stop_nbd (struct daemon *d)
{
  nbd_server_stop (d->nbd);
  nbd_server_free (d->nbd);
  d->nbd = NULL;
  tls_creds_free (d->tls_creds);
  d->tls_creds = NULL;
}

/* The device files on RUN_DIR/dev, unless --no-fuse. */
static int
daemon_start_fuse (struct daemon *d)
{
  struct devfs_opts opts = { .origin = d->origin,
                             .clones = d->clones,
                             .log = daemon_log_engine };
  char dir[PATH_MAX];

  if (d->no_fuse)
    return 0;
  snprintf (dir, sizeof dir, "%s/dev", d->run_dir);
  opts.mountdir = dir;
  return devfs_start (&opts, &d->devfs);
}

static void
daemon_stop_fuse (struct daemon *d)
{
  if (d->devfs)
    devfs_stop (d->devfs);
  d->devfs = NULL;
}

/* The ublk block devices, with --ublk (daemon/ublk.c). */
static int
daemon_start_ublk (struct daemon *d)
{
  const char *slash = strrchr (d->origin_path, '/');
  char err[DAEMON_ERRLEN];
  int r;

  if (!d->ublk)
    return 0;
  r = daemon_ublk_start (d->origin, d->clones, d->state_dir,
                         slash ? slash + 1 : d->origin_path,
                         daemon_log_engine, &d->ublk_devs, err, sizeof err);
  if (r < 0)
    daemon_log (FSSNAP_LOG_ERR, "%s", err);
  return r;
}

static void
daemon_stop_ublk (struct daemon *d)
{
  daemon_ublk_stop (d->ublk_devs);
  d->ublk_devs = NULL;
}

/* ---- Device names ------------------------------------------------------ */

/* Each frontend names the devices it serves for target (FSSNAP_VOLUME or a
 * snapshot number), and only those.
 */
static void
daemon_fuse_devices (struct daemon *d, int target, ctl_device_fn fn,
                     void *arg)
{
  char path[PATH_MAX];

  if (!d->devfs)
    return;
  if (target == FSSNAP_VOLUME)
    snprintf (path, sizeof path, "%s/dev/volume", d->run_dir);
  else
    snprintf (path, sizeof path, "%s/dev/snap/%d", d->run_dir, target);
  fn (arg, "fuse", path);
}

static void
daemon_ublk_names (struct daemon *d, int target, ctl_device_fn fn, void *arg)
{
  daemon_ublk_devices (d->ublk_devs, target, fn, arg);
}

static void
daemon_nbd_devices (struct daemon *d, int target, ctl_device_fn fn,
                    void *arg)
{
  char uri[PATH_MAX + 64];

  if (!d->nbd)
    return;
  if (target == FSSNAP_VOLUME)
    snprintf (uri, sizeof uri, "nbd+unix:///volume?socket=%s/%s",
              d->run_dir, DAEMON_NBD_SOCKET);
  else
    snprintf (uri, sizeof uri, "nbd+unix:///snap/%d?socket=%s/%s", target,
              d->run_dir, DAEMON_NBD_SOCKET);
  fn (arg, "nbd", uri);
}

/* The frontends that name devices, the one a user should open first
 * first: block devices, then device files, then NBD.
 */
static void (*const daemon_device_namers[]) (struct daemon *, int,
                                             ctl_device_fn, void *) = {
  daemon_ublk_names,
  daemon_fuse_devices,
  daemon_nbd_devices,
};

/* Clones, in the same order: ublk, FUSE, NBD. */
static void
daemon_clone_devices (void *opaque, unsigned num, ctl_device_fn fn,
                      void *arg)
{
  struct daemon *d = opaque;
  char name[PATH_MAX + 64];

  daemon_ublk_clone_devices (d->ublk_devs, num, fn, arg);
  if (d->devfs) {
    snprintf (name, sizeof name, "%s/dev/clone/%u", d->run_dir, num);
    fn (arg, "fuse", name);
  }
  if (d->nbd) {
    snprintf (name, sizeof name, "nbd+unix:///clone/%u?socket=%s/%s", num,
              d->run_dir, DAEMON_NBD_SOCKET);
    fn (arg, "nbd", name);
  }
}

/* ctl_context.devices: every frontend's names for target. */
static void
daemon_devices (void *opaque, int target, ctl_device_fn fn, void *arg)
{
  size_t i;

  for (i = 0; i < sizeof daemon_device_namers
                  / sizeof daemon_device_namers[0]; i++)
    daemon_device_namers[i] (opaque, target, fn, arg);
}

#define DAEMON_MAX_VOLUME_FILES 8

struct daemon_files {
  char names[DAEMON_MAX_VOLUME_FILES][PATH_MAX];
  const char *files[DAEMON_MAX_VOLUME_FILES + 2];
  size_t n;
};

/* Keep the names that are paths (block devices, device files). */
static void
daemon_collect_file (void *arg, const char *frontend, const char *name)
{
  struct daemon_files *f = arg;

  (void) frontend;
  if (name[0] != '/' || f->n == DAEMON_MAX_VOLUME_FILES)
    return;
  snprintf (f->names[f->n], sizeof f->names[f->n], "%s", name);
  f->files[f->n] = f->names[f->n];
  f->n++;
}

/* Refuse a backing store on the volume (through any of its devices, or on
 * the origin itself): it would copy into itself.
 */
static int
daemon_check_create (void *opaque, const struct fssnap_create_opts *opts,
                     char *err, size_t errlen)
{
  struct daemon *d = opaque;
  struct daemon_files *f;
  int r;

  if (rollback_job_running (&d->rollback)) {
    snprintf (err, errlen, "a rollback is running: wait for it to finish");
    return -EBUSY;
  }
  f = calloc (1, sizeof *f);
  if (!f)
    return -ENOMEM;
  daemon_devices (d, FSSNAP_VOLUME, daemon_collect_file, f);
  f->files[f->n] = d->origin_path;
  r = loop_store_check (opts->backing_store ? opts->backing_store
                                            : d->state_dir,
                        f->files, err, errlen);
  free (f);
  return r;
}

/* ---- Rollback ---------------------------------------------------------- */

/* ctl_context.rollback: refuse while the volume is in use, unless force. */
static int
daemon_rollback (void *opaque, unsigned num, bool force, char *err,
                 size_t errlen)
{
  struct daemon *d = opaque;
  struct fssnap_snapshot_info info, pinfo;
  char uuid[FSSNAP_UUID_STRLEN];
  struct daemon_files *f;
  unsigned pending;
  int r = fssnap_snapshot_info (d->origin, num, &info);

  if (r == -ENOENT) {
    snprintf (err, errlen, "no snapshot %u", num);
    return r;
  }
  if (fssnap_rollback_pending (d->origin, d->state_dir, &pending, uuid) == 1
      && (pending != num || strcmp (uuid, info.uuid) != 0)
      && fssnap_snapshot_info (d->origin, pending, &pinfo) == 0
      && strcmp (pinfo.uuid, uuid) == 0
      && !rollback_job_running (&d->rollback)) {
    snprintf (err, errlen, "a rollback to snapshot %u (uuid %s) is "
              "unfinished: run \"fssnap rollback %u\" first", pending, uuid,
              pending);
    return -EBUSY;
  }
  r = 0;
  if (!force) {
    if (!(f = calloc (1, sizeof *f)))
      return -ENOMEM;
    daemon_devices (d, FSSNAP_VOLUME, daemon_collect_file, f);
    r = rollback_check_idle (f->files, nbd_server_volume_clients (d->nbd),
                             err, errlen);
    free (f);
  }
  return r < 0 ? r : rollback_job_start (&d->rollback, num, NULL, err,
                                         errlen);
}

static void
daemon_rollback_status (void *opaque, struct ctl_rollback_status *st)
{
  struct daemon *d = opaque;

  rollback_job_status (&d->rollback, st);
}

/* ctl_context.diff_exact: the volume against the snapshot it was last
 * rolled back to (the same UUID), whose maps still name the moved chunks.
 */
static bool
daemon_diff_exact (void *opaque, int a, int b)
{
  struct daemon *d = opaque;
  struct fssnap_snapshot_info info;
  char uuid[FSSNAP_UUID_STRLEN];
  int snap = a == FSSNAP_VOLUME ? b : a;
  unsigned num;

  if ((a == FSSNAP_VOLUME) == (b == FSSNAP_VOLUME)
      || fssnap_rollback_last (d->origin, d->state_dir, &num, uuid) != 1
      || num != (unsigned) snap
      || fssnap_snapshot_info (d->origin, num, &info) < 0)
    return false;
  return strcmp (info.uuid, uuid) == 0;
}

/* Resume a rollback that a crash or a stop left unfinished. */
static int
daemon_start_rollback (struct daemon *d)
{
  rollback_job_init (&d->rollback, d->origin, d->state_dir);
  return rollback_job_resume (&d->rollback);
}

static void
daemon_stop_rollback (struct daemon *d)
{
  rollback_job_stop (&d->rollback);
}

/* Snapshot life-cycle hooks of the control server, for the ublk devices. */
static void
daemon_created (void *opaque, unsigned num)
{
  daemon_ublk_created (((struct daemon *) opaque)->ublk_devs, num);
}

static int
daemon_check_delete (void *opaque, unsigned num, bool force, char *err,
                     size_t errlen)
{
  return daemon_ublk_check_delete (((struct daemon *) opaque)->ublk_devs,
                                   num, force, err, errlen);
}

static void
daemon_deleted (void *opaque, unsigned num)
{
  daemon_ublk_deleted (((struct daemon *) opaque)->ublk_devs, num);
}

/* The same for clones. */
static void
daemon_clone_created (void *opaque, unsigned num)
{
  daemon_ublk_clone_created (((struct daemon *) opaque)->ublk_devs, num);
}

static int
daemon_clone_check_delete (void *opaque, unsigned num, bool force, char *err,
                           size_t errlen)
{
  return daemon_ublk_clone_check_delete (((struct daemon *) opaque)
                                         ->ublk_devs, num, force, err,
                                         errlen);
}

static void
daemon_clone_deleted (void *opaque, unsigned num)
{
  daemon_ublk_clone_deleted (((struct daemon *) opaque)->ublk_devs, num);
}

static int
daemon_start_control (struct daemon *d)
{
  int r;

  /* A file system mounted from a loop device on the volume file, or from
   * the volume's ublk device, is this volume: its GETFSMAP map may be used.
   */
  snprintf (d->volume_file, sizeof d->volume_file, "%s/dev/volume",
            d->run_dir);
  d->volume_files[0] = d->volume_file;
  d->volume_files[1] = daemon_ublk_volume_device (d->ublk_devs);
  d->volume_files[2] = NULL;
  d->fs_ctx = (struct fs_candidates_ctx) { .log = daemon_log_engine,
                                           .volume_files = d->volume_files };
  d->ctl_ctx = (struct ctl_context) { .origin = d->origin,
                                      .devices = daemon_devices,
                                      .clone_devices = daemon_clone_devices,
                                      .devices_opaque = d,
                                      .clones = d->clones,
                                      .log = daemon_log_engine,
                                      .candidates = fs_candidates,
                                      .candidates_opaque = &d->fs_ctx,
                                      .check_create = daemon_check_create,
                                      .check_opaque = d,
                                      .rollback = daemon_rollback,
                                      .rollback_status
                                        = daemon_rollback_status,
                                      .diff_exact = daemon_diff_exact,
                                      .rollback_opaque = d,
                                      .created = daemon_created,
                                      .check_delete = daemon_check_delete,
                                      .deleted = daemon_deleted,
                                      .clone_created = daemon_clone_created,
                                      .clone_check_delete
                                        = daemon_clone_check_delete,
                                      .clone_deleted = daemon_clone_deleted,
                                      .hooks_opaque = d };
  r = ctl_server_new (&d->ctl_ctx, &d->ctl);
  if (r == 0) {
    r = ctl_server_start (d->ctl, d->ctl_fd);
    d->ctl_fd = -1;
  }
  return r;
}

static void
daemon_stop_control (struct daemon *d)
{
  ctl_server_stop (d->ctl);
  ctl_server_free (d->ctl);
  d->ctl = NULL;
}

/* Started in this order, stopped in reverse.  The control socket comes
 * last: once a client can create a snapshot, every device is served.
 */
static const struct daemon_frontend {
  const char *name;
  int (*start) (struct daemon *d);
  void (*stop) (struct daemon *d);
} daemon_frontends[] = {
  { "NBD", daemon_start_nbd, daemon_stop_nbd },
  { "FUSE", daemon_start_fuse, daemon_stop_fuse },
  { "ublk", daemon_start_ublk, daemon_stop_ublk },
  { "rollback", daemon_start_rollback, daemon_stop_rollback },
  { "control", daemon_start_control, daemon_stop_control },
};
#define DAEMON_NFRONTENDS (sizeof daemon_frontends / sizeof daemon_frontends[0])

static void
daemon_stop_frontends (struct daemon *d, size_t started)
{
  while (started-- > 0) {
    daemon_log (FSSNAP_LOG_DEBUG, "stopping the %s frontend",
                daemon_frontends[started].name);
    daemon_frontends[started].stop (d);
  }
}

static int
daemon_start_frontends (struct daemon *d)
{
  size_t i;

  for (i = 0; i < DAEMON_NFRONTENDS; i++) {
    int r = daemon_frontends[i].start (d);
    if (r < 0) {
      daemon_log (FSSNAP_LOG_ERR, "cannot start the %s frontend: %s",
                  daemon_frontends[i].name, strerror (-r));
      daemon_stop_frontends (d, i);
      return -1;
    }
  }
  return 0;
}

/* ---- Life cycle -------------------------------------------------------- */

/* Block the stop signals in this thread and every thread it creates. */
static void
daemon_block_signals (sigset_t *set)
{
  sigemptyset (set);
  sigaddset (set, SIGTERM);
  sigaddset (set, SIGINT);
  sigaddset (set, CLAIM_LEASE_SIGNAL);
  pthread_sigmask (SIG_BLOCK, set, NULL);
  signal (SIGPIPE, SIG_IGN);
}

static void
daemon_report (struct daemon *d, int status)
{
  if (d->notify_fd >= 0)
    daemon_background_done (d->notify_fd, status);
  d->notify_fd = -1;
}

/* After the fork: open the engine and start serving.  Exits 1 on error. */
static void
daemon_start (struct daemon *d)
{
  /* The engine takes over the locked descriptor: one open of the origin,
   * so that a lease on it sees every other.
   */
  struct fssnap_origin_opts opts = { .path = d->origin_path,
                                     .state_dir = d->state_dir,
                                     .chunksize = d->chunksize,
                                     .log = daemon_log_engine,
                                     .use_fd = true,
                                     .fd = d->origin_lock_fd };
  char err[DAEMON_ERRLEN];
  int r;

  if (d->pidfile && daemon_pidfile_write (d->pidfile, err, sizeof err) < 0) {
    daemon_log (FSSNAP_LOG_ERR, "%s", err);
    goto fail;
  }
  r = fssnap_origin_open (&opts, &d->origin);
  d->origin_lock_fd = -1;
  if (r < 0) {
    daemon_log (FSSNAP_LOG_ERR, "cannot open origin %s: %s", d->origin_path,
                strerror (-r));
    goto fail;
  }
  r = fssnap_clones_open (d->origin, d->state_dir, daemon_log_engine, NULL,
                          &d->clones);
  if (r < 0) {
    daemon_log (FSSNAP_LOG_ERR, "cannot open the clones in %s: %s",
                d->state_dir, strerror (-r));
    fssnap_origin_close (d->origin);
    goto fail;
  }
  claim_watch_start (&d->watch, opts.fd, d->origin_path, d->origin);
  if (daemon_start_frontends (d) < 0) {
    fssnap_clones_close (d->clones);
    fssnap_origin_close (d->origin);
    goto fail;
  }
  return;

fail:
  daemon_rundir_clean (d->run_dir);
  if (d->pidfile)
    unlink (d->pidfile);
  daemon_report (d, 1);
  exit (1);
}

static void
daemon_stop (struct daemon *d)
{
  int r;

  daemon_stop_frontends (d, DAEMON_NFRONTENDS);
  fssnap_clones_close (d->clones);
  r = fssnap_origin_flush (d->origin);
  if (r < 0)
    daemon_log (FSSNAP_LOG_ERR, "flushing %s: %s", d->origin_path,
                strerror (-r));
  fssnap_origin_close (d->origin);
  daemon_rundir_clean (d->run_dir);
  if (d->pidfile)
    unlink (d->pidfile);
}

int
main (int argc, char **argv)
{
  struct daemon d = { .origin_lock_fd = -1, .rundir_lock_fd = -1,
                      .notify_fd = -1, .ctl_fd = -1, .tls_mode = -1 };
  char err[DAEMON_ERRLEN], size[32];
  sigset_t set;
  int sig;

  daemon_parse_options (&d, argc, argv);
  daemon_claim (&d);
  if (!d.foreground) {
    if (daemon_background (&d.notify_fd, err, sizeof err) < 0)
      daemon_die ("%s", err);
    daemon_rundir_set_pid (d.rundir_lock_fd, getpid ());
  }
  daemon_block_signals (&set);
  daemon_start (&d);
  daemon_report (&d, 0);
  if (d.syslog || !d.foreground)
    daemon_log_use_syslog ();
  size_format (fssnap_origin_size (d.origin), size, sizeof size);
  daemon_log (FSSNAP_LOG_INFO, "serving %s (%s) on %s/%s, control on %s/%s",
              d.origin_path, size, d.run_dir, DAEMON_NBD_SOCKET, d.run_dir,
              DAEMON_CTL_SOCKET);
  daemon_notify_ready ("serving");

  sig = claim_watch_wait (&d.watch, &set);
  daemon_log (FSSNAP_LOG_INFO, "%s received, stopping", strsignal (sig));
  daemon_notify_stopping ();
  daemon_stop (&d);
  daemon_log (FSSNAP_LOG_INFO, "stopped cleanly");
  return 0;
}
