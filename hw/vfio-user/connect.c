/*
 * vfio-user transport: connecting
 *
 * Opening a UNIX socket to the server (a path, or a descriptor passed
 * to the monitor), attaching it as the proxy's channel, and the version
 * negotiation, which may give us the twin socket.
 * See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/un.h>
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/coroutine.h"
#include "block/aio.h"
#include "io/channel-socket.h"
#include "hw/vfio-user/proxy.h"
#include "message.h"
#include "proxy-internal.h"
#include "trace.h"

/* Room for the VERSION reply. */
#define VFIO_USER_VERSION_REPLY_MAX 4096

/*
 * The twin socket the server passed in its VERSION reply: descriptor
 * @caps->twin_fd_index of @rfds (set to -1 once taken).  NULL, with
 * @errp set, if it is not there or not a UNIX socket.
 */
static QIOChannelSocket *vfio_user_take_twin(VFIOProxy *proxy,
                                             const VFIOUserCaps *caps,
                                             int *rfds, unsigned int nrecv,
                                             Error **errp)
{
    int index = caps->twin_fd_index;
    QIOChannelSocket *twin;

    if (index >= nrecv) {
        vfio_user_error(proxy, errp, "bad VERSION reply: twin_socket "
                        "fd_index %d, but %u descriptors", index, nrecv);
        return NULL;
    }
    twin = qio_channel_socket_new_fd(rfds[index], errp);
    if (twin && !qio_channel_has_feature(QIO_CHANNEL(twin),
                                         QIO_CHANNEL_FEATURE_FD_PASS)) {
        /* Not a UNIX socket: the descriptor is closed with it */
        g_clear_pointer(&twin, object_unref);
        rfds[index] = -1;
        error_setg(errp, "not a UNIX socket");
    }
    if (!twin) {
        error_prepend(errp, "vfio-user server %s: bad twin socket: ",
                      proxy->name);
        return NULL;
    }
    rfds[index] = -1;
    return twin;
}

/* The negotiation succeeded: the proxy is CONNECTED. */
static void vfio_user_connected(VFIOProxy *proxy, const VFIOUserCaps *caps,
                                QIOChannelSocket *twin)
{
    proxy->caps = *caps;
    if (twin) {
        proxy->twin.ioc = QIO_CHANNEL(twin);
        proxy->twin.fd = twin->fd;
        qio_channel_set_name(proxy->twin.ioc, "vfio-user-twin");
        qio_channel_set_blocking(proxy->twin.ioc, false, NULL);
        qio_channel_set_follow_coroutine_ctx(proxy->twin.ioc, true);
        /* The server's requests come there: see VFIOUserWatch */
        proxy->watch = VFIO_USER_WATCH_TWIN;
    }
    trace_vfio_user_version(proxy->name, caps->major, caps->minor,
                            caps->max_send_fds, caps->max_xfer,
                            caps->max_dma_maps, caps->pgsizes);
    vfio_user_set_state(proxy, VFIO_PROXY_CONNECTED);
    if (twin) {
        proxy->twin.recv_co = qemu_coroutine_create(vfio_user_receiver_co,
                                                    &proxy->twin);
        aio_co_enter(proxy->ctx, proxy->twin.recv_co);
    }
}

/*
 * Take the server's VERSION reply @msg with its descriptors @fds: the
 * capabilities and the twin socket.
 */
static int vfio_user_take_version(VFIOProxy *proxy, VFIOUserVersion *msg,
                                  VFIOUserFDs *fds, Error **errp)
{
    QIOChannelSocket *twin = NULL;
    VFIOUserCaps caps;

    if (!vfio_user_parse_version(msg, &caps, errp)) {
        error_prepend(errp, "vfio-user server %s: bad VERSION reply: ",
                      proxy->name);
        vfio_user_close_fds(fds->recv, fds->nrecv);
        return -EPROTO;
    }
    if (caps.twin_fd_index >= 0) {
        twin = vfio_user_take_twin(proxy, &caps, fds->recv, fds->nrecv,
                                   errp);
        if (!twin) {
            vfio_user_close_fds(fds->recv, fds->nrecv);
            return -EPROTO;
        }
    }
    vfio_user_close_fds(fds->recv, fds->nrecv);
    if (proxy->state != VFIO_PROXY_CONNECTING) {
        vfio_user_error(proxy, errp, "connection lost in the version "
                        "negotiation");
        if (twin) {
            object_unref(twin);
        }
        return -ENOTCONN;
    }
    vfio_user_connected(proxy, &caps, twin);
    return 0;
}

int coroutine_fn vfio_user_co_negotiate(VFIOProxy *proxy, Error **errp)
{
    g_autoptr(GString) json = vfio_user_caps_json();
    uint32_t size = sizeof(VFIOUserVersion) + json->len + 1;
    uint32_t reply_max = MAX(size, VFIO_USER_VERSION_REPLY_MAX);
    g_autofree VFIOUserVersion *msg = g_malloc0(reply_max);
    int rfds[VFIO_USER_MAX_FDS];
    VFIOUserFDs fds = { .recv = rfds, .max_recv = VFIO_USER_MAX_FDS };
    int ret;

    vfio_user_msg_init(&msg->hdr, VFIO_USER_VERSION, size);
    msg->major = cpu_to_le16(VFIO_USER_MAJOR_VER);
    msg->minor = cpu_to_le16(VFIO_USER_MINOR_VER);
    memcpy(msg->capabilities, json->str, json->len + 1);

    ret = vfio_user_co_request(proxy, &msg->hdr, &fds, reply_max, 0, errp);
    if (ret < 0) {
        return ret;
    }
    return vfio_user_take_version(proxy, msg, &fds, errp);
}

/* Can @sioc become the proxy's channel? */
static int vfio_user_attach_check(VFIOProxy *proxy, QIOChannelSocket *sioc,
                                  const char *name, Error **errp)
{
    if (proxy->state != VFIO_PROXY_CLOSED &&
        proxy->state != VFIO_PROXY_FAILED) {
        vfio_user_error(proxy, errp, "already connected");
        return -EBUSY;
    }
    if (!qio_channel_has_feature(QIO_CHANNEL(sioc),
                                 QIO_CHANNEL_FEATURE_FD_PASS)) {
        error_setg(errp, "vfio-user server %s: not a UNIX socket", name);
        return -EINVAL;
    }
    return 0;
}

/* Make @sioc the channel, start its receiver: the proxy is CONNECTING. */
static void vfio_user_attach_channel(VFIOProxy *proxy, QIOChannelSocket *sioc,
                                     const char *name)
{
    assert(!proxy->main.recv_co && !proxy->req_co && !proxy->twin.recv_co);
    if (proxy->main.ioc) {
        object_unref(proxy->main.ioc);
    }
    if (proxy->twin.ioc) {
        g_clear_pointer(&proxy->twin.ioc, object_unref);
        proxy->watch = VFIO_USER_WATCH_ALL;
    }
    proxy->main.ioc = QIO_CHANNEL(object_ref(sioc));
    proxy->main.fd = sioc->fd;
    g_free(proxy->name);
    proxy->name = g_strdup(name);
    qio_channel_set_name(proxy->main.ioc, "vfio-user");
    qio_channel_set_blocking(proxy->main.ioc, false, NULL);
    qio_channel_set_follow_coroutine_ctx(proxy->main.ioc, true);

    proxy->gen++;
    proxy->late_id = -1;
    vfio_user_default_caps(&proxy->caps);
    vfio_user_set_state(proxy, VFIO_PROXY_CONNECTING);
    proxy->main.recv_co = qemu_coroutine_create(vfio_user_receiver_co,
                                                &proxy->main);
    vfio_user_update_handler(proxy);
    aio_co_enter(proxy->ctx, proxy->main.recv_co);
}

int vfio_user_proxy_start_attach(VFIOProxy *proxy, QIOChannelSocket *sioc,
                                 const char *name, Error **errp)
{
    int ret;

    ret = vfio_user_attach_check(proxy, sioc, name, errp);
    if (ret < 0) {
        return ret;
    }
    vfio_user_drain(proxy);
    vfio_user_attach_channel(proxy, sioc, name);
    return 0;
}

int coroutine_fn vfio_user_co_proxy_attach(VFIOProxy *proxy,
                                           QIOChannelSocket *sioc,
                                           const char *name, Error **errp)
{
    int ret;

    ret = vfio_user_attach_check(proxy, sioc, name, errp);
    if (ret < 0) {
        return ret;
    }
    if (proxy->main.recv_co || proxy->req_co || proxy->twin.recv_co) {
        /* A coroutine cannot wait for them in an event loop */
        error_setg(errp, "vfio-user server %s: the last connection is "
                   "still closing", name);
        return -EBUSY;
    }
    vfio_user_attach_channel(proxy, sioc, name);
    ret = vfio_user_co_negotiate(proxy, errp);
    if (ret < 0) {
        vfio_user_proxy_abort(proxy);
    }
    return ret;
}

/*
 * Connect to a UNIX socket, waiting at most @timeout_ms (0: forever) for
 * a server whose backlog is full: libvfio-user listens for one client,
 * and a connect() queued behind another would otherwise block the caller
 * (and the BQL) for as long as that server lives.  A UNIX stream socket
 * waits in connect() for at most its send timeout.
 */
static QIOChannelSocket *vfio_user_connect_unix(const char *path,
                                                uint32_t timeout_ms,
                                                bool nonblock, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = {
        .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000,
    };
    QIOChannelSocket *sioc;
    int fd, ret;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "socket path too long");
        return NULL;
    }
    strcpy(sun.sun_path, path);
    fd = qemu_socket(AF_UNIX, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0),
                     0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a socket");
        return NULL;
    }
    if (!nonblock &&
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        error_setg_errno(errp, errno, "cannot set a connect timeout");
        close(fd);
        return NULL;
    }
    do {
        ret = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        if (errno == EAGAIN && nonblock) {
            error_setg(errp, "the server does not accept connections now "
                       "(is another client connected?)");
        } else if (errno == EAGAIN) {
            error_setg(errp, "the server did not accept the connection "
                       "within %u ms (is another client connected?)",
                       timeout_ms);
        } else {
            error_setg_errno(errp, errno, "cannot connect");
        }
        close(fd);
        return NULL;
    }
    tv = (struct timeval) { 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sioc = qio_channel_socket_new_fd(fd, errp);
    if (!sioc) {
        close(fd);
    }
    return sioc;
}

QIOChannelSocket *vfio_user_proxy_open(VFIOProxy *proxy, SocketAddress *addr,
                                       bool nonblock, char **name,
                                       Error **errp)
{
    QIOChannelSocket *sioc;

    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        *name = g_strdup(addr->u.q_unix.path);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        *name = g_strdup_printf("fd %s", addr->u.fd.str);
        break;
    default:
        error_setg(errp, "vfio-user: the server must be a UNIX socket "
                   "(path or fd)");
        *name = NULL;
        return NULL;
    }

    if (addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        sioc = vfio_user_connect_unix(addr->u.q_unix.path,
                                      vfio_user_proxy_timeout(proxy),
                                      nonblock, errp);
    } else {
        sioc = qio_channel_socket_new();
        if (qio_channel_socket_connect_sync(sioc, addr, errp) < 0) {
            g_clear_pointer(&sioc, object_unref);
        }
    }
    if (!sioc) {
        error_prepend(errp, "vfio-user server %s: ", *name);
    }
    return sioc;
}
