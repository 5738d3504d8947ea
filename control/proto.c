/* SPDX-License-Identifier: MIT */
/*
 * Encoding and decoding of the control protocol (see proto.h): errno names,
 * reply objects, line framing.  Linked into both fssnapd and fssnap.  No
 * function here keeps state outside its arguments.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/proto.h"

const char *
ctl_errno_name (int err)
{
  const char *name = strerrorname_np (err);

  return name ? name : "EUNKNOWN";
}

json_object *
ctl_reply_ok (void)
{
  json_object *reply = json_object_new_object ();

  json_object_object_add (reply, "ok", json_object_new_boolean (1));
  return reply;
}

json_object *
ctl_reply_error (int err, const char *fmt, ...)
{
  json_object *reply = json_object_new_object ();
  char msg[1024];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  json_object_object_add (reply, "ok", json_object_new_boolean (0));
  json_object_object_add (reply, "error", json_object_new_string (msg));
  json_object_object_add (reply, "errno",
                          json_object_new_string (ctl_errno_name (err)));
  return reply;
}

json_object *
ctl_parse_line (const char *line, size_t len, char *err, size_t errlen)
{
  json_tokener *tok;
  json_object *obj;
  size_t end;

  if (len > CTL_LINE_MAX || memchr (line, '\0', len)) {
    snprintf (err, errlen, "request is not a line of JSON text");
    return NULL;
  }
  tok = json_tokener_new ();
  if (!tok) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  obj = json_tokener_parse_ex (tok, line, (int) len);
  if (!obj) {
    enum json_tokener_error e = json_tokener_get_error (tok);
    snprintf (err, errlen, "malformed JSON: %s",
              e == json_tokener_continue ? "unexpected end of line"
                                         : json_tokener_error_desc (e));
    json_tokener_free (tok);
    return NULL;
  }
  end = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  while (end < len && strchr (" \t\r", line[end]))
    end++;
  if (end < len) {
    snprintf (err, errlen, "malformed JSON: text after the object");
    json_object_put (obj);
    return NULL;
  }
  if (!json_object_is_type (obj, json_type_object)) {
    snprintf (err, errlen, "a request must be a JSON object");
    json_object_put (obj);
    return NULL;
  }
  return obj;
}

int
ctl_send (int fd, json_object *obj)
{
  size_t len;
  const char *text = json_object_to_json_string_length (
    obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
  char *line = malloc (len + 1);
  size_t done = 0;
  int r = 0;

  if (!line)
    return -ENOMEM;
  memcpy (line, text, len);
  line[len++] = '\n';
  while (done < len) {
    ssize_t n = send (fd, line + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r = -errno;
      break;
    }
    done += n;
  }
  free (line);
  return r;
}

void
ctl_reader_init (struct ctl_reader *r)
{
  r->len = r->used = 0;
  r->skipping = false;
}

/* Move the unread bytes to the start of the buffer. */
static void
ctl_reader_compact (struct ctl_reader *r)
{
  memmove (r->buf, r->buf + r->used, r->len - r->used);
  r->len -= r->used;
  r->used = 0;
}

int
ctl_read_line (int fd, struct ctl_reader *r, char **line, size_t *len)
{
  for (;;) {
    char *nl;
    ssize_t n;

    ctl_reader_compact (r);
    nl = memchr (r->buf, '\n', r->len);
    if (nl && r->skipping) {
      r->used = nl - r->buf + 1;
      r->skipping = false;
      continue;
    }
    if (nl) {
      *nl = '\0';
      *line = r->buf;
      *len = nl - r->buf;
      r->used = *len + 1;
      return 1;
    }
    if (r->skipping)
      r->len = 0;
    else if (r->len == sizeof r->buf - 1) {
      r->len = 0;
      r->skipping = true;
      return -E2BIG;
    }
    n = read (fd, r->buf + r->len, sizeof r->buf - 1 - r->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0 && (r->len == 0 || r->skipping))
      return 0;
    if (n == 0) {               /* a last line without its newline */
      r->buf[r->len] = '\0';
      *line = r->buf;
      *len = r->len;
      r->used = r->len;
      return 1;
    }
    r->len += n;
  }
}
