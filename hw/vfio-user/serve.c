/*
 * vfio-user transport: the server's requests
 *
 * The receivers queue the server's requests; the request handler
 * coroutine serves them in order (DMA_READ and DMA_WRITE go to the
 * owner's dma_rw callback, anything else gets an error reply) and sends
 * the replies.  A server that sends faster than we serve gets
 * back-pressure.  See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/coroutine.h"
#include "qemu/units.h"
#include "block/aio.h"
#include "message.h"
#include "proxy-internal.h"
#include "trace.h"

/*
 * Requests of the server queued for the handler.  libvfio-user sends one
 * at a time; a server that sends more before we answer gets back-pressure:
 * once this many requests, or this many bytes of them, are queued, the
 * receiver stops reading the socket until the handler has caught up.
 * The hard limit is reached only while the handler itself waits for a
 * reply (a DMA request that reaches a BAR of the device), when the
 * receiver must read on.
 */
#define VFIO_USER_MAX_REQUESTS      64
#define VFIO_USER_MAX_REQUEST_BYTES (4 * MiB)
#define VFIO_USER_HARD_MAX_REQUESTS 1024
#define VFIO_USER_HARD_MAX_REQUEST_BYTES (64 * MiB)

/* A request of the server, queued for the handler. */
struct VFIOUserRequest {
    QSIMPLEQ_ENTRY(VFIOUserRequest) next;
    /* 0, or the negative errno to reply without calling the device. */
    int error;
    /* It came on the twin socket: so does its reply. */
    bool twin;
    /*
     * The whole message; its header in host byte order, the payload as
     * it came: little-endian, read with ld*_le_p() through the protocol's
     * struct (vfio_user_request_rw()).
     */
    /* 8-aligned (not only on 64-bit hosts): so are its 64-bit fields */
    union {
        VFIOUserHdr msg;
    } QEMU_ALIGNED(8);
};
/* The payload's 64-bit fields are aligned in the request. */
QEMU_BUILD_BUG_ON(offsetof(VFIOUserRequest, msg) % sizeof(uint64_t));

/* @req as the DMA_READ or DMA_WRITE message it is, once checked. */
static VFIOUserDMARW *vfio_user_request_rw(VFIOUserRequest *req)
{
    return container_of(&req->msg, VFIOUserDMARW, hdr);
}

/* Is the request queue full (the receivers pause)? */
static bool vfio_user_requests_full(VFIOProxy *proxy)
{
    return proxy->nrequests >= VFIO_USER_MAX_REQUESTS ||
           proxy->request_bytes >= VFIO_USER_MAX_REQUEST_BYTES;
}

void vfio_user_recv_resume(VFIOProxy *proxy)
{
    VFIOUserSocket *socks[] = { &proxy->main, &proxy->twin };
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(socks); i++) {
        if (socks[i]->recv_state == VFIO_USER_RECV_PAUSED) {
            socks[i]->recv_state = VFIO_USER_RECV_BUSY;
            aio_co_wake(socks[i]->recv_co);
        }
    }
}

/* Does the server wait for our reply to @req on the main socket? */
static bool vfio_user_reply_due(VFIOUserRequest *req)
{
    return !(req->msg.flags & VFIO_USER_NO_REPLY) && !req->twin;
}

static void vfio_user_free_request(VFIOProxy *proxy, VFIOUserRequest *req)
{
    proxy->nrequests--;
    proxy->request_bytes -= req->msg.size - sizeof(req->msg);
    g_free(req);
}

void vfio_user_drop_requests(VFIOProxy *proxy)
{
    VFIOUserRequest *req;

    while ((req = QSIMPLEQ_FIRST(&proxy->requests))) {
        QSIMPLEQ_REMOVE_HEAD(&proxy->requests, next);
        if (vfio_user_reply_due(req)) {
            proxy->replies_due--;
        }
        vfio_user_free_request(proxy, req);
    }
}

/* Check a request of the server: 0 or the negative errno to reply with. */
static int vfio_user_check_request(VFIOUserRequest *req, size_t nfds)
{
    const VFIOUserHdr *msg = &req->msg;
    uint64_t addr, count;

    if (nfds || (msg->flags & VFIO_USER_ERROR)) {
        return -EINVAL;
    }
    if (msg->command != VFIO_USER_DMA_READ &&
        msg->command != VFIO_USER_DMA_WRITE) {
        return -ENOSYS;
    }
    if (msg->size < sizeof(VFIOUserDMARW)) {
        return -EINVAL;
    }
    addr = ldq_le_p(&vfio_user_request_rw(req)->address);
    count = ldq_le_p(&vfio_user_request_rw(req)->count);
    if (count > VFIO_USER_MAX_XFER || addr + count < addr ||
        msg->size != sizeof(VFIOUserDMARW) +
        (msg->command == VFIO_USER_DMA_WRITE ? count : 0)) {
        return -EINVAL;
    }
    return 0;
}

/*
 * May a request with header @hdr be read (false, with @errp set: it
 * breaks the protocol, or there are too many)?
 */
static bool vfio_user_request_acceptable(VFIOProxy *proxy,
                                         const VFIOUserHdr *hdr,
                                         Error **errp)
{
    if (proxy->state != VFIO_PROXY_CONNECTED) {
        vfio_user_error(proxy, errp, "%s request before the version "
                        "negotiation", vfio_user_command_name(hdr->command));
        return false;
    }
    /*
     * We proposed max_data_xfer_size: a larger request breaks the
     * protocol, and is not read (it could be 4 GiB).
     */
    if (hdr->size > VFIO_USER_MAX_XFER + VFIO_USER_XFER_OVERHEAD) {
        vfio_user_error(proxy, errp, "%s request of %u bytes exceeds our "
                        "max_data_xfer_size (%u)",
                        vfio_user_command_name(hdr->command), hdr->size,
                        VFIO_USER_MAX_XFER);
        return false;
    }
    if (proxy->nrequests >= VFIO_USER_HARD_MAX_REQUESTS ||
        proxy->request_bytes >= VFIO_USER_HARD_MAX_REQUEST_BYTES) {
        vfio_user_error(proxy, errp, "%u requests (%zu bytes) pending while "
                        "a request of ours waits for its reply",
                        proxy->nrequests, proxy->request_bytes);
        return false;
    }
    return true;
}

static void coroutine_fn vfio_user_req_co(void *opaque);

/* Queue @req for the handler, and start the handler if it is idle. */
static void vfio_user_queue_request(VFIOProxy *proxy, VFIOUserRequest *req)
{
    if (vfio_user_reply_due(req)) {
        proxy->replies_due++;
    }
    proxy->nrequests++;
    proxy->request_bytes += req->msg.size - sizeof(req->msg);
    QSIMPLEQ_INSERT_TAIL(&proxy->requests, req, next);
    if (!proxy->req_co) {
        proxy->req_co = qemu_coroutine_create(vfio_user_req_co, proxy);
        aio_co_enter(proxy->ctx, proxy->req_co);
    }
}

/*
 * Back-pressure: leave the rest in socket @s until the handler has caught
 * up (it resumes us), so that what a server sends faster than we serve it
 * costs bounded memory.
 */
static void coroutine_fn vfio_user_co_recv_pause(VFIOUserSocket *s)
{
    VFIOProxy *proxy = s->proxy;
    unsigned int gen = proxy->gen;

    trace_vfio_user_recv_pause(proxy->name, proxy->nrequests,
                               proxy->request_bytes);
    s->recv_state = VFIO_USER_RECV_PAUSED;
    vfio_user_update_handler(proxy);
    while (s->recv_state == VFIO_USER_RECV_PAUSED) {
        qemu_coroutine_yield();
    }
    if (gen == proxy->gen) {
        vfio_user_update_handler(proxy);
    }
}

int coroutine_fn vfio_user_co_recv_request(VFIOUserSocket *s,
                                           VFIOUserHdr *hdr, int *fds,
                                           size_t nfds, Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    size_t len = hdr->size - sizeof(*hdr);
    VFIOUserRequest *req;

    vfio_user_close_fds(fds, nfds);
    if (!vfio_user_request_acceptable(proxy, hdr, errp)) {
        return -1;
    }
    req = g_malloc(sizeof(*req) + len);
    req->msg = *hdr;
    req->twin = s == &proxy->twin;
    if (vfio_user_co_read(s, &req->msg + 1, len, NULL, NULL, errp) < 0) {
        g_free(req);
        return -1;
    }
    req->error = vfio_user_check_request(req, nfds);
    trace_vfio_user_request(proxy->name, hdr->id,
                            vfio_user_command_name(hdr->command),
                            req->error);
    vfio_user_queue_request(proxy, req);

    if (vfio_user_requests_full(proxy) && !proxy->req_waiter) {
        vfio_user_co_recv_pause(s);
        return 0;
    }
    /* Let the handler and the woken callers run before reading on. */
    aio_co_schedule(proxy->ctx, qemu_coroutine_self());
    qemu_coroutine_yield();
    return 0;
}

/* Serve @req: 0 or the negative errno; @reply has room for the data. */
static int coroutine_fn vfio_user_co_dma(VFIOProxy *proxy,
                                         VFIOUserRequest *req,
                                         VFIOUserDMARW *reply)
{
    VFIOUserDMARW *rw = vfio_user_request_rw(req);
    bool is_write = req->msg.command == VFIO_USER_DMA_WRITE;

    if (!proxy->ops || !proxy->ops->dma_rw) {
        return -ENODEV;
    }
    return proxy->ops->dma_rw(proxy->opaque, ldq_le_p(&rw->address),
                              is_write ? rw->data : reply->data,
                              ldq_le_p(&rw->count), is_write);
}

/* Send @reply to @req, on the socket the request came on. */
static void coroutine_fn vfio_user_co_send_reply(VFIOProxy *proxy,
                                                 VFIOUserRequest *req,
                                                 VFIOUserHdr *reply,
                                                 unsigned int gen)
{
    Error *err = NULL;

    if (req->twin) {
        /* The handler is the twin's only writer */
        if (vfio_user_can_send(proxy, gen, reply->command, NULL) &&
            vfio_user_co_write(&proxy->twin, reply, NULL, 0, &err) < 0) {
            vfio_user_lost(proxy, gen, err);
        }
        return;
    }
    qemu_co_mutex_lock(&proxy->send_lock);
    if (vfio_user_can_send(proxy, gen, reply->command, NULL) &&
        vfio_user_co_write(&proxy->main, reply, NULL, 0, &err) < 0) {
        vfio_user_lost(proxy, gen, err);
    }
    qemu_co_mutex_unlock(&proxy->send_lock);
}

/* Serve one request of the server and send the reply it wants. */
static void coroutine_fn vfio_user_co_serve(VFIOProxy *proxy,
                                            VFIOUserRequest *req,
                                            unsigned int gen)
{
    VFIOUserDMARW *rw = vfio_user_request_rw(req);
    bool is_write = req->msg.command == VFIO_USER_DMA_WRITE;
    uint64_t count = req->error ? 0 : ldq_le_p(&rw->count);
    g_autofree VFIOUserDMARW *reply =
        g_malloc0(sizeof(*reply) + (is_write ? 0 : count));
    int ret = req->error;

    if (!ret) {
        ret = vfio_user_co_dma(proxy, req, reply);
    }
    if (req->msg.flags & VFIO_USER_NO_REPLY) {
        return;
    }

    reply->hdr = (VFIOUserHdr) {
        .id = req->msg.id,
        .command = req->msg.command,
        .flags = VFIO_USER_REPLY,
        .size = sizeof(VFIOUserHdr),
    };
    if (ret < 0) {
        reply->hdr.flags |= VFIO_USER_ERROR;
        reply->hdr.error_reply = -ret;
    } else {
        reply->hdr.size = sizeof(*reply) + (is_write ? 0 : count);
        stq_le_p(&reply->address, ldq_le_p(&rw->address));
        stq_le_p(&reply->count, count);
    }
    vfio_user_co_send_reply(proxy, req, &reply->hdr, gen);
}

/* The request handler: serves the queued requests of the server, in order. */
static void coroutine_fn vfio_user_req_co(void *opaque)
{
    VFIOProxy *proxy = opaque;
    VFIOUserRequest *req;

    while ((req = QSIMPLEQ_FIRST(&proxy->requests))) {
        QSIMPLEQ_REMOVE_HEAD(&proxy->requests, next);
        vfio_user_co_serve(proxy, req, proxy->gen);
        if (vfio_user_reply_due(req) && --proxy->replies_due == 0) {
            qemu_co_queue_restart_all(&proxy->send_gate);
        }
        vfio_user_free_request(proxy, req);
        if (!vfio_user_requests_full(proxy)) {
            vfio_user_recv_resume(proxy);
        }
    }
    proxy->req_co = NULL;
}
