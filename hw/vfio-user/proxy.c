/*
 * vfio-user transport: VFIOProxy
 *
 * Everything here runs in the proxy's AioContext: the receiver coroutine
 * (the only reader of the socket), the request handler coroutine (serves
 * the server's DMA requests), the coroutines of the callers, and the
 * timer of the reply deadlines.  For the main loop's AioContext the BQL
 * provides the mutual exclusion, for an IOThread's its single thread: no
 * other locking is needed but the CoMutex that keeps whole messages
 * together on the socket.
 * See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sched.h>
#include <sys/un.h>
#include "qapi/error.h"
#include "qemu/atomic.h"
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
 * Adaptive polling of a waiting thread (vfio_user_poll_reply()): the
 * window starts at 4 us, doubles (at least to what the last reply took)
 * while replies come within poll_max_ns, halves when they do not.  A
 * blocked poller looks at timers and bottom halves every 10 ms.
 */
#define VFIO_USER_POLL_START_NS     4000
#define VFIO_USER_POLL_GROW         2
#define VFIO_USER_POLL_SHRINK       2
#define VFIO_USER_POLL_SLICE_MS     10
/*
 * Replies per phase of the chosen way, and of trying the other one; the
 * last VFIO_USER_POLL_TIMED of each are timed.
 */
#define VFIO_USER_POLL_EPOCH        256
#define VFIO_USER_POLL_PROBE        64
#define VFIO_USER_POLL_TIMED        32
/*
 * Without a twin socket, how long the main loop leaves the socket to
 * polling waiters after the last one (a server request that comes while
 * nobody waits is served at most this late, but after a posted write).
 */
#define VFIO_USER_ASIDE_MS          1

/* Room for the VERSION reply. */
#define VFIO_USER_VERSION_REPLY_MAX 4096

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
typedef struct VFIOUserWaiter {
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
} VFIOUserWaiter;

/* A request of the server, queued for the handler. */
typedef struct VFIOUserRequest {
    QSIMPLEQ_ENTRY(VFIOUserRequest) next;
    /* 0, or the negative errno to reply without calling the device. */
    int error;
    /* It came on the twin socket: so does its reply. */
    bool twin;
    /*
     * The whole message; its header in host byte order, the payload as
     * it came: little-endian and not aligned, read with ld*_le_p() at the
     * offsets below.
     */
    VFIOUserHdr msg;
} VFIOUserRequest;

/* Offsets of VFIOUserDMARW's fields in the payload of a request */
#define VFIO_USER_DMA_RW_ADDRESS    0
#define VFIO_USER_DMA_RW_COUNT      8
#define VFIO_USER_DMA_RW_DATA       16
QEMU_BUILD_BUG_ON(offsetof(VFIOUserDMARW, data) !=
                  sizeof(VFIOUserHdr) + VFIO_USER_DMA_RW_DATA);

struct VFIOProxy {
    AioContext *ctx;
    const VFIOUserProxyOps *ops;
    void *opaque;
    char *name;
    uint32_t timeout_ms;
    /*
     * In a teardown (unplug, reset; nested count): the first timeout
     * declares the server lost.
     */
    unsigned int teardown;

    VFIOProxyState state;
    /* Counts channels: work of an older one must not touch the current. */
    unsigned int gen;
    QIOChannel *ioc;
    /* The socket of @ioc, polled by our own handler (see below). */
    int fd;
    /* The receiver waits for the socket to become readable. */
    bool recv_waiting;
    /*
     * The channel our AioHandler is registered on (a reference: its fd
     * stays open while registered), and for what; see update_handler.
     */
    QIOChannel *handler_ioc;
    bool handler_read;
    bool handler_write;
    /*
     * Requests sent whose reply is awaited, and the threads that wait for
     * one by polling the socket themselves (vfio_user_poll_reply()).
     */
    unsigned int nwaiting;
    unsigned int pollers;
    /*
     * Without a twin socket: the main loop stops watching the socket
     * while threads poll it (see vfio_user_update_handler()), until a
     * posted write goes out or @aside_timer finds no poller for a while.
     */
    bool aside;
    QEMUTimer aside_timer;
    int64_t last_poll;
    /* Adaptive polling before a poller blocks, ns (0: off) */
    uint64_t poll_ns;
    uint64_t poll_max_ns;
    /*
     * Whether polling pays at all (vfio_user_poll_account()): blocking is
     * the chosen way, we are trying the other one, and the replies of the
     * current phase.
     */
    bool poll_off;
    bool poll_probing;
    unsigned int phase_n;
    int64_t phase_ns;
    int64_t chosen_avg_ns;
    /* A writer waits for the socket to become writable. */
    Coroutine *write_co;
    /* Why the proxy failed. */
    Error *err;
    VFIOUserCaps caps;

    /* Held while a message is written. */
    CoMutex send_lock;
    /* Requests wait here while replies to the server are due. */
    CoQueue send_gate;
    unsigned int replies_due;
    uint16_t next_id;
    /* The id of a request that timed out and is still unanswered, or -1. */
    int late_id;
    /* Every request from its start until it is sent, or answered. */
    QTAILQ_HEAD(, VFIOUserWaiter) waiters;
    /* Runs at the earliest deadline of the waiters, or a bit later. */
    QEMUTimer timer;

    Coroutine *recv_co;
    /* The receiver waits for the handler to drain the request queue. */
    bool recv_paused;
    /*
     * The twin socket (twin_socket capability), or NULL: the server's
     * requests and our replies to them travel on it, so that neither
     * side's request can come between the other's request and reply.
     * Its receiver, @twin_co, is the only reader; the request handler
     * the only writer.  It waits with qio_channel_yield(): it is not on
     * the path of our requests' replies.
     */
    QIOChannel *twin_ioc;
    Coroutine *twin_co;
    bool twin_paused;
    Coroutine *req_co;
    /* The handler waits for the reply to a request of its own. */
    bool req_waiting;
    QSIMPLEQ_HEAD(, VFIOUserRequest) requests;
    unsigned int nrequests;
    size_t request_bytes;
};

/* Set @errp to an error that names the server. */
static void G_GNUC_PRINTF(3, 4)
vfio_user_error(VFIOProxy *proxy, Error **errp, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(errp, "vfio-user server %s: %s", proxy->name, msg);
}

static void vfio_user_set_state(VFIOProxy *proxy, VFIOProxyState state)
{
    trace_vfio_user_state(proxy->name, proxy->state, state);
    proxy->state = state;
}

/*
 * Complete a waiter: it leaves the list, and its coroutine is woken if it
 * sleeps.  Takes @err.
 */
static void vfio_user_complete(VFIOUserWaiter *w, int ret, Error *err)
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
 * The socket is polled by one AioHandler, registered while the receiver
 * lives, instead of qio_channel_yield(), which registers and removes a
 * handler around every wait: per message that costs two GLib wakeups and
 * an extra poll (docs/devel/vfio-user.rst, "Performance").  It steps
 * aside (is not registered for reading) while threads wait for replies by
 * polling the socket themselves, so that a reply does not wake the main
 * loop too: with a twin socket, whenever no coroutine waits for a reply
 * (the server's requests come on the twin); without, from the first
 * polling waiter until a posted write (whose effects may make the server
 * send requests) or VFIO_USER_ASIDE_MS without a polling waiter.
 */
static void vfio_user_readable(void *opaque)
{
    VFIOProxy *proxy = opaque;

    if (proxy->recv_waiting) {
        proxy->recv_waiting = false;
        aio_co_wake(proxy->recv_co);
    }
}

static void vfio_user_writable(void *opaque)
{
    VFIOProxy *proxy = opaque;
    Coroutine *co = proxy->write_co;

    if (co) {
        proxy->write_co = NULL;
        aio_co_wake(co);
    }
}

/* Remove our AioHandler, from the last channel's socket or the current. */
static void vfio_user_clear_handler(VFIOProxy *proxy)
{
    if (proxy->handler_ioc) {
        qio_channel_set_aio_fd_handler(proxy->handler_ioc, proxy->ctx, NULL,
                                       proxy->ctx, NULL, NULL);
        g_clear_pointer(&proxy->handler_ioc, object_unref);
    }
    proxy->handler_read = false;
    proxy->handler_write = false;
}

/*
 * The socket is polled for reading while the receiver lives and is not
 * paused by back-pressure (the handler is level triggered: a paused
 * receiver would make every poll spin on the unread message).
 * The handler is registered with the channel, which we hold while it is:
 * its fd is not closed (only finalizing the channel closes it; nothing
 * calls qio_channel_close()) and so not reused under the handler.
 */
static void vfio_user_update_handler(VFIOProxy *proxy)
{
    bool aside = proxy->twin_ioc || proxy->aside;
    bool read = proxy->recv_co && !proxy->recv_paused &&
                (!aside || (proxy->nwaiting && !proxy->pollers));
    bool write = proxy->write_co;

    if (proxy->handler_ioc != proxy->ioc) {
        vfio_user_clear_handler(proxy);
    }
    /* Registering notifies the AioContext: do it only for a change */
    if (!proxy->ioc ||
        (read == proxy->handler_read && write == proxy->handler_write)) {
        return;
    }
    qio_channel_set_aio_fd_handler(proxy->ioc, proxy->ctx,
                                   read ? vfio_user_readable : NULL,
                                   proxy->ctx,
                                   write ? vfio_user_writable : NULL, proxy);
    if (!read && !write) {
        g_clear_pointer(&proxy->handler_ioc, object_unref);
    } else if (!proxy->handler_ioc) {
        proxy->handler_ioc = QIO_CHANNEL(object_ref(proxy->ioc));
    }
    proxy->handler_read = read;
    proxy->handler_write = write;
}

/* Polling waiters read the socket: the main loop stops watching it. */
static void vfio_user_step_aside(VFIOProxy *proxy)
{
    proxy->aside = true;
    vfio_user_update_handler(proxy);
    timer_mod(&proxy->aside_timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
              VFIO_USER_ASIDE_MS);
}

static void vfio_user_step_in(VFIOProxy *proxy)
{
    proxy->aside = false;
    timer_del(&proxy->aside_timer);
    vfio_user_update_handler(proxy);
}

/* Watch the socket again once polling waiters are gone for a while. */
static void vfio_user_aside_timer_cb(void *opaque)
{
    VFIOProxy *proxy = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (proxy->pollers || now - proxy->last_poll < VFIO_USER_ASIDE_MS) {
        timer_mod(&proxy->aside_timer, now + VFIO_USER_ASIDE_MS);
        return;
    }
    vfio_user_step_in(proxy);
}

/* Is the request queue full (the receiver pauses)? */
static bool vfio_user_requests_full(VFIOProxy *proxy)
{
    return proxy->nrequests >= VFIO_USER_MAX_REQUESTS ||
           proxy->request_bytes >= VFIO_USER_MAX_REQUEST_BYTES;
}

/* Let a receiver paused by back-pressure read on. */
static void vfio_user_recv_resume(VFIOProxy *proxy)
{
    if (proxy->recv_paused) {
        proxy->recv_paused = false;
        aio_co_wake(proxy->recv_co);
    }
    if (proxy->twin_paused) {
        proxy->twin_paused = false;
        aio_co_wake(proxy->twin_co);
    }
}

static void vfio_user_free_request(VFIOProxy *proxy, VFIOUserRequest *req)
{
    proxy->nrequests--;
    proxy->request_bytes -= req->msg.size - sizeof(req->msg);
    g_free(req);
}

/*
 * Kick the coroutines waiting on the twin socket in qio_channel_yield():
 * a shut down socket reads EOF, but a full one does not become writable
 * (a server that stopped reading would hold the handler forever).  They
 * try again and fail.  As qio_channel_wake_read(), for writes too.
 */
static void vfio_user_twin_wake(QIOChannel *ioc)
{
    Coroutine *co = qatomic_xchg(&ioc->write_coroutine, NULL);

    if (co) {
        aio_co_wake(co);
    }
    qio_channel_wake_read(ioc);
}

/*
 * Drop the channel: every waiter fails at once with @err, queued server
 * requests are dropped, and the coroutines blocked on the socket are
 * kicked; they see the new state and end.  Takes @err.
 */
static void vfio_user_drop_channel(VFIOProxy *proxy, VFIOProxyState state,
                                   Error *err)
{
    g_autofree Coroutine **wake = NULL;
    unsigned int n = 0, i;
    VFIOUserWaiter *w, *next_w;
    VFIOUserRequest *req;

    vfio_user_set_state(proxy, state);
    error_free(proxy->err);
    proxy->err = err;

    qio_channel_shutdown(proxy->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    if (proxy->twin_ioc) {
        qio_channel_shutdown(proxy->twin_ioc, QIO_CHANNEL_SHUTDOWN_BOTH,
                             NULL);
        vfio_user_twin_wake(proxy->twin_ioc);
    }

    /*
     * Complete every waiter before waking any: a woken coroutine may run
     * others (a handler's failed reply opens the send gate) and change
     * the list, or end, its waiter with it.  The receiver completes the
     * one it is reading into.
     */
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

    while ((req = QSIMPLEQ_FIRST(&proxy->requests))) {
        QSIMPLEQ_REMOVE_HEAD(&proxy->requests, next);
        if (!(req->msg.flags & VFIO_USER_NO_REPLY) && !req->twin) {
            proxy->replies_due--;
        }
        vfio_user_free_request(proxy, req);
    }

    /*
     * Kick the coroutines blocked on the socket (shutdown() does not make
     * a full socket writable); their next read or write fails.
     */
    vfio_user_writable(proxy);
    vfio_user_readable(proxy);
    vfio_user_recv_resume(proxy);
    qemu_co_enter_all(&proxy->send_gate, NULL);
}

/*
 * The connection @gen failed: move to VFIO_PROXY_FAILED and tell the
 * owner.  Does nothing if that connection is gone already.  Takes @err.
 */
static void vfio_user_fail(VFIOProxy *proxy, unsigned int gen, Error *err)
{
    bool notify = proxy->state == VFIO_PROXY_CONNECTED;

    if (gen != proxy->gen || (proxy->state != VFIO_PROXY_CONNECTED &&
                              proxy->state != VFIO_PROXY_CONNECTING)) {
        error_free(err);
        return;
    }
    trace_vfio_user_failed(proxy->name, error_get_pretty(err));
    vfio_user_drop_channel(proxy, VFIO_PROXY_FAILED, err);
    if (notify && proxy->ops && proxy->ops->failed) {
        proxy->ops->failed(proxy->opaque, proxy->err);
    }
}

/* May a message with @command go out on connection @gen? */
static bool vfio_user_can_send(VFIOProxy *proxy, unsigned int gen,
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
 * Write a whole message: header (converted to little-endian) and payload
 * go in one sendmsg() with the descriptors when the socket takes it all.
 * Called with send_lock held.
 */
static int coroutine_fn vfio_user_co_write(VFIOProxy *proxy,
                                           const VFIOUserHdr *msg,
                                           const int *fds, size_t nfds,
                                           Error **errp)
{
    VFIOUserHdr hdr = vfio_user_hdr_le(msg);
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
        len = qio_channel_writev_full(proxy->ioc, iov, niov, (int *)fds, nfds,
                                      0, errp);
        if (len == QIO_CHANNEL_ERR_BLOCK) {
            proxy->write_co = qemu_coroutine_self();
            vfio_user_update_handler(proxy);
            qemu_coroutine_yield();
            vfio_user_update_handler(proxy);
            continue;
        }
        if (len < 0) {
            error_prepend(errp, "vfio-user server %s: ", proxy->name);
            return -1;
        }
        /* The descriptors went with the first byte. */
        fds = NULL;
        nfds = 0;
        iov_discard_front(&iov, &niov, len);
    }
    return 0;
}

/* Write a whole reply on the twin socket. */
static int coroutine_fn vfio_user_co_write_twin(VFIOProxy *proxy,
                                                const VFIOUserHdr *msg,
                                                Error **errp)
{
    QIOChannel *ioc = QIO_CHANNEL(object_ref(proxy->twin_ioc));
    VFIOUserHdr hdr = vfio_user_hdr_le(msg);
    struct iovec iov[] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)(msg + 1), .iov_len = msg->size - sizeof(hdr) },
    };
    int ret;

    trace_vfio_user_send(proxy->name, msg->id,
                         vfio_user_command_name(msg->command), msg->size,
                         msg->flags, 0);
    ret = qio_channel_writev_all(ioc, iov, msg->size > sizeof(hdr) ? 2 : 1,
                                 errp);
    if (ret < 0) {
        error_prepend(errp, "vfio-user server %s (twin socket): ",
                      proxy->name);
    }
    object_unref(ioc);
    return ret;
}

/* @w is past its deadline. */
static void vfio_user_timeout(VFIOUserWaiter *w, int64_t now)
{
    VFIOProxy *proxy = w->proxy;
    Error *err = NULL;

    if (proxy->teardown && !vfio_user_receiving(w)) {
        /*
         * A hung server holds a reset or unplug up for one timeout, not
         * one per message it sends.  Failing the connection completes w
         * (whose coroutine may end at once: w is not touched after).
         */
        trace_vfio_user_timeout(proxy->name, w->id,
                                vfio_user_command_name(w->command));
        vfio_user_error(proxy, &err, "not responding: no reply to %s "
                        "(id %u) in %u ms, during a reset or unplug",
                        vfio_user_command_name(w->command), w->id,
                        proxy->timeout_ms);
        if (w->gen == proxy->gen &&
            (proxy->state == VFIO_PROXY_CONNECTED ||
             proxy->state == VFIO_PROXY_CONNECTING)) {
            vfio_user_fail(proxy, w->gen, err);
        } else {
            vfio_user_complete(w, -ETIMEDOUT, err);
        }
        return;
    }
    if (w->state == VFIO_USER_WAITER_RECEIVING) {
        /* The reply is arriving: give it another period. */
        w->state = VFIO_USER_WAITER_STALLED;
        w->deadline = now + proxy->timeout_ms;
        return;
    }
    trace_vfio_user_timeout(proxy->name, w->id,
                            vfio_user_command_name(w->command));
    if (w->state == VFIO_USER_WAITER_STALLED) {
        vfio_user_error(proxy, &err, "stalled in the reply to %s (id %u)",
                        vfio_user_command_name(w->command), w->id);
        vfio_user_fail(proxy, w->gen, err);
    } else if (w->state == VFIO_USER_WAITER_QUEUED) {
        vfio_user_error(proxy, &err, "does not read its socket: "
                        "%s not sent in %u ms",
                        vfio_user_command_name(w->command),
                        proxy->timeout_ms);
        vfio_user_fail(proxy, w->gen, err);
    } else if (proxy->late_id >= 0) {
        vfio_user_error(proxy, &err, "not responding: no reply to %s "
                        "(id %u) nor to id %d in %u ms",
                        vfio_user_command_name(w->command), w->id,
                        proxy->late_id, proxy->timeout_ms);
        vfio_user_fail(proxy, w->gen, err);
    } else {
        proxy->late_id = w->id;
        vfio_user_error(proxy, &err, "no reply to %s (id %u) in %u ms",
                        vfio_user_command_name(w->command), w->id,
                        proxy->timeout_ms);
        vfio_user_complete(w, -ETIMEDOUT, err);
    }
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

/*
 * Send @msg and, unless VFIO_USER_SEND_NO_REPLY, wait for its reply; the
 * arguments are checked by the caller.  The timeout runs from the start:
 * a message that cannot be sent in time means the server does not read.
 */
static int coroutine_fn vfio_user_co_request(VFIOProxy *proxy,
                                             VFIOUserHdr *msg,
                                             VFIOUserFDs *fds,
                                             uint32_t reply_max,
                                             unsigned int flags,
                                             Error **errp)
{
    bool posted = flags & VFIO_USER_SEND_NO_REPLY;
    bool handler = proxy->req_co && proxy->req_co == qemu_coroutine_self();
    unsigned int gen = proxy->gen;
    VFIOUserWaiter w = {
        .proxy = proxy,
        .state = VFIO_USER_WAITER_QUEUED,
        .gen = gen,
        .command = msg->command,
        .msg = msg,
        .reply_max = reply_max,
        .fds = fds,
    };
    Error *local_err = NULL;
    bool counted;

    if (!vfio_user_can_send(proxy, gen, msg->command, errp)) {
        return -ENOTCONN;
    }
    vfio_user_add_waiter(proxy, &w);

    qemu_co_mutex_lock(&proxy->send_lock);
    /*
     * libvfio-user waits for the reply to its DMA request and takes the
     * next message it reads for it: while replies to the server are due,
     * nothing else goes out.  The handler itself may send (a DMA request
     * that reaches the device's own BAR).
     */
    while (w.state != VFIO_USER_WAITER_DONE && proxy->replies_due &&
           !handler &&
           proxy->gen == gen && proxy->state == VFIO_PROXY_CONNECTED) {
        qemu_co_queue_wait(&proxy->send_gate, &proxy->send_lock);
    }
    if (w.state == VFIO_USER_WAITER_DONE) {
        qemu_co_mutex_unlock(&proxy->send_lock);
    } else if (!vfio_user_can_send(proxy, gen, msg->command, &local_err)) {
        qemu_co_mutex_unlock(&proxy->send_lock);
        vfio_user_complete(&w, -ENOTCONN, local_err);
    } else {
        w.id = msg->id = vfio_user_new_id(proxy);
        msg->flags = VFIO_USER_REQUEST | (posted ? VFIO_USER_NO_REPLY : 0);
        msg->error_reply = 0;
        if (fds) {
            fds->nrecv = 0;
        }
        if (vfio_user_co_write(proxy, msg, fds ? fds->send : NULL,
                               fds ? fds->nsend : 0, &local_err) < 0) {
            qemu_co_mutex_unlock(&proxy->send_lock);
            /* The stream is broken: that fails every waiter, w included. */
            vfio_user_fail(proxy, gen, local_err);
            if (w.state != VFIO_USER_WAITER_DONE) {
                vfio_user_error(proxy, &local_err, "connection lost");
                vfio_user_complete(&w, -ECONNRESET, local_err);
            }
        } else {
            /* Unless the connection failed while the message went out */
            if (w.state == VFIO_USER_WAITER_QUEUED) {
                w.state = VFIO_USER_WAITER_SENT;
            }
            qemu_co_mutex_unlock(&proxy->send_lock);
            if (posted && proxy->aside && !proxy->pollers) {
                /* The server may answer it with requests: watch */
                vfio_user_step_in(proxy);
            }
            if (posted && w.state != VFIO_USER_WAITER_DONE) {
                vfio_user_complete(&w, 0, NULL);
            }
        }
    }

    counted = w.state != VFIO_USER_WAITER_DONE;
    if (counted) {
        /* With a twin socket, the main socket is watched only for this */
        proxy->nwaiting++;
        vfio_user_update_handler(proxy);
    }
    while (w.state != VFIO_USER_WAITER_DONE) {
        if (handler) {
            /* Our reply may be behind queued requests: read on. */
            proxy->req_waiting = true;
            vfio_user_recv_resume(proxy);
        }
        w.sleeping = qemu_coroutine_self();
        qemu_coroutine_yield();
        w.sleeping = NULL;
    }
    if (counted) {
        proxy->nwaiting--;
        vfio_user_update_handler(proxy);
    }
    if (handler) {
        proxy->req_waiting = false;
    }
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
 * Read exactly @len bytes.  With @fds (the header), the descriptors that
 * come with the first bytes go there, and end-of-file before the first
 * byte returns 0; else end-of-file is an error.  Returns 1 or -1.
 */
static int coroutine_fn vfio_user_co_read(VFIOProxy *proxy, QIOChannel *ioc,
                                          void *buf, size_t len,
                                          int **fds, size_t *nfds,
                                          Error **errp)
{
    size_t done = 0;
    ssize_t ret;

    while (done < len) {
        struct iovec iov = {
            .iov_base = (char *)buf + done, .iov_len = len - done,
        };

        ret = qio_channel_readv_full(ioc, &iov, 1, done ? NULL : fds,
                                     done ? NULL : nfds, 0, errp);
        if (ret == QIO_CHANNEL_ERR_BLOCK) {
            if (ioc == proxy->twin_ioc) {
                qio_channel_yield(ioc, G_IO_IN);
            } else {
                proxy->recv_waiting = true;
                qemu_coroutine_yield();
            }
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
static int coroutine_fn vfio_user_co_skip(VFIOProxy *proxy, QIOChannel *ioc,
                                          size_t len, Error **errp)
{
    size_t chunk = MIN(len, 64 * KiB);
    g_autofree void *buf = chunk ? g_malloc(chunk) : NULL;

    while (len) {
        if (vfio_user_co_read(proxy, ioc, buf, MIN(len, chunk), NULL, NULL,
                              errp) < 0) {
            return -1;
        }
        len -= MIN(len, chunk);
    }
    return 0;
}

/*
 * Receive the rest of a reply whose header is @hdr and whose descriptors
 * are @fds (ours to close or hand over).
 */
static int coroutine_fn vfio_user_co_recv_reply(VFIOProxy *proxy,
                                                QIOChannel *ioc,
                                                VFIOUserHdr *hdr,
                                                int *fds, size_t nfds,
                                                Error **errp)
{
    VFIOUserWaiter *w = vfio_user_find_waiter(proxy, hdr->id);
    size_t len = hdr->size - sizeof(*hdr);
    const char *cmd = vfio_user_command_name(hdr->command);
    Error *err = NULL;
    int ret;

    if (!w) {
        vfio_user_close_fds(fds, nfds);
        trace_vfio_user_drop_reply(proxy->name, hdr->id, cmd,
                                   hdr->id == proxy->late_id ? "late" :
                                   "unexpected");
        if (hdr->id == proxy->late_id) {
            proxy->late_id = -1;
        }
        return vfio_user_co_skip(proxy, ioc, len, errp);
    }

    if (hdr->command != w->command) {
        vfio_user_error(proxy, &err, "reply to %s (id %u) is for %s",
                        vfio_user_command_name(w->command), w->id, cmd);
        ret = -EPROTO;
    } else if (hdr->flags & VFIO_USER_NO_REPLY) {
        vfio_user_error(proxy, &err, "reply to %s (id %u) has no-reply set",
                        cmd, w->id);
        ret = -EPROTO;
    } else if (nfds > (w->fds ? w->fds->max_recv : 0)) {
        vfio_user_error(proxy, &err, "reply to %s (id %u) carries %zu "
                        "unexpected file descriptors", cmd, w->id, nfds);
        ret = -EPROTO;
    } else if (hdr->flags & VFIO_USER_ERROR) {
        ret = vfio_user_reply_errno(hdr->error_reply);
        vfio_user_error(proxy, &err, "%s failed: %s", cmd, strerror(-ret));
    } else if (hdr->size > w->reply_max) {
        vfio_user_error(proxy, &err, "reply to %s (id %u) of %u bytes "
                        "exceeds the %u expected", cmd, w->id, hdr->size,
                        w->reply_max);
        ret = -E2BIG;
    } else {
        /* Read the payload straight into the caller's buffer. */
        w->state = VFIO_USER_WAITER_RECEIVING;
        ret = vfio_user_co_read(proxy, ioc, w->msg + 1, len, NULL, NULL,
                                errp);
        if (ret < 0) {
            vfio_user_close_fds(fds, nfds);
            vfio_user_complete(w, -ECONNRESET, error_copy(*errp));
            return -1;
        }
        *w->msg = *hdr;
        if (w->fds) {
            if (nfds) {
                memcpy(w->fds->recv, fds, nfds * sizeof(int));
            }
            w->fds->nrecv = nfds;
        }
        vfio_user_complete(w, 0, NULL);
        return 0;
    }

    /* A bad reply fails its request, but is consumed whole. */
    vfio_user_close_fds(fds, nfds);
    vfio_user_complete(w, ret, err);
    return vfio_user_co_skip(proxy, ioc, len, errp);
}

/* Check a request of the server: 0 or the negative errno to reply with. */
static int vfio_user_check_request(VFIOProxy *proxy, VFIOUserHdr *msg,
                                   size_t nfds)
{
    const uint8_t *payload = (const uint8_t *)(msg + 1);
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
    addr = ldq_le_p(payload + VFIO_USER_DMA_RW_ADDRESS);
    count = ldq_le_p(payload + VFIO_USER_DMA_RW_COUNT);
    if (count > VFIO_USER_MAX_XFER || addr + count < addr ||
        msg->size != sizeof(VFIOUserDMARW) +
        (msg->command == VFIO_USER_DMA_WRITE ? count : 0)) {
        return -EINVAL;
    }
    return 0;
}

static void coroutine_fn vfio_user_req_co(void *opaque);

/* Receive the rest of a request of the server and queue it. */
static int coroutine_fn vfio_user_co_recv_request(VFIOProxy *proxy,
                                                  QIOChannel *ioc,
                                                  VFIOUserHdr *hdr,
                                                  int *fds, size_t nfds,
                                                  Error **errp)
{
    unsigned int gen = proxy->gen;
    VFIOUserRequest *req;
    size_t len = hdr->size - sizeof(*hdr);

    vfio_user_close_fds(fds, nfds);
    if (proxy->state != VFIO_PROXY_CONNECTED) {
        vfio_user_error(proxy, errp, "%s request before the version "
                        "negotiation", vfio_user_command_name(hdr->command));
        return -1;
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
        return -1;
    }
    if (proxy->nrequests >= VFIO_USER_HARD_MAX_REQUESTS ||
        proxy->request_bytes >= VFIO_USER_HARD_MAX_REQUEST_BYTES) {
        vfio_user_error(proxy, errp, "%u requests (%zu bytes) pending while "
                        "a request of ours waits for its reply",
                        proxy->nrequests, proxy->request_bytes);
        return -1;
    }

    req = g_malloc(sizeof(*req) + len);
    req->msg = *hdr;
    req->twin = ioc == proxy->twin_ioc;
    if (vfio_user_co_read(proxy, ioc, &req->msg + 1, len, NULL, NULL,
                          errp) < 0) {
        g_free(req);
        return -1;
    }
    req->error = vfio_user_check_request(proxy, &req->msg, nfds);
    trace_vfio_user_request(proxy->name, hdr->id,
                            vfio_user_command_name(hdr->command),
                            req->error);

    if (!(hdr->flags & VFIO_USER_NO_REPLY) && !req->twin) {
        proxy->replies_due++;
    }
    proxy->nrequests++;
    proxy->request_bytes += len;
    QSIMPLEQ_INSERT_TAIL(&proxy->requests, req, next);
    if (!proxy->req_co) {
        proxy->req_co = qemu_coroutine_create(vfio_user_req_co, proxy);
        aio_co_enter(proxy->ctx, proxy->req_co);
    }
    if (vfio_user_requests_full(proxy) && !proxy->req_waiting) {
        /*
         * Back-pressure: leave the rest in the socket until the handler
         * has caught up (it resumes us), so that what a server sends
         * faster than we serve it costs bounded memory.
         */
        trace_vfio_user_recv_pause(proxy->name, proxy->nrequests,
                                   proxy->request_bytes);
        if (req->twin) {
            proxy->twin_paused = true;
            while (proxy->twin_paused) {
                qemu_coroutine_yield();
            }
            return 0;
        }
        proxy->recv_paused = true;
        vfio_user_update_handler(proxy);
        while (proxy->recv_paused) {
            qemu_coroutine_yield();
        }
        if (gen == proxy->gen) {
            vfio_user_update_handler(proxy);
        }
        return 0;
    }
    /* Let the handler and the woken callers run before reading on. */
    aio_co_schedule(proxy->ctx, qemu_coroutine_self());
    qemu_coroutine_yield();
    return 0;
}

/* Receive one message. */
static int coroutine_fn vfio_user_co_recv_one(VFIOProxy *proxy,
                                              QIOChannel *ioc, Error **errp)
{
    VFIOUserHdr hdr;
    g_autofree int *fds = NULL;
    size_t nfds = 0;
    VFIOUserWaiter *w;
    uint32_t type, max;
    int ret;

    /*
     * Wait for the socket to be readable first, rather than find it empty
     * with one more recvmsg() after each message: the handler is level
     * triggered, so a message already there is not missed.
     */
    if (ioc != proxy->twin_ioc) {
        proxy->recv_waiting = true;
        qemu_coroutine_yield();
    }
    ret = vfio_user_co_read(proxy, ioc, &hdr, sizeof(hdr), &fds, &nfds, errp);
    if (ret <= 0) {
        vfio_user_close_fds(fds, nfds);
        if (ret == 0) {
            vfio_user_error(proxy, errp, "connection closed");
        }
        return -1;
    }
    hdr.id = le16_to_cpu(hdr.id);
    hdr.command = le16_to_cpu(hdr.command);
    hdr.size = le32_to_cpu(hdr.size);
    hdr.flags = le32_to_cpu(hdr.flags);
    hdr.error_reply = le32_to_cpu(hdr.error_reply);
    trace_vfio_user_recv(proxy->name, hdr.id,
                         vfio_user_command_name(hdr.command), hdr.size,
                         hdr.flags, nfds);

    /*
     * A reply may be as large as its caller allows; anything else must
     * fit what we negotiated.
     */
    type = hdr.flags & VFIO_USER_TYPE;
    w = type == VFIO_USER_REPLY ? vfio_user_find_waiter(proxy, hdr.id) : NULL;
    max = MAX(VFIO_USER_MAX_XFER + VFIO_USER_XFER_OVERHEAD,
              w ? w->reply_max : 0);

    if (type != VFIO_USER_REQUEST && type != VFIO_USER_REPLY) {
        vfio_user_error(proxy, errp, "message of unknown type %u", type);
    } else if (hdr.flags & ~(VFIO_USER_TYPE | VFIO_USER_NO_REPLY |
                             VFIO_USER_ERROR)) {
        vfio_user_error(proxy, errp, "message with unknown flags 0x%x",
                        hdr.flags);
    } else if (hdr.size < sizeof(hdr) ||
               (type == VFIO_USER_REPLY && hdr.size > max)) {
        vfio_user_error(proxy, errp, "%s message of invalid size %u",
                        vfio_user_command_name(hdr.command), hdr.size);
    } else if (nfds > VFIO_USER_MAX_FDS) {
        vfio_user_error(proxy, errp, "%zu file descriptors in a message",
                        nfds);
    } else if (type == VFIO_USER_REPLY && ioc == proxy->twin_ioc) {
        vfio_user_error(proxy, errp, "%s reply on the twin socket",
                        vfio_user_command_name(hdr.command));
    } else if (type == VFIO_USER_REPLY) {
        return vfio_user_co_recv_reply(proxy, ioc, &hdr, fds, nfds, errp);
    } else {
        return vfio_user_co_recv_request(proxy, ioc, &hdr, fds, nfds, errp);
    }
    vfio_user_close_fds(fds, nfds);
    return -1;
}

/* The receiver: the only reader of the channel it was started on. */
static void coroutine_fn vfio_user_recv_co(void *opaque)
{
    VFIOProxy *proxy = opaque;
    QIOChannel *ioc = QIO_CHANNEL(object_ref(proxy->ioc));
    unsigned int gen = proxy->gen;
    Error *err = NULL;

    while (gen == proxy->gen && (proxy->state == VFIO_PROXY_CONNECTING ||
                                 proxy->state == VFIO_PROXY_CONNECTED)) {
        if (vfio_user_co_recv_one(proxy, ioc, &err) < 0) {
            vfio_user_fail(proxy, gen, err);
            err = NULL;
        }
    }
    object_unref(ioc);
    proxy->recv_co = NULL;
    vfio_user_update_handler(proxy);
}

/* The twin socket's receiver: the server's requests only. */
static void coroutine_fn vfio_user_twin_co(void *opaque)
{
    VFIOProxy *proxy = opaque;
    QIOChannel *ioc = QIO_CHANNEL(object_ref(proxy->twin_ioc));
    unsigned int gen = proxy->gen;
    Error *err = NULL;

    while (gen == proxy->gen && proxy->state == VFIO_PROXY_CONNECTED) {
        if (vfio_user_co_recv_one(proxy, ioc, &err) < 0) {
            vfio_user_fail(proxy, gen, err);
            err = NULL;
        }
    }
    object_unref(ioc);
    proxy->twin_co = NULL;
}

/* Serve one request of the server and send the reply it wants. */
static void coroutine_fn vfio_user_co_serve(VFIOProxy *proxy,
                                            VFIOUserRequest *req,
                                            unsigned int gen)
{
    uint8_t *payload = (uint8_t *)(&req->msg + 1);
    bool is_write = req->msg.command == VFIO_USER_DMA_WRITE;
    g_autofree VFIOUserDMARW *reply = NULL;
    uint64_t addr = 0, count = 0;
    int ret = req->error;
    Error *err = NULL;

    if (!ret) {
        addr = ldq_le_p(payload + VFIO_USER_DMA_RW_ADDRESS);
        count = ldq_le_p(payload + VFIO_USER_DMA_RW_COUNT);
        reply = g_malloc0(sizeof(*reply) + (is_write ? 0 : count));
        if (proxy->ops && proxy->ops->dma_rw) {
            ret = proxy->ops->dma_rw(proxy->opaque, addr,
                                     is_write ?
                                     payload + VFIO_USER_DMA_RW_DATA :
                                     reply->data, count, is_write);
        } else {
            ret = -ENODEV;
        }
    } else {
        reply = g_malloc0(sizeof(*reply));
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
        stq_le_p(&reply->address, addr);
        stq_le_p(&reply->count, count);
    }

    if (req->twin) {
        /* The handler is the twin's only writer */
        if (vfio_user_can_send(proxy, gen, reply->hdr.command, NULL) &&
            vfio_user_co_write_twin(proxy, &reply->hdr, &err) < 0) {
            vfio_user_fail(proxy, gen, err);
        }
        return;
    }
    qemu_co_mutex_lock(&proxy->send_lock);
    if (vfio_user_can_send(proxy, gen, reply->hdr.command, NULL) &&
        vfio_user_co_write(proxy, &reply->hdr, NULL, 0, &err) < 0) {
        vfio_user_fail(proxy, gen, err);
    }
    qemu_co_mutex_unlock(&proxy->send_lock);
}

/* The request handler: serves the queued requests of the server, in order. */
static void coroutine_fn vfio_user_req_co(void *opaque)
{
    VFIOProxy *proxy = opaque;
    VFIOUserRequest *req;

    while ((req = QSIMPLEQ_FIRST(&proxy->requests))) {
        QSIMPLEQ_REMOVE_HEAD(&proxy->requests, next);
        vfio_user_co_serve(proxy, req, proxy->gen);
        if (!(req->msg.flags & VFIO_USER_NO_REPLY) && !req->twin &&
            --proxy->replies_due == 0) {
            qemu_co_queue_restart_all(&proxy->send_gate);
        }
        vfio_user_free_request(proxy, req);
        if (!vfio_user_requests_full(proxy)) {
            vfio_user_recv_resume(proxy);
        }
    }
    proxy->req_co = NULL;
}

int coroutine_fn vfio_user_co_negotiate(VFIOProxy *proxy, Error **errp)
{
    g_autoptr(GString) json = vfio_user_caps_json();
    uint32_t size = sizeof(VFIOUserVersion) + json->len + 1;
    uint32_t reply_max = MAX(size, VFIO_USER_VERSION_REPLY_MAX);
    g_autofree VFIOUserVersion *msg = g_malloc0(reply_max);
    int rfds[VFIO_USER_MAX_FDS];
    VFIOUserFDs fds = { .recv = rfds, .max_recv = VFIO_USER_MAX_FDS };
    QIOChannelSocket *twin = NULL;
    VFIOUserCaps caps;
    int ret;

    vfio_user_msg_init(&msg->hdr, VFIO_USER_VERSION, size);
    msg->major = cpu_to_le16(VFIO_USER_MAJOR_VER);
    msg->minor = cpu_to_le16(VFIO_USER_MINOR_VER);
    memcpy(msg->capabilities, json->str, json->len + 1);

    ret = vfio_user_co_request(proxy, &msg->hdr, &fds, reply_max, 0, errp);
    if (ret < 0) {
        return ret;
    }
    if (!vfio_user_parse_version(msg, &caps, errp)) {
        error_prepend(errp, "vfio-user server %s: bad VERSION reply: ",
                      proxy->name);
        vfio_user_close_fds(rfds, fds.nrecv);
        return -EPROTO;
    }
    if (caps.twin_fd_index >= 0) {
        if (caps.twin_fd_index >= fds.nrecv) {
            vfio_user_error(proxy, errp, "bad VERSION reply: twin_socket "
                            "fd_index %d, but %u descriptors",
                            caps.twin_fd_index, fds.nrecv);
        } else {
            twin = qio_channel_socket_new_fd(rfds[caps.twin_fd_index], errp);
            if (twin && !qio_channel_has_feature(QIO_CHANNEL(twin),
                                                 QIO_CHANNEL_FEATURE_FD_PASS)) {
                /* Not a UNIX socket: the descriptor is closed with it */
                object_unref(twin);
                twin = NULL;
                rfds[caps.twin_fd_index] = -1;
                error_setg(errp, "not a UNIX socket");
            }
            if (twin) {
                rfds[caps.twin_fd_index] = -1;
            } else {
                error_prepend(errp, "vfio-user server %s: bad twin socket: ",
                              proxy->name);
            }
        }
        if (!twin) {
            vfio_user_close_fds(rfds, fds.nrecv);
            return -EPROTO;
        }
    }
    vfio_user_close_fds(rfds, fds.nrecv);
    if (proxy->state != VFIO_PROXY_CONNECTING) {
        vfio_user_error(proxy, errp, "connection lost in the version "
                        "negotiation");
        if (twin) {
            object_unref(twin);
        }
        return -ENOTCONN;
    }
    proxy->caps = caps;
    if (twin) {
        proxy->twin_ioc = QIO_CHANNEL(twin);
        qio_channel_set_name(proxy->twin_ioc, "vfio-user-twin");
        qio_channel_set_blocking(proxy->twin_ioc, false, NULL);
        qio_channel_set_follow_coroutine_ctx(proxy->twin_ioc, true);
    }
    trace_vfio_user_version(proxy->name, caps.major, caps.minor,
                            caps.max_send_fds, caps.max_xfer,
                            caps.max_dma_maps, caps.pgsizes);
    vfio_user_set_state(proxy, VFIO_PROXY_CONNECTED);
    if (twin) {
        proxy->twin_co = qemu_coroutine_create(vfio_user_twin_co, proxy);
        aio_co_enter(proxy->ctx, proxy->twin_co);
    }
    return 0;
}

/*
 * Adaptive polling, as AioContext's for IOThreads: a reply that came
 * @elapsed ns after the waiter started polling.  Within the window: keep
 * it.  After it, but within poll_max_ns: grow the window to catch the
 * next one.  Later than that (or not at all): shrink it, polling does
 * not pay.
 */
static void vfio_user_poll_adapt(VFIOProxy *proxy, int64_t elapsed)
{
    if (elapsed <= proxy->poll_ns) {
        return;
    }
    if (elapsed > proxy->poll_max_ns) {
        proxy->poll_ns /= VFIO_USER_POLL_SHRINK;
    } else {
        proxy->poll_ns = MIN(MAX(proxy->poll_ns * VFIO_USER_POLL_GROW,
                                 MAX(elapsed, VFIO_USER_POLL_START_NS)),
                             proxy->poll_max_ns);
    }
}

/*
 * Polling avoids our wakeup when the server runs on another CPU, but a
 * thread that never sleeps keeps the scheduler from putting the server
 * next to it, where a blocking round trip is cheapest (measured: 6 us
 * blocking against 24 us polling, unpinned, on a 2-CPU VM; 57 against
 * 20 us with the server pinned to the other CPU).  Which one wins depends
 * on the machine and its load: measure.  Replies are timed in phases of
 * VFIO_USER_POLL_EPOCH in the chosen way, then VFIO_USER_POLL_PROBE in
 * the other; the other way is chosen when the mean of the last replies of
 * its phase is 10% lower (a new placement takes the scheduler a while).
 */
static void vfio_user_poll_account(VFIOProxy *proxy, int64_t elapsed)
{
    unsigned int len = proxy->poll_probing ? VFIO_USER_POLL_PROBE :
                                             VFIO_USER_POLL_EPOCH;
    int64_t avg;

    /* The last VFIO_USER_POLL_TIMED of a phase: the scheduler settled */
    if (++proxy->phase_n > len - VFIO_USER_POLL_TIMED) {
        proxy->phase_ns += elapsed;
    }
    if (proxy->phase_n < len) {
        return;
    }
    avg = proxy->phase_ns / VFIO_USER_POLL_TIMED;
    if (!proxy->poll_probing) {
        proxy->chosen_avg_ns = avg;
    } else if (avg * 10 < proxy->chosen_avg_ns * 9) {
        proxy->poll_off = !proxy->poll_off;
        trace_vfio_user_poll_choice(proxy->name, !proxy->poll_off, avg,
                                    proxy->chosen_avg_ns);
    }
    proxy->poll_probing = !proxy->poll_probing;
    proxy->phase_n = 0;
    proxy->phase_ns = 0;
}

/*
 * A thread waiting for a reply in the proxy's home thread drives the
 * receiver itself: it polls the socket (busy for up to poll_ns, then
 * blocking in ppoll() on that one descriptor) and runs the receiver when
 * it is readable, so that a reply wakes this thread only (with a twin
 * socket the main loop does not watch the main socket meanwhile; see
 * vfio_user_update_handler()).  Returns false, for the caller to run the
 * AioContext instead, when the receiver does not wait for the socket (it
 * is paused, or busy), nothing was sent yet, or a slice of blocking
 * passed without a message (timers and bottom halves then run).
 */
bool vfio_user_poll_reply(VFIOProxy *proxy)
{
    QIOChannel *twin = proxy->twin_ioc;
    /*
     * The main socket (and room in it for a writer that waits), and the
     * twin, where the server's requests come and our replies go.
     */
    struct pollfd pfd[2] = {
        { .fd = proxy->fd,
          .events = POLLIN | (proxy->write_co ? POLLOUT : 0) },
        { .fd = twin && !proxy->twin_paused ?
                QIO_CHANNEL_SOCKET(twin)->fd : -1,
          .events = POLLIN | (twin && twin->write_coroutine ? POLLOUT : 0) },
    };
    int64_t start, elapsed, timeout;
    bool polling;
    int ret;

    if (!proxy->recv_co || !proxy->recv_waiting || proxy->recv_paused ||
        !proxy->nwaiting) {
        return false;
    }
    start = get_clock();
    polling = proxy->poll_max_ns && proxy->poll_off == proxy->poll_probing;
    if (polling && !proxy->poll_ns) {
        proxy->poll_ns = MIN(VFIO_USER_POLL_START_NS, proxy->poll_max_ns);
    }
    if (polling) {
        do {
            ret = poll(pfd, 2, 0);
            if (ret > 0) {
                goto ready;
            }
            /* Let the server run if it shares our CPU */
            sched_yield();
        } while (get_clock() - start < proxy->poll_ns);
    }
    /* Sleep until the next timer or bottom half of the AioContext at most */
    timeout = aio_compute_timeout(proxy->ctx);
    timeout = timeout < 0 ? VFIO_USER_POLL_SLICE_MS :
              MIN(qemu_timeout_ns_to_ms(timeout), VFIO_USER_POLL_SLICE_MS);
    ret = poll(pfd, 2, timeout);
    if (ret <= 0) {
        if (polling && ret == 0) {
            vfio_user_poll_adapt(proxy, INT64_MAX);
        }
        aio_poll(proxy->ctx, false);
        return true;
    }
ready:
    if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
        /*
         * A request of the server on the twin socket (it may wait for our
         * answer before it answers us), or room for a writer: they run in
         * the AioContext, which the main loop cannot run while we hold
         * the BQL.
         */
        aio_poll(proxy->ctx, false);
        return true;
    }
    elapsed = get_clock() - start;
    if (polling) {
        vfio_user_poll_adapt(proxy, elapsed);
    }
    vfio_user_poll_account(proxy, elapsed);
    trace_vfio_user_poll_reply(proxy->name, elapsed, proxy->poll_ns);
    vfio_user_readable(proxy);
    if (pfd[0].revents & POLLOUT) {
        vfio_user_writable(proxy);
    }
    return true;
}

void vfio_user_poll_begin(VFIOProxy *proxy)
{
    if (!proxy->pollers++ && !proxy->aside && !proxy->twin_ioc) {
        vfio_user_step_aside(proxy);
    }
}

void vfio_user_poll_end(VFIOProxy *proxy)
{
    proxy->pollers--;
    proxy->last_poll = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
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
    proxy->late_id = -1;
    aio_timer_init(proxy->ctx, &proxy->aside_timer, QEMU_CLOCK_REALTIME,
                   SCALE_MS, vfio_user_aside_timer_cb, proxy);
    proxy->poll_max_ns = VFIO_USER_DEFAULT_POLL_MAX_NS;
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

void vfio_user_proxy_set_poll_max_ns(VFIOProxy *proxy, uint64_t max_ns)
{
    /* A vCPU busy-polls holding the BQL: not for long */
    max_ns = MIN(max_ns, VFIO_USER_MAX_POLL_NS);
    proxy->poll_max_ns = max_ns;
    proxy->poll_ns = MIN(proxy->poll_ns, max_ns);
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

/* Wait until the coroutines of the last channel have ended. */
static void vfio_user_drain(VFIOProxy *proxy)
{
    assert(!qemu_in_coroutine() && in_aio_context_home_thread(proxy->ctx));
    AIO_WAIT_WHILE(proxy->ctx,
                   proxy->recv_co || proxy->req_co || proxy->twin_co);
    assert(!proxy->replies_due && QTAILQ_EMPTY(&proxy->waiters));
}

void vfio_user_proxy_lost(VFIOProxy *proxy, Error *err)
{
    vfio_user_fail(proxy, proxy->gen, err);
}

uint32_t vfio_user_proxy_timeout(VFIOProxy *proxy)
{
    return proxy->timeout_ms;
}

void vfio_user_proxy_abort(VFIOProxy *proxy)
{
    Error *err = NULL;

    if (proxy->state == VFIO_PROXY_CONNECTING ||
        proxy->state == VFIO_PROXY_CONNECTED) {
        vfio_user_error(proxy, &err, "connection closed by the client");
        vfio_user_drop_channel(proxy, VFIO_PROXY_FAILED, err);
    }
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
    assert(!proxy->recv_co && !proxy->req_co && !proxy->twin_co);
    if (proxy->ioc) {
        object_unref(proxy->ioc);
    }
    if (proxy->twin_ioc) {
        object_unref(proxy->twin_ioc);
        proxy->twin_ioc = NULL;
    }
    proxy->ioc = QIO_CHANNEL(object_ref(sioc));
    proxy->fd = sioc->fd;
    g_free(proxy->name);
    proxy->name = g_strdup(name);
    qio_channel_set_name(proxy->ioc, "vfio-user");
    qio_channel_set_blocking(proxy->ioc, false, NULL);
    qio_channel_set_follow_coroutine_ctx(proxy->ioc, true);

    proxy->gen++;
    proxy->late_id = -1;
    vfio_user_default_caps(&proxy->caps);
    vfio_user_set_state(proxy, VFIO_PROXY_CONNECTING);
    proxy->recv_co = qemu_coroutine_create(vfio_user_recv_co, proxy);
    vfio_user_update_handler(proxy);
    aio_co_enter(proxy->ctx, proxy->recv_co);
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
    if (proxy->recv_co || proxy->req_co || proxy->twin_co) {
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
        sioc = vfio_user_connect_unix(addr->u.q_unix.path, proxy->timeout_ms,
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

void vfio_user_proxy_close(VFIOProxy *proxy)
{
    Error *err = NULL;

    if (proxy->state == VFIO_PROXY_CONNECTING ||
        proxy->state == VFIO_PROXY_CONNECTED) {
        vfio_user_error(proxy, &err, "connection closed by the client");
        vfio_user_drop_channel(proxy, VFIO_PROXY_CLOSED, err);
    } else if (proxy->state != VFIO_PROXY_CLOSED) {
        vfio_user_set_state(proxy, VFIO_PROXY_CLOSED);
    }
    if (proxy->ioc) {
        vfio_user_drain(proxy);
        vfio_user_clear_handler(proxy);
        object_unref(proxy->ioc);
        proxy->ioc = NULL;
    }
    if (proxy->twin_ioc) {
        object_unref(proxy->twin_ioc);
        proxy->twin_ioc = NULL;
    }
}

void vfio_user_proxy_free(VFIOProxy *proxy)
{
    if (!proxy) {
        return;
    }
    vfio_user_proxy_close(proxy);
    timer_del(&proxy->timer);
    timer_del(&proxy->aside_timer);
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
