/*
 * vfio-user transport: the fast path
 *
 * Our AioHandler on the main socket, the main loop stepping aside while
 * threads poll for their replies, and a waiting thread polling the
 * socket itself, adaptively.  See docs/devel/vfio-user.rst, "Waiting
 * outside coroutines".
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sched.h>
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "block/aio.h"
#include "io/channel-socket.h"
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

/*
 * The polling strategy, all its transitions: each way busy-polls or
 * blocks for a phase of some replies; at the end of a phase it moves to
 * @next, or to @better when the phase probed the other way and found it
 * faster.
 */
static const struct {
    bool busy;
    unsigned int len;
    VFIOUserPollWay next;
    VFIOUserPollWay better;
} vfio_user_poll_ways[] = {
    [VFIO_USER_POLL_CHOSEN] = {
        true, VFIO_USER_POLL_EPOCH,
        VFIO_USER_POLL_PROBING_BLOCK, VFIO_USER_POLL_PROBING_BLOCK,
    },
    [VFIO_USER_POLL_PROBING_BLOCK] = {
        false, VFIO_USER_POLL_PROBE,
        VFIO_USER_POLL_CHOSEN, VFIO_USER_BLOCK_CHOSEN,
    },
    [VFIO_USER_BLOCK_CHOSEN] = {
        false, VFIO_USER_POLL_EPOCH,
        VFIO_USER_BLOCK_PROBING_POLL, VFIO_USER_BLOCK_PROBING_POLL,
    },
    [VFIO_USER_BLOCK_PROBING_POLL] = {
        true, VFIO_USER_POLL_PROBE,
        VFIO_USER_BLOCK_CHOSEN, VFIO_USER_POLL_CHOSEN,
    },
};

static bool vfio_user_poll_probing(VFIOUserPollWay way)
{
    return way == VFIO_USER_POLL_PROBING_BLOCK ||
           way == VFIO_USER_BLOCK_PROBING_POLL;
}

/*
 * The main socket is polled by one AioHandler, registered while the
 * receiver lives, instead of qio_channel_yield(), which registers and
 * removes a handler around every wait: per message that costs two GLib
 * wakeups and an extra poll (docs/devel/vfio-user.rst, "Performance").
 * It steps aside (is not registered for reading) while threads wait for
 * replies by polling the socket themselves, so that a reply does not wake
 * the main loop too: see VFIOUserWatch.
 */
void vfio_user_readable(void *opaque)
{
    VFIOProxy *proxy = opaque;

    if (proxy->main.recv_state == VFIO_USER_RECV_WAITING) {
        proxy->main.recv_state = VFIO_USER_RECV_BUSY;
        aio_co_wake(proxy->main.recv_co);
    }
}

void vfio_user_writable(void *opaque)
{
    VFIOProxy *proxy = opaque;
    Coroutine *co = proxy->main.write_co;

    if (co) {
        proxy->main.write_co = NULL;
        aio_co_wake(co);
    }
}

void vfio_user_clear_handler(VFIOProxy *proxy)
{
    if (proxy->handler_ioc) {
        qio_channel_set_aio_fd_handler(proxy->handler_ioc, proxy->ctx, NULL,
                                       proxy->ctx, NULL, NULL);
        g_clear_pointer(&proxy->handler_ioc, object_unref);
    }
    proxy->handler_events = 0;
}

/*
 * The socket is polled for reading while the receiver lives and is not
 * paused by back-pressure (the handler is level triggered: a paused
 * receiver would make every poll spin on the unread message), and the
 * main loop watches it (VFIOUserWatch).
 * The handler is registered with the channel, which we hold while it is:
 * its fd is not closed (only finalizing the channel closes it; nothing
 * calls qio_channel_close()) and so not reused under the handler.
 */
void vfio_user_update_handler(VFIOProxy *proxy)
{
    VFIOUserSocket *s = &proxy->main;
    bool watch = proxy->watch == VFIO_USER_WATCH_ALL ||
                 (proxy->nwaiting && !proxy->pollers);
    GIOCondition events =
        (s->recv_co && s->recv_state != VFIO_USER_RECV_PAUSED && watch ?
         G_IO_IN : 0) | (s->write_co ? G_IO_OUT : 0);

    if (proxy->handler_ioc != s->ioc) {
        vfio_user_clear_handler(proxy);
    }
    /* Registering notifies the AioContext: do it only for a change */
    if (!s->ioc || events == proxy->handler_events) {
        return;
    }
    qio_channel_set_aio_fd_handler(s->ioc, proxy->ctx,
                                   events & G_IO_IN ? vfio_user_readable :
                                   NULL, proxy->ctx,
                                   events & G_IO_OUT ? vfio_user_writable :
                                   NULL, proxy);
    if (!events) {
        g_clear_pointer(&proxy->handler_ioc, object_unref);
    } else if (!proxy->handler_ioc) {
        proxy->handler_ioc = QIO_CHANNEL(object_ref(s->ioc));
    }
    proxy->handler_events = events;
}

/* Polling waiters read the socket: the main loop stops watching it. */
static void vfio_user_step_aside(VFIOProxy *proxy)
{
    proxy->watch = VFIO_USER_WATCH_ASIDE;
    vfio_user_update_handler(proxy);
    timer_mod(&proxy->aside_timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
              VFIO_USER_ASIDE_MS);
}

static void vfio_user_step_in(VFIOProxy *proxy)
{
    proxy->watch = VFIO_USER_WATCH_ALL;
    timer_del(&proxy->aside_timer);
    vfio_user_update_handler(proxy);
}

/* Watch the socket again once polling waiters are gone for a while. */
static void vfio_user_aside_timer_cb(void *opaque)
{
    VFIOProxy *proxy = opaque;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (proxy->watch != VFIO_USER_WATCH_ASIDE) {
        return;
    }
    if (proxy->pollers || now - proxy->last_poll < VFIO_USER_ASIDE_MS) {
        timer_mod(&proxy->aside_timer, now + VFIO_USER_ASIDE_MS);
        return;
    }
    vfio_user_step_in(proxy);
}

void vfio_user_posted(VFIOProxy *proxy)
{
    if (proxy->watch == VFIO_USER_WATCH_ASIDE && !proxy->pollers) {
        /* The server may answer it with requests: watch */
        vfio_user_step_in(proxy);
    }
}

void vfio_user_fast_path_init(VFIOProxy *proxy)
{
    aio_timer_init(proxy->ctx, &proxy->aside_timer, QEMU_CLOCK_REALTIME,
                   SCALE_MS, vfio_user_aside_timer_cb, proxy);
    proxy->poll_max_ns = VFIO_USER_DEFAULT_POLL_MAX_NS;
}

void vfio_user_fast_path_cleanup(VFIOProxy *proxy)
{
    timer_del(&proxy->aside_timer);
}

void vfio_user_proxy_set_poll_max_ns(VFIOProxy *proxy, uint64_t max_ns)
{
    /* A vCPU busy-polls holding the BQL: not for long */
    max_ns = MIN(max_ns, VFIO_USER_MAX_POLL_NS);
    proxy->poll_max_ns = max_ns;
    proxy->poll_ns = MIN(proxy->poll_ns, max_ns);
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
    VFIOUserPollWay way = proxy->poll_way;
    unsigned int len = vfio_user_poll_ways[way].len;
    int64_t avg;

    /* The last VFIO_USER_POLL_TIMED of a phase: the scheduler settled */
    if (++proxy->phase_n > len - VFIO_USER_POLL_TIMED) {
        proxy->phase_ns += elapsed;
    }
    if (proxy->phase_n < len) {
        return;
    }
    avg = proxy->phase_ns / VFIO_USER_POLL_TIMED;
    if (!vfio_user_poll_probing(way)) {
        proxy->chosen_avg_ns = avg;
        proxy->poll_way = vfio_user_poll_ways[way].next;
    } else if (avg * 10 < proxy->chosen_avg_ns * 9) {
        proxy->poll_way = vfio_user_poll_ways[way].better;
        trace_vfio_user_poll_choice(proxy->name,
                                    vfio_user_poll_ways[way].busy, avg,
                                    proxy->chosen_avg_ns);
    } else {
        proxy->poll_way = vfio_user_poll_ways[way].next;
    }
    proxy->phase_n = 0;
    proxy->phase_ns = 0;
}

/*
 * Busy-poll @pfd for the window (poll_ns), yielding the CPU in between:
 * true if something came.
 */
static bool vfio_user_busy_poll(VFIOProxy *proxy, struct pollfd *pfd,
                                int64_t start)
{
    if (!proxy->poll_ns) {
        proxy->poll_ns = MIN(VFIO_USER_POLL_START_NS, proxy->poll_max_ns);
    }
    do {
        if (poll(pfd, 2, 0) > 0) {
            return true;
        }
        /* Let the server run if it shares our CPU */
        sched_yield();
    } while (get_clock() - start < proxy->poll_ns);
    return false;
}

/*
 * Sleep on @pfd until the next timer or bottom half of the AioContext at
 * most: poll()'s result.  A busy-polling waiter that waits in vain
 * shrinks its window.
 */
static int vfio_user_block_poll(VFIOProxy *proxy, struct pollfd *pfd,
                                bool busy)
{
    int64_t timeout = aio_compute_timeout(proxy->ctx);
    int ret;

    timeout = timeout < 0 ? VFIO_USER_POLL_SLICE_MS :
              MIN(qemu_timeout_ns_to_ms(timeout), VFIO_USER_POLL_SLICE_MS);
    ret = poll(pfd, 2, timeout);
    if (busy && ret == 0) {
        vfio_user_poll_adapt(proxy, INT64_MAX);
    }
    return ret;
}

/*
 * What a polling thread watches: the main socket (and room in it for a
 * writer that waits), and the twin, where the server's requests come and
 * our replies go.
 */
static void vfio_user_poll_fds(VFIOProxy *proxy, struct pollfd *pfd)
{
    VFIOUserSocket *twin = &proxy->twin;

    pfd[0] = (struct pollfd) {
        .fd = proxy->main.fd,
        .events = POLLIN | (proxy->main.write_co ? POLLOUT : 0),
    };
    pfd[1] = (struct pollfd) {
        .fd = twin->ioc && twin->recv_state != VFIO_USER_RECV_PAUSED ?
              twin->fd : -1,
        .events = POLLIN | (twin->write_co ? POLLOUT : 0),
    };
}

/*
 * A thread waiting for a reply in the proxy's home thread drives the
 * receiver itself: it polls the socket (busy for up to poll_ns, then
 * blocking in poll() on that one descriptor) and runs the receiver when
 * it is readable, so that a reply wakes this thread only (the main loop
 * does not watch the main socket meanwhile; see
 * vfio_user_update_handler()).  Returns false, for the caller to run the
 * AioContext instead, when the receiver does not wait for the socket (it
 * is paused, or busy), or nothing was sent yet.  When a slice of blocking
 * passed without a message, or the AioContext has work (a request on the
 * twin socket, which may wait for our answer before the server answers
 * us; room for a writer), it runs the AioContext once: the main loop
 * cannot while we hold the BQL.
 */
bool vfio_user_poll_reply(VFIOProxy *proxy)
{
    struct pollfd pfd[2];
    bool busy = proxy->poll_max_ns &&
                vfio_user_poll_ways[proxy->poll_way].busy;
    int64_t start, elapsed;

    if (!proxy->main.recv_co ||
        proxy->main.recv_state != VFIO_USER_RECV_WAITING ||
        !proxy->nwaiting) {
        return false;
    }
    vfio_user_poll_fds(proxy, pfd);
    start = get_clock();
    if (!(busy && vfio_user_busy_poll(proxy, pfd, start)) &&
        vfio_user_block_poll(proxy, pfd, busy) <= 0) {
        aio_poll(proxy->ctx, false);
        return true;
    }
    if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
        aio_poll(proxy->ctx, false);
        return true;
    }
    elapsed = get_clock() - start;
    if (busy) {
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
    if (!proxy->pollers++ && proxy->watch == VFIO_USER_WATCH_ALL) {
        vfio_user_step_aside(proxy);
    }
}

void vfio_user_poll_end(VFIOProxy *proxy)
{
    proxy->pollers--;
    proxy->last_poll = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    vfio_user_update_handler(proxy);
}
