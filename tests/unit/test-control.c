/* Unit tests of the control protocol: line framing and parsing
 * (control/proto.c, shared with the CLI) and the request handlers
 * (control/requests.c) against a real engine on a small image.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "libfssnap.h"
#include "control/proto.h"
#include "control/requests.h"

/* ---- Framing ----------------------------------------------------------- */

static void
test_read_line_framing (void **state)
{
  struct ctl_reader *r = malloc (sizeof *r);
  char *line;
  size_t len;
  int sv[2];

  (void) state;
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ctl_reader_init (r);
  assert_int_equal (write (sv[1], "one\ntw", 6), 6);
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 1);
  assert_string_equal (line, "one");
  assert_int_equal (len, 3);
  assert_int_equal (write (sv[1], "o\n\nlast", 7), 7);
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 1);
  assert_string_equal (line, "two");
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 1);
  assert_int_equal (len, 0);
  close (sv[1]);
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 1);
  assert_string_equal (line, "last");       /* no newline before EOF */
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 0);
  close (sv[0]);
  free (r);
}

static void
test_read_line_too_long (void **state)
{
  struct ctl_reader *r = malloc (sizeof *r);
  size_t big = CTL_LINE_MAX * 2, len;
  char *data = malloc (big + 8), *line;
  int sv[2], status;
  pid_t pid;

  (void) state;
  memset (data, 'x', big);
  memcpy (data + big, "\nok\n", 4);
  assert_int_equal (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), 0);
  pid = fork ();
  if (pid == 0) {
    close (sv[0]);
    _exit (write (sv[1], data, big + 4) == (ssize_t) big + 4 ? 0 : 1);
  }
  close (sv[1]);
  ctl_reader_init (r);
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), -E2BIG);
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 1);
  assert_string_equal (line, "ok");         /* the rest was skipped */
  assert_int_equal (ctl_read_line (sv[0], r, &line, &len), 0);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  assert_int_equal (status, 0);
  close (sv[0]);
  free (data);
  free (r);
}

static void
test_parse_line (void **state)
{
  char err[256];
  json_object *o;

  (void) state;
  o = ctl_parse_line ("{\"a\":1}  ", 9, err, sizeof err);
  assert_non_null (o);
  json_object_put (o);
  assert_null (ctl_parse_line ("{\"a\":1} x", 9, err, sizeof err));
  assert_non_null (strstr (err, "text after"));
  assert_null (ctl_parse_line ("[1]", 3, err, sizeof err));
  assert_non_null (strstr (err, "must be a JSON object"));
  assert_null (ctl_parse_line ("{\"a\":", 5, err, sizeof err));
  assert_null (ctl_parse_line ("{}\0{}", 5, err, sizeof err));
  assert_null (ctl_parse_line ("", 0, err, sizeof err));
  assert_string_equal (ctl_errno_name (ENOENT), "ENOENT");
  assert_string_equal (ctl_errno_name (100000), "EUNKNOWN");
}

/* ---- Requests against an engine -------------------------------------- */

/* Two frontends: a device file for every target, and a block device for
 * the volume only.
 */
static void
fake_devices (void *opaque, int target, ctl_device_fn fn, void *arg)
{
  char name[64];

  (void) opaque;
  if (target == FSSNAP_VOLUME)
    fn (arg, "blk", "/dev/blk0");
  if (target == FSSNAP_VOLUME)
    snprintf (name, sizeof name, "/R/dev/volume");
  else
    snprintf (name, sizeof name, "/R/dev/snap/%d", target);
  fn (arg, "file", name);
}

struct fixture {
  char dir[64];
  struct fssnap_origin *origin;
  struct ctl_context ctx;
};

static void
quiet (void *opaque, enum fssnap_log_level level, const char *msg)
{
  (void) opaque;
  (void) level;
  (void) msg;
}

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  struct fssnap_origin_opts opts = { .log = quiet };
  char path[128];
  int fd;

  snprintf (f->dir, sizeof f->dir, "/tmp/test-control.XXXXXX");
  assert_non_null (mkdtemp (f->dir));
  snprintf (path, sizeof path, "%s/disk.img", f->dir);
  fd = open (path, O_RDWR | O_CREAT, 0600);
  assert_int_equal (ftruncate (fd, 1 << 20), 0);
  close (fd);
  opts.path = path;
  opts.state_dir = f->dir;
  assert_int_equal (fssnap_origin_open (&opts, &f->origin), 0);
  f->ctx = (struct ctl_context) { .origin = f->origin,
                                  .devices = fake_devices };
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *f = *state;
  char cmd[128];

  fssnap_origin_close (f->origin);
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal (system (cmd), 0);
  free (f);
  return 0;
}

/* Handle a request; return the reply (put by the caller). */
static json_object *
ask (struct fixture *f, const char *line)
{
  return ctl_handle_line (&f->ctx, line, strlen (line));
}

static bool
is_ok (json_object *reply)
{
  json_object *ok;
  return json_object_object_get_ex (reply, "ok", &ok)
         && json_object_get_boolean (ok);
}

static const char *
field (json_object *obj, const char *key)
{
  json_object *v;
  return json_object_object_get_ex (obj, key, &v)
         ? json_object_get_string (v) : NULL;
}

static void
test_create_info_delete (void **state)
{
  struct fixture *f = *state;
  json_object *r, *snap, *arr;

  r = ask (f, "{\"request\":\"create\",\"options\":\"maxsize=1m\","
              "\"chunksize\":\"4k\",\"maxsize\":131072,\"transient\":true,"
              "\"mount\":\"/m\"}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "snapshot", &snap));
  assert_string_equal (field (snap, "number"), "0");
  assert_string_equal (field (snap, "device"), "/R/dev/snap/0");
  assert_true (json_object_object_get_ex (snap, "devices", &arr));
  assert_string_equal (field (arr, "file"), "/R/dev/snap/0");
  assert_int_equal (json_object_object_length (arr), 1);
  assert_string_equal (field (snap, "maxsize"), "131072");
  assert_string_equal (field (snap, "chunksize"), "4096");
  assert_string_equal (field (snap, "transient"), "true");
  assert_string_equal (field (snap, "mountpoint"), "/m");
  assert_int_equal (strlen (field (snap, "uuid")), 36);
  json_object_put (r);

  r = ask (f, "{\"request\":\"info\",\"number\":0}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "snapshots", &arr));
  assert_int_equal (json_object_array_length (arr), 1);
  assert_string_equal (field (json_object_array_get_idx (arr, 0), "state"),
                       "idle");
  json_object_put (r);

  /* list also names the volume's devices, the block device first. */
  r = ask (f, "{\"request\":\"list\"}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "volume", &snap));
  assert_string_equal (field (snap, "size"), "1048576");
  assert_string_equal (field (snap, "device"), "/dev/blk0");
  assert_true (json_object_object_get_ex (snap, "devices", &arr));
  assert_string_equal (field (arr, "blk"), "/dev/blk0");
  assert_string_equal (field (arr, "file"), "/R/dev/volume");
  json_object_put (r);

  r = ask (f, "{\"request\":\"delete\",\"number\":0}");
  assert_true (is_ok (r));
  json_object_put (r);
  r = ask (f, "{\"request\":\"delete\",\"number\":0}");
  assert_false (is_ok (r));
  assert_string_equal (field (r, "errno"), "ENOENT");
  json_object_put (r);
}

static void
test_bad_requests_change_nothing (void **state)
{
  static const char *const bad[] = {
    "", "nope", "{", "[]", "{}", "{\"request\":null}",
    "{\"request\":\"create\",\"chunksize\":3000}",
    "{\"request\":\"create\",\"maxsize\":\"1,unlink\"}",
    "{\"request\":\"create\",\"options\":\"maxsize=1m\",\"unlink\":1}",
    "{\"request\":\"create\",\"mount\":[]}",
    "{\"request\":\"create\",\"what\":1}",
    "{\"request\":\"delete\",\"number\":4294967296}",
    "{\"request\":\"info\",\"number\":-1}",
    "{\"request\":\"stats\",\"number\":0}",
  };
  struct fixture *f = *state;
  json_object *r, *arr;
  size_t i;

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = ask (f, bad[i]);
    assert_false (is_ok (r));
    assert_non_null (field (r, "error"));
    assert_string_equal (field (r, "errno"), "EINVAL");
    json_object_put (r);
  }
  r = ask (f, "{\"request\":\"list\"}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "snapshots", &arr));
  assert_int_equal (json_object_array_length (arr), 0);
  json_object_put (r);
  r = ask (f, "{\"request\":\"stats\"}");
  assert_true (is_ok (r));
  json_object_put (r);
}

static uint64_t
u64_field (json_object *obj, const char *key)
{
  json_object *v;
  assert_true (json_object_object_get_ex (obj, key, &v));
  return json_object_get_uint64 (v);
}

static void
test_diff_request (void **state)
{
  struct fixture *f = *state;
  json_object *r, *ext, *e;
  char buf[4096];

  r = ask (f, "{\"request\":\"create\",\"chunksize\":\"64k\"}");
  assert_true (is_ok (r));
  json_object_put (r);
  memset (buf, 'd', sizeof buf);
  assert_int_equal (fssnap_origin_write (f->origin, buf, sizeof buf,
                                         3 * 65536 + 100, 0), 0);

  r = ask (f, "{\"request\":\"diff\",\"a\":\"volume\",\"b\":0}");
  assert_true (is_ok (r));
  assert_int_equal (u64_field (r, "bytes"), 65536);
  assert_int_equal (u64_field (r, "end"), 1 << 20);
  assert_true (json_object_object_get_ex (r, "extents", &ext));
  assert_int_equal (json_object_array_length (ext), 1);
  e = json_object_array_get_idx (ext, 0);
  assert_int_equal (u64_field (e, "offset"), 3 * 65536);
  assert_int_equal (u64_field (e, "length"), 65536);
  json_object_put (r);

  /* a range that misses the change: nothing differs there */
  r = ask (f, "{\"request\":\"diff\",\"a\":0,\"b\":\"volume\","
              "\"offset\":0,\"length\":131072}");
  assert_true (is_ok (r));
  assert_int_equal (u64_field (r, "bytes"), 0);
  assert_int_equal (u64_field (r, "end"), 131072);
  json_object_put (r);

  r = ask (f, "{\"request\":\"diff\",\"a\":0,\"b\":7}");
  assert_false (is_ok (r));
  assert_string_equal (field (r, "errno"), "ENOENT");
  json_object_put (r);
  static const char *const bad[] = {
    "{\"request\":\"diff\",\"a\":0}",
    "{\"request\":\"diff\",\"a\":\"vol\",\"b\":0}",
    "{\"request\":\"diff\",\"a\":0,\"b\":-2}",
    "{\"request\":\"diff\",\"a\":0,\"b\":\"volume\",\"offset\":-1}",
    "{\"request\":\"diff\",\"a\":0,\"b\":\"volume\",\"offset\":1048577}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = ask (f, bad[i]);
    assert_false (is_ok (r));
    assert_string_equal (field (r, "errno"), "EINVAL");
    json_object_put (r);
  }
}

static const char *
reply_errno (json_object *r)
{
  return field (r, "errno");
}

/* Clones through the control protocol: created, named, listed; a base
 * with clones is not deleted; refused without a clone set; and groups
 * are checked and recorded.
 */
static void
test_clones_and_groups (void **state)
{
  struct fixture *f = *state;
  json_object *r, *clone, *arr;

  r = ask (f, "{\"request\":\"clone\",\"number\":0}");
  assert_string_equal (reply_errno (r), "EOPNOTSUPP");
  json_object_put (r);
  r = ask (f, "{\"request\":\"rollback\",\"number\":0}");
  assert_string_equal (reply_errno (r), "EOPNOTSUPP");
  json_object_put (r);
  r = ask (f, "{\"request\":\"create\",\"group\":\"0f1e2d3c-4b5a-4978-"
              "8695-a4b3c2d1e0f9\"}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "snapshot", &clone));
  assert_string_equal (field (clone, "group"),
                       "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
  json_object_put (r);
  r = ask (f, "{\"request\":\"create\",\"group\":\"0f1e2d3c-4b5a-4978-"
              "8695-a4b3c2d1e0fz\"}");
  assert_string_equal (reply_errno (r), "EINVAL");
  json_object_put (r);

  assert_int_equal (fssnap_clones_open (f->origin, f->dir, quiet, NULL,
                                        &f->ctx.clones), 0);
  r = ask (f, "{\"request\":\"clone\",\"number\":3}");
  assert_string_equal (reply_errno (r), "ENOENT");
  json_object_put (r);
  r = ask (f, "{\"request\":\"clone\",\"number\":0}");
  assert_true (is_ok (r));
  assert_true (json_object_object_get_ex (r, "clone", &clone));
  assert_string_equal (field (clone, "device"), "clone/0");
  assert_string_equal (field (clone, "base"), "0");
  json_object_put (r);
  r = ask (f, "{\"request\":\"delete\",\"number\":0}");
  assert_string_equal (reply_errno (r), "EBUSY");
  json_object_put (r);
  r = ask (f, "{\"request\":\"list\"}");
  assert_true (json_object_object_get_ex (r, "clones", &arr));
  assert_int_equal (json_object_array_length (arr), 1);
  assert_true (json_object_object_get_ex (r, "snapshots", &arr));
  assert_true (json_object_object_get_ex (json_object_array_get_idx (arr, 0),
                                          "clones", &arr));
  assert_int_equal (json_object_array_length (arr), 1);
  assert_string_equal (field (json_object_array_get_idx (arr, 0), "number"),
                       "0");
  json_object_put (r);
  r = ask (f, "{\"request\":\"info\",\"number\":0}");
  assert_true (json_object_object_get_ex (r, "snapshots", &arr));
  assert_true (json_object_object_get_ex (json_object_array_get_idx (arr, 0),
                                          "clones", &arr));
  assert_int_equal (json_object_array_length (arr), 1);
  json_object_put (r);
  r = ask (f, "{\"request\":\"delete-clone\",\"number\":0}");
  assert_true (is_ok (r));
  json_object_put (r);
  r = ask (f, "{\"request\":\"delete-clone\",\"number\":0}");
  assert_string_equal (reply_errno (r), "ENOENT");
  json_object_put (r);
  r = ask (f, "{\"request\":\"delete\",\"number\":0}");
  assert_true (is_ok (r));
  json_object_put (r);
  fssnap_clones_close (f->ctx.clones);
  f->ctx.clones = NULL;
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_read_line_framing),
    cmocka_unit_test (test_read_line_too_long),
    cmocka_unit_test (test_parse_line),
    cmocka_unit_test_setup_teardown (test_create_info_delete, setup, teardown),
    cmocka_unit_test_setup_teardown (test_diff_request, setup, teardown),
    cmocka_unit_test_setup_teardown (test_clones_and_groups, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_bad_requests_change_nothing, setup,
                                     teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
