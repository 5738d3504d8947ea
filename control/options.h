/* SPDX-License-Identifier: MIT */
/*
 * The -o option string of fssnap create, which is also the "options" field
 * of the control protocol's create request.
 */
#ifndef FSSNAP_CONTROL_OPTIONS_H
#define FSSNAP_CONTROL_OPTIONS_H

#include <stddef.h>
#include "libfssnap.h"

/* Parse optstr ("backing-store=DIR,maxsize=1g,unlink") into opts, which
 * keeps the fields optstr does not name.  String fields point into
 * *storage, which the caller frees.  On error returns -EINVAL (or
 * -ENOMEM), changes nothing and, if errmsg is non-NULL, puts a message
 * there.
 */
int ctl_options_parse (const char *optstr, struct fssnap_create_opts *opts,
                       char **storage, char *errmsg, size_t errlen);

#endif /* FSSNAP_CONTROL_OPTIONS_H */
