/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the NBD frontend: each input is the byte stream a
 * client sends, from the client flags through option haggling and into
 * transmission.  It runs in-process through nbd_session_run() over a
 * buffer transport (replies are discarded), against a real engine on a
 * small image with two snapshots whose upper half is not a candidate and
 * a write between them, so that export snap/1 and the volume offer the
 * dirty bitmap context qemu:dirty-bitmap:snap/0 (and the volume
 * qemu:dirty-bitmap:snap/1) with changed and unchanged chunks.
 *
 * An input that starts with 'T' runs (without that byte) against a server
 * that requires TLS (PSK credentials): the refusals before STARTTLS, and
 * a TLS handshake fed whatever follows STARTTLS.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libfssnap.h"
#include "nbd/internal.h"

#define FUZZ_IMG_SIZE (1u << 20)

struct fuzz_input {
  const uint8_t *data;
  size_t len, pos;
};

static ssize_t
fuzz_recv (void *opaque, void *buf, size_t len)
{
  struct fuzz_input *in = opaque;
  size_t n = in->len - in->pos < len ? in->len - in->pos : len;

  memcpy (buf, in->data + in->pos, n);
  in->pos += n;
  return (ssize_t) n;
}

static ssize_t
fuzz_send (void *opaque, const void *buf, size_t len, bool more)
{
  (void) opaque;
  (void) buf;
  (void) more;
  return (ssize_t) len;
}

static void
fuzz_log (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  (void) level;
  (void) msg;
}

static int
fuzz_candidates (void *opaque, struct fssnap_candidates *cands)
{
  (void) opaque;
  fssnap_candidates_mark (cands, 0, FUZZ_IMG_SIZE / 2);
  return 0;
}

static struct nbd_env env = { .log = fuzz_log, .workers = 2 };
static struct nbd_env env_tls;

/* A PSK file and the credentials loaded from it, for env_tls. */
static void
fuzz_tls_setup (const char *dir)
{
  struct tls_config cfg = { 0 };
  struct tls_creds *creds;
  char path[64], err[256];
  FILE *f;

  snprintf (path, sizeof path, "%s/keys.psk", dir);
  f = fopen (path, "w");
  if (!f || fputs ("fuzz:00112233445566778899aabbccddeeff\n", f) < 0
      || fclose (f) != 0)
    abort ();
  cfg.psk_file = path;
  if (tls_creds_load (&cfg, &creds, err, sizeof err) < 0)
    abort ();
  env_tls = env;
  env_tls.tls = NBD_TLS_REQUIRE;
  env_tls.tls_creds = creds;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  static char dir[] = "/tmp/fuzz-nbd.XXXXXX";
  char img[64], state[64], err[256];
  struct fssnap_origin_opts oo = { .path = img, .state_dir = state,
                                   .log = fuzz_log };
  struct fssnap_create_opts co = { .candidates = fuzz_candidates,
                                   .transient = true };
  unsigned num;
  int fd;

  (void) argc;
  (void) argv;
  if (!mkdtemp (dir))
    abort ();
  snprintf (img, sizeof img, "%s/img", dir);
  snprintf (state, sizeof state, "%s/state", dir);
  mkdir (state, 0700);
  fd = open (img, O_CREAT | O_RDWR, 0600);
  if (fd < 0 || ftruncate (fd, FUZZ_IMG_SIZE) < 0)
    abort ();
  close (fd);
  if (fssnap_origin_open (&oo, &env.origin) < 0
      || fssnap_snapshot_create (env.origin, &co, &num, err, sizeof err) < 0
      || fssnap_origin_zero (env.origin, 4096, FUZZ_IMG_SIZE / 4, 0) < 0
      || fssnap_snapshot_create (env.origin, &co, &num, err, sizeof err) < 0)
    abort ();
  fuzz_tls_setup (dir);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bool tls = size > 0 && data[0] == 'T';
  struct fuzz_input in = { .data = data + tls, .len = size - tls };
  struct nbd_transport t = { .opaque = &in, .recv = fuzz_recv,
                             .send = fuzz_send };

  nbd_session_run (tls ? &env_tls : &env, &t);
  return 0;
}
