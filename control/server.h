/* SPDX-License-Identifier: MIT */
/*
 * The control socket of fssnapd: accepts clients on a listening unix
 * socket, admits only root and the daemon's own user (SO_PEERCRED), and
 * answers their request lines with ctl_handle_line, one thread per client.
 */
#ifndef FSSNAP_CONTROL_SERVER_H
#define FSSNAP_CONTROL_SERVER_H

#include "control/requests.h"

struct ctl_server;

/* ctx is copied; the strings and the origin it points to must outlive the
 * server.
 */
int ctl_server_new (const struct ctl_context *ctx,
                    struct ctl_server **serverp);
/* Serve clients arriving on listen_fd from a thread of the server's own.
 * The server owns the fd.  Call once.
 */
int ctl_server_start (struct ctl_server *server, int listen_fd);
/* Stop accepting, let each client finish the request it is running and
 * send its reply, then disconnect everyone and wait for their threads.
 */
void ctl_server_stop (struct ctl_server *server);
void ctl_server_free (struct ctl_server *server);

#endif /* FSSNAP_CONTROL_SERVER_H */
