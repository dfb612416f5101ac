/*
 * vfio-user transport: VFIOProxy, the connection
 *
 * Its state and the ways it ends, our requests and their waiters, the
 * writes, the receivers (the only readers of the sockets), the reply
 * deadlines and the proxy's lifecycle.  Everything here runs in the
 * proxy's AioContext; no other locking is needed but the CoMutex that
 * keeps whole messages together on the socket.  The fast path is in
 * poll.c, the server's requests in serve.c, connecting in connect.c.
 * See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/coroutine.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "block/aio.h"
#include "block/aio-wait.h"
#include "io/channel-socket.h"
#include "hw/vfio-user/proxy.h"
#include "message.h"
#include "proxy-internal.h"
#include "trace.h"

/*
 * Where a request is, from the waiter's start to its end:
 * QUEUED -> SENT -> RECEIVING [-> STALLED] -> DONE, or DONE from any of
 * them when the request or the connection fails.
 */
typedef enum VFIOUserWaiterState {
    /* Waiting for its turn to be written: @id not valid yet */
    VFIO_USER_WAITER_QUEUED,
    /* On the wire; its reply is awaited */
    VFIO_USER_WAITER_SENT,
    /* The receiver is reading the reply into @msg */
    VFIO_USER_WAITER_RECEIVING,
    /* Still receiving at its deadline: one more period, then it fails */
    VFIO_USER_WAITER_STALLED,
    /* Completed: @ret and @err hold the result; off the list */
    VFIO_USER_WAITER_DONE,
} VFIOUserWaiterState;

/* A caller waiting for a reply. */
struct VFIOUserWaiter {
    QTAILQ_ENTRY(VFIOUserWaiter) next;
    VFIOProxy *proxy;
    VFIOUserWaiterState state;
    /* The caller's coroutine while it sleeps until DONE, else NULL */
    Coroutine *sleeping;
    unsigned int gen;
    uint16_t id;
    uint16_t command;
    /* The request, then room for the reply. */
    VFIOUserHdr *msg;
    uint32_t reply_max;
    VFIOUserFDs *fds;
    /* QEMU_CLOCK_REALTIME, ms; INT64_MAX without a timeout. */
    int64_t deadline;
    int ret;
    Error *err;
};

void vfio_user_error(VFIOProxy *proxy, Error **errp, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(errp, "vfio-user server %s: %s", proxy->name, msg);
}

void vfio_user_set_state(VFIOProxy *proxy, VFIOProxyState state)
{
    trace_vfio_user_state(proxy->name, proxy->state, state);
    proxy->state = state;
}

static bool vfio_user_live(VFIOProxy *proxy)
{
    return proxy->state == VFIO_PROXY_CONNECTING ||
           proxy->state == VFIO_PROXY_CONNECTED;
}

/*
 * Complete a waiter: it leaves the list, and its coroutine is woken if it
 * sleeps.  Takes @err.
 */
static void vfio_user_waiter_done(VFIOUserWaiter *w, int ret, Error *err)
{
    QTAILQ_REMOVE(&w->proxy->waiters, w, next);
    w->state = VFIO_USER_WAITER_DONE;
    w->ret = ret;
    w->err = err;
    if (w->sleeping) {
        aio_co_wake(w->sleeping);
    }
}

/* The receiver is reading @w's reply: only it may complete @w. */
static bool vfio_user_receiving(VFIOUserWaiter *w)
{
    return w->state == VFIO_USER_WAITER_RECEIVING ||
           w->state == VFIO_USER_WAITER_STALLED;
}

static VFIOUserWaiter *vfio_user_find_waiter(VFIOProxy *proxy, uint16_t id)
{
    VFIOUserWaiter *w;

    QTAILQ_FOREACH(w, &proxy->waiters, next) {
        if (w->state != VFIO_USER_WAITER_QUEUED && w->id == id) {
            return w;
        }
    }
    return NULL;
}

/* A message id that no pending request and no late reply uses. */
static uint16_t vfio_user_new_id(VFIOProxy *proxy)
{
    uint16_t id;

    do {
        id = proxy->next_id++;
    } while (id == proxy->late_id || vfio_user_find_waiter(proxy, id));
    return id;
}

/*
 * Fail every waiter with @err.  All are completed before any is woken: a
 * woken coroutine may run others (a handler's failed reply opens the send
 * gate) and change the list, or end, its waiter with it.  The receiver
 * completes the one it is reading into.
 */
static void vfio_user_fail_waiters(VFIOProxy *proxy, Error *err)
{
    g_autofree Coroutine **wake = NULL;
    unsigned int n = 0, i;
    VFIOUserWaiter *w, *next_w;

    QTAILQ_FOREACH(w, &proxy->waiters, next) {
        n++;
    }
    wake = g_new(Coroutine *, n);
    n = 0;
    QTAILQ_FOREACH_SAFE(w, &proxy->waiters, next, next_w) {
        if (!vfio_user_receiving(w)) {
            QTAILQ_REMOVE(&proxy->waiters, w, next);
            w->state = VFIO_USER_WAITER_DONE;
            w->ret = -ECONNRESET;
            w->err = error_copy(err);
            if (w->sleeping) {
                wake[n++] = w->sleeping;
            }
        }
    }
    /* Only we wake a sleeping waiter: these still sleep */
    for (i = 0; i < n; i++) {
        aio_co_wake(wake[i]);
    }
    proxy->late_id = -1;
}

void vfio_user_hang_up(VFIOProxy *proxy, VFIOProxyState state, Error *err)
{
    vfio_user_set_state(proxy, state);
    error_free(proxy->err);
    proxy->err = err;

    /*
     * A shut down socket reads EOF, but a full one does not become
     * writable (a server that stopped reading would hold a writer
     * forever): the coroutines blocked on the sockets are kicked, and
     * their next read or write fails.
     */
    qio_channel_shutdown(proxy->main.ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    if (proxy->twin.ioc) {
        qio_channel_shutdown(proxy->twin.ioc, QIO_CHANNEL_SHUTDOWN_BOTH,
                             NULL);
    }
    vfio_user_fail_waiters(proxy, err);
    /*
     * The queue goes before the writers are woken: the request handler,
     * which a wake may enter at once, serves nothing more.
     */
    vfio_user_drop_requests(proxy);
    if (proxy->twin.ioc) {
        qio_channel_wake_write(proxy->twin.ioc);
        qio_channel_wake_read(proxy->twin.ioc);
    }
    vfio_user_writable(proxy);
    vfio_user_readable(proxy);
    vfio_user_recv_resume(proxy);
    qemu_co_enter_all(&proxy->send_gate, NULL);
}

void vfio_user_lost(VFIOProxy *proxy, unsigned int gen, Error *err)
{
    bool notify = proxy->state == VFIO_PROXY_CONNECTED;

    if (gen != proxy->gen || !vfio_user_live(proxy)) {
        error_free(err);
        return;
    }
    trace_vfio_user_failed(proxy->name, error_get_pretty(err));
    vfio_user_hang_up(proxy, VFIO_PROXY_FAILED, err);
    if (notify && proxy->ops && proxy->ops->failed) {
        proxy->ops->failed(proxy->opaque, proxy->err);
    }
}

bool vfio_user_can_send(VFIOProxy *proxy, unsigned int gen,
                        uint16_t command, Error **errp)
{
    if (gen == proxy->gen) {
        if (proxy->state == VFIO_PROXY_CONNECTED ||
            (proxy->state == VFIO_PROXY_CONNECTING &&
             command == VFIO_USER_VERSION)) {
            return true;
        }
        if (proxy->state == VFIO_PROXY_FAILED) {
            error_setg(errp, "%s", error_get_pretty(proxy->err));
            return false;
        }
    }
    vfio_user_error(proxy, errp, "not connected");
    return false;
}

/*
 * Wait until @s may take more.  The main socket is watched by our
 * AioHandler (poll.c), the twin by qio_channel_yield(); the waiting
 * writer is recorded either way, for a polling thread to watch.
 */
static void coroutine_fn vfio_user_co_wait_writable(VFIOUserSocket *s)
{
    VFIOProxy *proxy = s->proxy;

    s->write_co = qemu_coroutine_self();
    if (s == &proxy->twin) {
        qio_channel_yield(s->ioc, G_IO_OUT);
        s->write_co = NULL;
        return;
    }
    vfio_user_update_handler(proxy);
    qemu_coroutine_yield();
    vfio_user_update_handler(proxy);
}

int coroutine_fn vfio_user_co_write(VFIOUserSocket *s, const VFIOUserHdr *msg,
                                    const int *fds, size_t nfds,
                                    Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    VFIOUserHdr hdr = vfio_user_hdr_swap_le(msg);
    struct iovec iov_buf[] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)(msg + 1), .iov_len = msg->size - sizeof(hdr) },
    };
    struct iovec *iov = iov_buf;
    unsigned int niov = msg->size > sizeof(hdr) ? 2 : 1;
    ssize_t len;

    trace_vfio_user_send(proxy->name, msg->id,
                         vfio_user_command_name(msg->command), msg->size,
                         msg->flags, nfds);
    while (niov) {
        len = qio_channel_writev_full(s->ioc, iov, niov, (int *)fds, nfds,
                                      0, errp);
        if (len == QIO_CHANNEL_ERR_BLOCK) {
            vfio_user_co_wait_writable(s);
            continue;
        }
        if (len < 0) {
            error_prepend(errp, "vfio-user server %s%s: ", proxy->name,
                          s == &proxy->twin ? " (twin socket)" : "");
            return -1;
        }
        /* The descriptors went with the first byte. */
        fds = NULL;
        nfds = 0;
        iov_discard_front(&iov, &niov, len);
    }
    return 0;
}

/* A request that timed out during a teardown: the server is lost. */
static void vfio_user_teardown_timeout(VFIOUserWaiter *w)
{
    VFIOProxy *proxy = w->proxy;
    Error *err = NULL;

    trace_vfio_user_timeout(proxy->name, w->id,
                            vfio_user_command_name(w->command));
    vfio_user_error(proxy, &err, "not responding: no reply to %s "
                    "(id %u) in %u ms, during a reset or unplug",
                    vfio_user_command_name(w->command), w->id,
                    proxy->timeout_ms);
    /* This completes w, whose coroutine may end at once: w is not touched */
    if (w->gen == proxy->gen && vfio_user_live(proxy)) {
        vfio_user_lost(proxy, w->gen, err);
    } else {
        vfio_user_waiter_done(w, -ETIMEDOUT, err);
    }
}

/* @w is past its deadline. */
static void vfio_user_timeout(VFIOUserWaiter *w, int64_t now)
{
    VFIOProxy *proxy = w->proxy;
    const char *cmd = vfio_user_command_name(w->command);
    Error *err = NULL;

    if (proxy->teardown && !vfio_user_receiving(w)) {
        /* A hung server holds a reset or unplug up for one timeout only */
        vfio_user_teardown_timeout(w);
        return;
    }
    if (w->state == VFIO_USER_WAITER_RECEIVING) {
        /* The reply is arriving: give it another period. */
        w->state = VFIO_USER_WAITER_STALLED;
        w->deadline = now + proxy->timeout_ms;
        return;
    }
    trace_vfio_user_timeout(proxy->name, w->id, cmd);
    if (w->state == VFIO_USER_WAITER_STALLED) {
        vfio_user_error(proxy, &err, "stalled in the reply to %s (id %u)",
                        cmd, w->id);
    } else if (w->state == VFIO_USER_WAITER_QUEUED) {
        vfio_user_error(proxy, &err, "does not read its socket: "
                        "%s not sent in %u ms", cmd, proxy->timeout_ms);
    } else if (proxy->late_id >= 0) {
        vfio_user_error(proxy, &err, "not responding: no reply to %s "
                        "(id %u) nor to id %d in %u ms", cmd, w->id,
                        proxy->late_id, proxy->timeout_ms);
    } else {
        /* The first one: it fails alone, its late reply will be dropped */
        proxy->late_id = w->id;
        vfio_user_error(proxy, &err, "no reply to %s (id %u) in %u ms",
                        cmd, w->id, proxy->timeout_ms);
        vfio_user_waiter_done(w, -ETIMEDOUT, err);
        return;
    }
    vfio_user_lost(proxy, w->gen, err);
}

static VFIOUserWaiter *vfio_user_first_expired(VFIOProxy *proxy,
                                               int64_t now)
{
    VFIOUserWaiter *w;

    QTAILQ_FOREACH(w, &proxy->waiters, next) {
        if (w->deadline <= now) {
            return w;
        }
    }
    return NULL;
}

/*
 * One timer serves all the waiters, so that a request does not have to
 * arm one: it only arms the timer when it is idle.
 */
static void vfio_user_timer_cb(void *opaque)
{
    VFIOProxy *proxy = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t next = INT64_MAX;
    VFIOUserWaiter *w;

    /*
     * One at a time, looking again each time: a timeout may wake
     * coroutines that change the list.  Each one completes its waiter or
     * moves its deadline on.
     */
    while ((w = vfio_user_first_expired(proxy, now))) {
        vfio_user_timeout(w, now);
    }
    QTAILQ_FOREACH(w, &proxy->waiters, next) {
        next = MIN(next, w->deadline);
    }
    if (next != INT64_MAX) {
        timer_mod(&proxy->timer, next);
    }
}

static void vfio_user_add_waiter(VFIOProxy *proxy, VFIOUserWaiter *w)
{
    QTAILQ_INSERT_TAIL(&proxy->waiters, w, next);
    w->deadline = INT64_MAX;
    if (proxy->timeout_ms) {
        w->deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                      proxy->timeout_ms;
        if (!timer_pending(&proxy->timer) ||
            timer_expire_time_ns(&proxy->timer) > w->deadline * SCALE_MS) {
            timer_mod(&proxy->timer, w->deadline);
        }
    }
}

/* Is the calling coroutine the request handler? */
static bool vfio_user_in_handler(VFIOProxy *proxy)
{
    return proxy->req_co && proxy->req_co == qemu_coroutine_self();
}

/*
 * libvfio-user waits for the reply to its DMA request and takes the next
 * message it reads for it: while replies to the server are due, nothing
 * else goes out.  The handler itself may send (a DMA request that reaches
 * the device's own BAR).  Called with send_lock held.
 */
static void coroutine_fn vfio_user_co_pass_gate(VFIOUserWaiter *w)
{
    VFIOProxy *proxy = w->proxy;

    while (w->state != VFIO_USER_WAITER_DONE && proxy->replies_due &&
           !vfio_user_in_handler(proxy) &&
           proxy->gen == w->gen && proxy->state == VFIO_PROXY_CONNECTED) {
        qemu_co_queue_wait(&proxy->send_gate, &proxy->send_lock);
    }
}

/*
 * Write @w's request, with send_lock held.  @w is DONE if it cannot go
 * out; a failed write returns -1 with @errp set, and breaks the stream.
 */
static int coroutine_fn vfio_user_co_write_request(VFIOUserWaiter *w,
                                                   bool posted, Error **errp)
{
    VFIOProxy *proxy = w->proxy;
    VFIOUserHdr *msg = w->msg;
    VFIOUserFDs *fds = w->fds;
    Error *err = NULL;

    if (!vfio_user_can_send(proxy, w->gen, msg->command, &err)) {
        vfio_user_waiter_done(w, -ENOTCONN, err);
        return 0;
    }
    w->id = msg->id = vfio_user_new_id(proxy);
    msg->flags = VFIO_USER_REQUEST | (posted ? VFIO_USER_NO_REPLY : 0);
    msg->error_reply = 0;
    if (fds) {
        fds->nrecv = 0;
    }
    if (vfio_user_co_write(&proxy->main, msg, fds ? fds->send : NULL,
                           fds ? fds->nsend : 0, errp) < 0) {
        return -1;
    }
    /* Unless the connection failed while the message went out */
    if (w->state == VFIO_USER_WAITER_QUEUED) {
        w->state = VFIO_USER_WAITER_SENT;
    }
    return 0;
}

/*
 * Send @w's request: messages leave in the order their senders take the
 * send lock, and a posted one is complete once written.
 */
static void coroutine_fn vfio_user_co_send(VFIOUserWaiter *w, bool posted)
{
    VFIOProxy *proxy = w->proxy;
    Error *err = NULL;
    int ret = 0;

    qemu_co_mutex_lock(&proxy->send_lock);
    vfio_user_co_pass_gate(w);
    if (w->state != VFIO_USER_WAITER_DONE) {
        ret = vfio_user_co_write_request(w, posted, &err);
    }
    qemu_co_mutex_unlock(&proxy->send_lock);
    if (ret < 0) {
        /* The stream is broken: that fails every waiter, w included. */
        vfio_user_lost(proxy, w->gen, err);
        if (w->state != VFIO_USER_WAITER_DONE) {
            vfio_user_error(proxy, &err, "connection lost");
            vfio_user_waiter_done(w, -ECONNRESET, err);
        }
        return;
    }
    if (posted) {
        vfio_user_posted(proxy);
        if (w->state != VFIO_USER_WAITER_DONE) {
            vfio_user_waiter_done(w, 0, NULL);
        }
    }
}

/* Sleep until @w is DONE. */
static void coroutine_fn vfio_user_co_await(VFIOUserWaiter *w)
{
    VFIOProxy *proxy = w->proxy;
    bool handler = vfio_user_in_handler(proxy);

    if (w->state == VFIO_USER_WAITER_DONE) {
        return;
    }
    /* With a twin socket, the main socket is watched only for this */
    proxy->nwaiting++;
    vfio_user_update_handler(proxy);
    if (handler) {
        /* Our reply may be behind queued requests: read on. */
        proxy->req_waiter = w;
    }
    while (w->state != VFIO_USER_WAITER_DONE) {
        if (handler) {
            vfio_user_recv_resume(proxy);
        }
        w->sleeping = qemu_coroutine_self();
        qemu_coroutine_yield();
        w->sleeping = NULL;
    }
    proxy->nwaiting--;
    vfio_user_update_handler(proxy);
    if (handler) {
        proxy->req_waiter = NULL;
    }
}

/*
 * The timeout runs from the start: a message that cannot be sent in time
 * means the server does not read.
 */
int coroutine_fn vfio_user_co_request(VFIOProxy *proxy, VFIOUserHdr *msg,
                                      VFIOUserFDs *fds, uint32_t reply_max,
                                      unsigned int flags, Error **errp)
{
    VFIOUserWaiter w = {
        .proxy = proxy,
        .state = VFIO_USER_WAITER_QUEUED,
        .gen = proxy->gen,
        .command = msg->command,
        .msg = msg,
        .reply_max = reply_max,
        .fds = fds,
    };

    if (!vfio_user_can_send(proxy, w.gen, msg->command, errp)) {
        return -ENOTCONN;
    }
    vfio_user_add_waiter(proxy, &w);
    vfio_user_co_send(&w, flags & VFIO_USER_SEND_NO_REPLY);
    vfio_user_co_await(&w);
    if (w.ret < 0) {
        error_propagate(errp, w.err);
    }
    return w.ret;
}

int coroutine_fn vfio_user_co_send_recv(VFIOProxy *proxy, VFIOUserHdr *msg,
                                        VFIOUserFDs *fds, uint32_t reply_max,
                                        unsigned int flags, Error **errp)
{
    bool posted = flags & VFIO_USER_SEND_NO_REPLY;

    if (msg->size < sizeof(*msg) || (!posted && reply_max < sizeof(*msg)) ||
        (fds && fds->max_recv && !fds->recv)) {
        vfio_user_error(proxy, errp, "invalid %s message",
                        vfio_user_command_name(msg->command));
        return -EINVAL;
    }
    if (vfio_user_data_len(msg) > proxy->caps.max_xfer) {
        vfio_user_error(proxy, errp, "%s message with %u bytes of data "
                        "exceeds the server's max_data_xfer_size (%" PRIu64
                        ")", vfio_user_command_name(msg->command),
                        vfio_user_data_len(msg), proxy->caps.max_xfer);
        return -E2BIG;
    }
    if (fds && fds->nsend > proxy->caps.max_send_fds) {
        vfio_user_error(proxy, errp, "%u file descriptors exceed the "
                        "server's limit of %u", fds->nsend,
                        proxy->caps.max_send_fds);
        return -E2BIG;
    }
    return vfio_user_co_request(proxy, msg, fds, reply_max, flags, errp);
}

/*
 * Wait until @s is readable: the main socket's receiver waits for our
 * AioHandler (or a polling thread) to wake it, the twin's in
 * qio_channel_yield().
 */
static void coroutine_fn vfio_user_co_wait_readable(VFIOUserSocket *s)
{
    if (s == &s->proxy->twin) {
        qio_channel_yield(s->ioc, G_IO_IN);
        return;
    }
    s->recv_state = VFIO_USER_RECV_WAITING;
    qemu_coroutine_yield();
}

int coroutine_fn vfio_user_co_read(VFIOUserSocket *s, void *buf, size_t len,
                                   int **fds, size_t *nfds, Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    size_t done = 0;
    ssize_t ret;

    while (done < len) {
        struct iovec iov = {
            .iov_base = (char *)buf + done, .iov_len = len - done,
        };

        ret = qio_channel_readv_full(s->ioc, &iov, 1, done ? NULL : fds,
                                     done ? NULL : nfds, 0, errp);
        if (ret == QIO_CHANNEL_ERR_BLOCK) {
            vfio_user_co_wait_readable(s);
            continue;
        }
        if (ret < 0) {
            error_prepend(errp, "vfio-user server %s: ", proxy->name);
            return -1;
        }
        if (ret == 0) {
            if (!done && fds) {
                return 0;
            }
            vfio_user_error(proxy, errp, "connection closed in a message");
            return -1;
        }
        done += ret;
    }
    return 1;
}

/* Consume and drop @len bytes of payload. */
static int coroutine_fn vfio_user_co_skip(VFIOUserSocket *s, size_t len,
                                          Error **errp)
{
    size_t chunk = MIN(len, 64 * KiB);
    g_autofree void *buf = chunk ? g_malloc(chunk) : NULL;

    while (len) {
        if (vfio_user_co_read(s, buf, MIN(len, chunk), NULL, NULL,
                              errp) < 0) {
            return -1;
        }
        len -= MIN(len, chunk);
    }
    return 0;
}

/*
 * Why the reply @hdr, with @nfds descriptors, fails its request @w (a
 * negative errno, @errp set), or 0: it is good.
 */
static int vfio_user_check_reply(VFIOUserWaiter *w, const VFIOUserHdr *hdr,
                                 size_t nfds, Error **errp)
{
    VFIOProxy *proxy = w->proxy;
    const char *cmd = vfio_user_command_name(hdr->command);
    int ret;

    if (hdr->command != w->command) {
        vfio_user_error(proxy, errp, "reply to %s (id %u) is for %s",
                        vfio_user_command_name(w->command), w->id, cmd);
        return -EPROTO;
    }
    if (hdr->flags & VFIO_USER_NO_REPLY) {
        vfio_user_error(proxy, errp, "reply to %s (id %u) has no-reply set",
                        cmd, w->id);
        return -EPROTO;
    }
    if (nfds > (w->fds ? w->fds->max_recv : 0)) {
        vfio_user_error(proxy, errp, "reply to %s (id %u) carries %zu "
                        "unexpected file descriptors", cmd, w->id, nfds);
        return -EPROTO;
    }
    if (hdr->flags & VFIO_USER_ERROR) {
        ret = vfio_user_reply_errno(hdr->error_reply);
        vfio_user_error(proxy, errp, "%s failed: %s", cmd, strerror(-ret));
        return ret;
    }
    if (hdr->size > w->reply_max) {
        vfio_user_error(proxy, errp, "reply to %s (id %u) of %u bytes "
                        "exceeds the %u expected", cmd, w->id, hdr->size,
                        w->reply_max);
        return -E2BIG;
    }
    return 0;
}

/*
 * Receive the rest of a reply whose header is @hdr and whose descriptors
 * are @fds (ours to close or hand over).
 */
static int coroutine_fn vfio_user_co_recv_reply(VFIOUserSocket *s,
                                                VFIOUserHdr *hdr,
                                                int *fds, size_t nfds,
                                                Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    VFIOUserWaiter *w = vfio_user_find_waiter(proxy, hdr->id);
    size_t len = hdr->size - sizeof(*hdr);
    Error *err = NULL;
    int ret;

    if (!w) {
        vfio_user_close_fds(fds, nfds);
        trace_vfio_user_drop_reply(proxy->name, hdr->id,
                                   vfio_user_command_name(hdr->command),
                                   hdr->id == proxy->late_id ? "late" :
                                   "unexpected");
        if (hdr->id == proxy->late_id) {
            proxy->late_id = -1;
        }
        return vfio_user_co_skip(s, len, errp);
    }
    ret = vfio_user_check_reply(w, hdr, nfds, &err);
    if (ret < 0) {
        /* A bad reply fails its request, but is consumed whole. */
        vfio_user_close_fds(fds, nfds);
        vfio_user_waiter_done(w, ret, err);
        return vfio_user_co_skip(s, len, errp);
    }

    /* Read the payload straight into the caller's buffer. */
    w->state = VFIO_USER_WAITER_RECEIVING;
    if (vfio_user_co_read(s, w->msg + 1, len, NULL, NULL, errp) < 0) {
        vfio_user_close_fds(fds, nfds);
        vfio_user_waiter_done(w, -ECONNRESET, error_copy(*errp));
        return -1;
    }
    *w->msg = *hdr;
    if (w->fds) {
        if (nfds) {
            memcpy(w->fds->recv, fds, nfds * sizeof(int));
        }
        w->fds->nrecv = nfds;
    }
    vfio_user_waiter_done(w, 0, NULL);
    return 0;
}

/*
 * Check a header received on @s: false, with @errp set, if the message
 * breaks the protocol.  A reply may be as large as its caller allows;
 * anything else must fit what we negotiated.
 */
static bool vfio_user_check_header(VFIOUserSocket *s, const VFIOUserHdr *hdr,
                                   size_t nfds, Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    uint32_t type = hdr->flags & VFIO_USER_TYPE;
    VFIOUserWaiter *w = type == VFIO_USER_REPLY ?
                        vfio_user_find_waiter(proxy, hdr->id) : NULL;
    uint32_t max = MAX(VFIO_USER_MAX_XFER + VFIO_USER_XFER_OVERHEAD,
                       w ? w->reply_max : 0);

    if (type != VFIO_USER_REQUEST && type != VFIO_USER_REPLY) {
        vfio_user_error(proxy, errp, "message of unknown type %u", type);
    } else if (hdr->flags & ~(VFIO_USER_TYPE | VFIO_USER_NO_REPLY |
                              VFIO_USER_ERROR)) {
        vfio_user_error(proxy, errp, "message with unknown flags 0x%x",
                        hdr->flags);
    } else if (hdr->size < sizeof(*hdr) ||
               (type == VFIO_USER_REPLY && hdr->size > max)) {
        vfio_user_error(proxy, errp, "%s message of invalid size %u",
                        vfio_user_command_name(hdr->command), hdr->size);
    } else if (nfds > VFIO_USER_MAX_FDS) {
        vfio_user_error(proxy, errp, "%zu file descriptors in a message",
                        nfds);
    } else if (type == VFIO_USER_REPLY && s == &proxy->twin) {
        vfio_user_error(proxy, errp, "%s reply on the twin socket",
                        vfio_user_command_name(hdr->command));
    } else {
        return true;
    }
    return false;
}

/* Receive one message on @s. */
static int coroutine_fn vfio_user_co_recv_one(VFIOUserSocket *s,
                                              Error **errp)
{
    VFIOProxy *proxy = s->proxy;
    VFIOUserHdr hdr;
    g_autofree int *fds = NULL;
    size_t nfds = 0;
    int ret;

    /*
     * Wait for the socket to be readable first, rather than find it empty
     * with one more recvmsg() after each message: our handler is level
     * triggered, so a message already there is not missed.
     */
    if (s == &proxy->main) {
        vfio_user_co_wait_readable(s);
    }
    ret = vfio_user_co_read(s, &hdr, sizeof(hdr), &fds, &nfds, errp);
    if (ret <= 0) {
        vfio_user_close_fds(fds, nfds);
        if (ret == 0) {
            vfio_user_error(proxy, errp, "connection closed");
        }
        return -1;
    }
    hdr = vfio_user_hdr_swap_le(&hdr);
    trace_vfio_user_recv(proxy->name, hdr.id,
                         vfio_user_command_name(hdr.command), hdr.size,
                         hdr.flags, nfds);

    if (!vfio_user_check_header(s, &hdr, nfds, errp)) {
        vfio_user_close_fds(fds, nfds);
        return -1;
    }
    if ((hdr.flags & VFIO_USER_TYPE) == VFIO_USER_REPLY) {
        return vfio_user_co_recv_reply(s, &hdr, fds, nfds, errp);
    }
    return vfio_user_co_recv_request(s, &hdr, fds, nfds, errp);
}

void coroutine_fn vfio_user_receiver_co(void *opaque)
{
    VFIOUserSocket *s = opaque;
    VFIOProxy *proxy = s->proxy;
    QIOChannel *ioc = QIO_CHANNEL(object_ref(s->ioc));
    unsigned int gen = proxy->gen;
    Error *err = NULL;

    s->recv_state = VFIO_USER_RECV_BUSY;
    while (gen == proxy->gen && vfio_user_live(proxy)) {
        if (vfio_user_co_recv_one(s, &err) < 0) {
            vfio_user_lost(proxy, gen, err);
            err = NULL;
        }
    }
    object_unref(ioc);
    s->recv_co = NULL;
    vfio_user_update_handler(proxy);
}

void vfio_user_msg_init(VFIOUserHdr *msg, VFIOUserCommand command,
                        uint32_t size)
{
    *msg = (VFIOUserHdr) { .command = command, .size = size };
}

VFIOProxy *vfio_user_proxy_new(AioContext *ctx, const VFIOUserProxyOps *ops,
                               void *opaque)
{
    VFIOProxy *proxy = g_new0(VFIOProxy, 1);

    proxy->ctx = ctx ? ctx : qemu_get_aio_context();
    proxy->ops = ops;
    proxy->opaque = opaque;
    proxy->name = g_strdup("(none)");
    proxy->timeout_ms = VFIO_USER_DEFAULT_TIMEOUT_MS;
    proxy->state = VFIO_PROXY_CLOSED;
    proxy->main.proxy = proxy;
    proxy->twin.proxy = proxy;
    proxy->late_id = -1;
    vfio_user_fast_path_init(proxy);
    vfio_user_default_caps(&proxy->caps);
    aio_timer_init(proxy->ctx, &proxy->timer, QEMU_CLOCK_REALTIME, SCALE_MS,
                   vfio_user_timer_cb, proxy);
    qemu_co_mutex_init(&proxy->send_lock);
    qemu_co_queue_init(&proxy->send_gate);
    QTAILQ_INIT(&proxy->waiters);
    QSIMPLEQ_INIT(&proxy->requests);
    return proxy;
}

void vfio_user_proxy_set_timeout(VFIOProxy *proxy, uint32_t timeout_ms)
{
    proxy->timeout_ms = timeout_ms;
}

void vfio_user_proxy_begin_teardown(VFIOProxy *proxy)
{
    if (proxy) {
        proxy->teardown++;
    }
}

void vfio_user_proxy_end_teardown(VFIOProxy *proxy)
{
    if (proxy) {
        assert(proxy->teardown);
        proxy->teardown--;
    }
}

void vfio_user_drain(VFIOProxy *proxy)
{
    assert(!qemu_in_coroutine() && in_aio_context_home_thread(proxy->ctx));
    AIO_WAIT_WHILE(proxy->ctx, proxy->main.recv_co || proxy->req_co ||
                               proxy->twin.recv_co);
    assert(!proxy->replies_due && QTAILQ_EMPTY(&proxy->waiters));
}

void vfio_user_proxy_lost(VFIOProxy *proxy, Error *err)
{
    vfio_user_lost(proxy, proxy->gen, err);
}

uint32_t vfio_user_proxy_timeout(VFIOProxy *proxy)
{
    return proxy->timeout_ms;
}

/* The owner ends a live connection, quietly, to @state. */
static void vfio_user_client_hang_up(VFIOProxy *proxy, VFIOProxyState state)
{
    Error *err = NULL;

    if (vfio_user_live(proxy)) {
        vfio_user_error(proxy, &err, "connection closed by the client");
        vfio_user_hang_up(proxy, state, err);
    }
}

void vfio_user_proxy_abort(VFIOProxy *proxy)
{
    vfio_user_client_hang_up(proxy, VFIO_PROXY_FAILED);
}

void vfio_user_proxy_close(VFIOProxy *proxy)
{
    vfio_user_client_hang_up(proxy, VFIO_PROXY_CLOSED);
    if (proxy->state != VFIO_PROXY_CLOSED) {
        vfio_user_set_state(proxy, VFIO_PROXY_CLOSED);
    }
    if (proxy->main.ioc) {
        vfio_user_drain(proxy);
        vfio_user_clear_handler(proxy);
        g_clear_pointer(&proxy->main.ioc, object_unref);
    }
    if (proxy->twin.ioc) {
        g_clear_pointer(&proxy->twin.ioc, object_unref);
        proxy->watch = VFIO_USER_WATCH_ALL;
    }
}

void vfio_user_proxy_free(VFIOProxy *proxy)
{
    if (!proxy) {
        return;
    }
    vfio_user_proxy_close(proxy);
    timer_del(&proxy->timer);
    vfio_user_fast_path_cleanup(proxy);
    error_free(proxy->err);
    g_free(proxy->name);
    g_free(proxy);
}

VFIOProxyState vfio_user_proxy_state(VFIOProxy *proxy)
{
    return proxy->state;
}

const VFIOUserCaps *vfio_user_proxy_caps(VFIOProxy *proxy)
{
    return &proxy->caps;
}

const char *vfio_user_proxy_name(VFIOProxy *proxy)
{
    return proxy->name;
}

AioContext *vfio_user_proxy_context(VFIOProxy *proxy)
{
    return proxy->ctx;
}
