/*
 * vfio-user transport: what proxy.c gives the blocking wrappers (wait.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PROXY_INTERNAL_H
#define HW_VFIO_USER_PROXY_INTERNAL_H

#include "hw/vfio-user/proxy.h"

AioContext *vfio_user_proxy_context(VFIOProxy *proxy);

/* Negotiate the version on the channel just attached (CONNECTING). */
int coroutine_fn vfio_user_co_negotiate(VFIOProxy *proxy, Error **errp);

/*
 * Check that @sioc can become the proxy's channel, wait for the
 * coroutines of the last one to end, and attach it: the proxy is
 * CONNECTING.  Outside coroutines, in the AioContext's home thread.
 */
int vfio_user_proxy_start_attach(VFIOProxy *proxy, QIOChannelSocket *sioc,
                                 const char *name, Error **errp);

/*
 * A caller in the AioContext's home thread waits for a reply by polling
 * the socket itself: vfio_user_poll_begin() before the request starts,
 * vfio_user_poll_reply() until it is done (false: run the AioContext
 * instead), vfio_user_poll_end() after.
 */
void vfio_user_poll_begin(VFIOProxy *proxy);
bool vfio_user_poll_reply(VFIOProxy *proxy);
void vfio_user_poll_end(VFIOProxy *proxy);

#endif /* HW_VFIO_USER_PROXY_INTERNAL_H */
