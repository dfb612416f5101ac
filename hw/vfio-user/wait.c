/*
 * vfio-user transport: blocking wrappers
 *
 * A caller outside coroutines runs its request in a coroutine of the
 * proxy's AioContext and waits for it.  In the AioContext's home thread
 * (the main loop thread, or a vCPU thread holding the BQL for the main
 * loop's AioContext) it polls: the socket itself while a reply is due
 * (vfio_user_poll_reply()), else the AioContext.  Any other thread, or a
 * caller that must not hold the BQL meanwhile, sleeps on a semaphore
 * with the BQL dropped.
 * See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/coroutine.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "block/aio.h"
#include "block/aio-wait.h"
#include "hw/vfio-user/proxy.h"
#include "proxy-internal.h"

/* A blocking call run in a coroutine for a caller outside coroutines. */
typedef struct VFIOUserCall {
    VFIOProxy *proxy;
    /* The request; NULL to negotiate the version. */
    VFIOUserHdr *msg;
    VFIOUserFDs *fds;
    uint32_t reply_max;
    unsigned int flags;
    Error **errp;
    int ret;
    bool done;
    /* NULL when the caller polls the AioContext. */
    QemuSemaphore *sem;
} VFIOUserCall;

static void coroutine_fn vfio_user_call_co(void *opaque)
{
    VFIOUserCall *call = opaque;

    if (call->msg) {
        call->ret = vfio_user_co_send_recv(call->proxy, call->msg, call->fds,
                                           call->reply_max, call->flags,
                                           call->errp);
    } else {
        call->ret = vfio_user_co_negotiate(call->proxy, call->errp);
    }
    /* With a semaphore, the caller's frame may go as soon as we post. */
    call->done = true;
    if (call->sem) {
        qemu_sem_post(call->sem);
    }
}

/*
 * Run @call in a coroutine and wait for it.  In the home thread of the
 * AioContext (with @unlock false) poll it; else sleep on a semaphore,
 * without the BQL.
 */
static int vfio_user_run(VFIOUserCall *call, bool unlock)
{
    AioContext *ctx = vfio_user_proxy_context(call->proxy);
    Coroutine *co = qemu_coroutine_create(vfio_user_call_co, call);
    bool home = in_aio_context_home_thread(ctx);
    QemuSemaphore sem;
    bool bql;

    if (home && !unlock && (call->flags & VFIO_USER_SEND_NO_REPLY)) {
        /* Posted: done once sent, nothing to poll for (the home thread) */
        aio_co_enter(ctx, co);
        AIO_WAIT_WHILE(ctx, !call->done);
        return call->ret;
    }
    if (home && !unlock) {
        VFIOProxy *proxy = call->proxy;

        vfio_user_poll_begin(proxy);
        aio_co_enter(ctx, co);
        while (!call->done) {
            if (!vfio_user_poll_reply(proxy)) {
                aio_poll(ctx, true);
            }
        }
        vfio_user_poll_end(proxy);
        return call->ret;
    }

    qemu_sem_init(&sem, 0);
    call->sem = &sem;
    if (home) {
        /* Send from here: the message leaves before we return. */
        aio_co_enter(ctx, co);
    } else {
        aio_co_schedule(ctx, co);
    }
    /* Done already (posted, or failed at once): keep the BQL. */
    bql = bql_locked() && !(home && call->done);
    if (bql) {
        bql_unlock();
    }
    qemu_sem_wait(&sem);
    if (bql) {
        bql_lock();
    }
    qemu_sem_destroy(&sem);
    return call->ret;
}

int vfio_user_send_recv(VFIOProxy *proxy, VFIOUserHdr *msg, VFIOUserFDs *fds,
                        uint32_t reply_max, unsigned int flags, Error **errp)
{
    VFIOUserCall call = {
        .proxy = proxy, .msg = msg, .fds = fds, .reply_max = reply_max,
        .flags = flags, .errp = errp,
    };

    if (qemu_in_coroutine()) {
        return vfio_user_co_send_recv(proxy, msg, fds, reply_max, flags,
                                      errp);
    }
    return vfio_user_run(&call, false);
}

int vfio_user_send_recv_unlocked(VFIOProxy *proxy, VFIOUserHdr *msg,
                                 VFIOUserFDs *fds, uint32_t reply_max,
                                 unsigned int flags, Error **errp)
{
    VFIOUserCall call = {
        .proxy = proxy, .msg = msg, .fds = fds, .reply_max = reply_max,
        .flags = flags, .errp = errp,
    };

    assert(!qemu_in_coroutine() && bql_locked() &&
           vfio_user_proxy_context(proxy) == qemu_get_aio_context());
    return vfio_user_run(&call, true);
}

int vfio_user_proxy_attach(VFIOProxy *proxy, QIOChannelSocket *sioc,
                           const char *name, Error **errp)
{
    Error *local_err = NULL;
    VFIOUserCall call = { .proxy = proxy, .errp = &local_err };
    int ret;

    ret = vfio_user_proxy_start_attach(proxy, sioc, name, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vfio_user_run(&call, false);
    if (ret < 0) {
        /* Spec: a client that refuses the version closes the connection. */
        vfio_user_proxy_lost(proxy, error_copy(local_err));
        error_propagate(errp, local_err);
    }
    return ret;
}

int vfio_user_proxy_connect(VFIOProxy *proxy, SocketAddress *addr,
                            Error **errp)
{
    g_autoptr(QIOChannelSocket) sioc = NULL;
    g_autofree char *name = NULL;

    sioc = vfio_user_proxy_open(proxy, addr, false, &name, errp);
    if (!sioc) {
        return name ? -ECONNREFUSED : -EINVAL;
    }
    return vfio_user_proxy_attach(proxy, sioc, name, errp);
}
