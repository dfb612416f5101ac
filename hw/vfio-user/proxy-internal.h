/*
 * vfio-user transport: what the files of the transport share
 *
 * The transport is one layer on message.c, in five files:
 * - proxy.c: the connection: its state and how it ends, our requests and
 *   their waiters, writes, the receivers, reply deadlines, the lifecycle;
 * - poll.c: the fast path: our AioHandler on the socket, the main loop
 *   stepping aside, and a waiting thread polling for its reply;
 * - serve.c: the server's requests: their queue, back-pressure, and the
 *   handler that serves DMA_READ and DMA_WRITE;
 * - connect.c: opening a UNIX socket, attaching a channel, the version
 *   negotiation;
 * - wait.c: the blocking wrappers for callers outside coroutines.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PROXY_INTERNAL_H
#define HW_VFIO_USER_PROXY_INTERNAL_H

#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "qemu/timer.h"
#include "hw/vfio-user/proxy.h"

typedef struct VFIOUserWaiter VFIOUserWaiter;
typedef struct VFIOUserRequest VFIOUserRequest;

/* What the receiver coroutine of a socket is doing. */
typedef enum VFIOUserRecvState {
    /* Reading a message, or handing it over */
    VFIO_USER_RECV_BUSY,
    /* Waiting for the main socket to become readable (our AioHandler) */
    VFIO_USER_RECV_WAITING,
    /* Stopped by back-pressure until the request handler catches up */
    VFIO_USER_RECV_PAUSED,
} VFIOUserRecvState;

/* One socket of the connection: the main one, or the twin. */
typedef struct VFIOUserSocket {
    VFIOProxy *proxy;
    /* NULL when there is none */
    QIOChannel *ioc;
    int fd;
    /* Its receiver, the only reader, while it lives */
    Coroutine *recv_co;
    VFIOUserRecvState recv_state;
    /* The coroutine that waits for room to write, or NULL */
    Coroutine *write_co;
} VFIOUserSocket;

/*
 * When the main loop reads the main socket (vfio_user_update_handler()):
 * whenever the receiver waits for it (ALL), or only while a coroutine
 * waits for a reply and no thread polls for one: while threads poll
 * without a twin socket (ASIDE, until a posted write goes out or no
 * thread polled for a while), or for good when the twin socket carries
 * the server's requests (TWIN).
 */
typedef enum VFIOUserWatch {
    VFIO_USER_WATCH_ALL,
    VFIO_USER_WATCH_ASIDE,
    VFIO_USER_WATCH_TWIN,
} VFIOUserWatch;

/*
 * How a polling thread waits for its reply (vfio_user_poll_account()):
 * a phase in the chosen way, busy-polling or blocking, then a shorter
 * one probing the other way.
 */
typedef enum VFIOUserPollWay {
    VFIO_USER_POLL_CHOSEN,
    VFIO_USER_POLL_PROBING_BLOCK,
    VFIO_USER_BLOCK_CHOSEN,
    VFIO_USER_BLOCK_PROBING_POLL,
} VFIOUserPollWay;

/*
 * Everything runs in @ctx: the receivers, the request handler, the
 * coroutines of the callers and the timers.  For the main loop's
 * AioContext the BQL provides the mutual exclusion, for an IOThread's
 * its single thread.
 */
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
    /* Why the proxy failed. */
    Error *err;
    VFIOUserCaps caps;
    VFIOUserSocket main;
    /*
     * The twin socket (twin_socket capability; @ioc NULL without): the
     * server's requests and our replies to them travel on it, so that
     * neither side's request can come between the other's request and
     * reply.  Its receiver is the only reader, the request handler the
     * only writer.  Both wait with qio_channel_yield(): the twin is not
     * on the path of our requests' replies.
     */
    VFIOUserSocket twin;

    /* The fast path (poll.c) */
    /*
     * The channel our AioHandler is registered on (a reference: its fd
     * stays open while registered), and for what (G_IO_IN, G_IO_OUT).
     */
    QIOChannel *handler_ioc;
    GIOCondition handler_events;
    /*
     * Requests sent whose reply is awaited, and the threads that wait for
     * one by polling the socket themselves (vfio_user_poll_reply()).
     */
    unsigned int nwaiting;
    unsigned int pollers;
    VFIOUserWatch watch;
    /* While ASIDE: finds when no thread polled for a while. */
    QEMUTimer aside_timer;
    int64_t last_poll;
    /* Adaptive polling before a poller blocks, ns (0: off) */
    uint64_t poll_ns;
    uint64_t poll_max_ns;
    /* Whether polling pays at all, and the replies of the current phase */
    VFIOUserPollWay poll_way;
    unsigned int phase_n;
    int64_t phase_ns;
    int64_t chosen_avg_ns;

    /* Our requests (proxy.c) */
    /* Held while a message is written on the main socket. */
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

    /* The server's requests (serve.c) */
    Coroutine *req_co;
    /*
     * A request of the handler's own (a DMA request that reaches a BAR
     * of the device) whose reply it awaits, or NULL: the receivers then
     * read on past back-pressure, or that reply could never come.
     */
    VFIOUserWaiter *req_waiter;
    QSIMPLEQ_HEAD(, VFIOUserRequest) requests;
    unsigned int nrequests;
    size_t request_bytes;
};

/* proxy.c: the connection */

/* Set @errp to an error that names the server. */
void G_GNUC_PRINTF(3, 4)
vfio_user_error(VFIOProxy *proxy, Error **errp, const char *fmt, ...);

void vfio_user_set_state(VFIOProxy *proxy, VFIOProxyState state);

/*
 * The ways a connection ends:
 * - vfio_user_lost(): the connection @gen is lost (EOF, an I/O error, a
 *   protocol violation, a dead server): FAILED, and the owner's failed
 *   callback is called (if it was connected).  Takes @err.
 * - vfio_user_hang_up(): the channel ends quietly, to @state (FAILED or
 *   CLOSED): no callback; the owner asked for it, or a caller reports the
 *   error itself.  Takes @err.
 * Either way every waiter fails at once with @err, queued server
 * requests are dropped, and the coroutines of the channel are kicked:
 * they see the new state and end.
 */
void vfio_user_lost(VFIOProxy *proxy, unsigned int gen, Error *err);
void vfio_user_hang_up(VFIOProxy *proxy, VFIOProxyState state, Error *err);

/* May a message with @command go out on connection @gen? */
bool vfio_user_can_send(VFIOProxy *proxy, unsigned int gen,
                        uint16_t command, Error **errp);

/*
 * Write a whole message on @s: header (converted to little-endian) and
 * payload go in one sendmsg() with the descriptors when the socket takes
 * it all.  On the main socket, with send_lock held.
 */
int coroutine_fn vfio_user_co_write(VFIOUserSocket *s, const VFIOUserHdr *msg,
                                    const int *fds, size_t nfds,
                                    Error **errp);

/*
 * Read exactly @len bytes from @s.  With @fds (the header), the
 * descriptors that come with the first bytes go there, and end-of-file
 * before the first byte returns 0; else end-of-file is an error.
 * Returns 1 or -1.
 */
int coroutine_fn vfio_user_co_read(VFIOUserSocket *s, void *buf, size_t len,
                                   int **fds, size_t *nfds, Error **errp);

/*
 * Send @msg and, unless VFIO_USER_SEND_NO_REPLY, wait for its reply; the
 * arguments are checked by the caller.
 */
int coroutine_fn vfio_user_co_request(VFIOProxy *proxy, VFIOUserHdr *msg,
                                      VFIOUserFDs *fds, uint32_t reply_max,
                                      unsigned int flags, Error **errp);

/* The receiver of the socket @opaque: the only reader of its channel. */
void coroutine_fn vfio_user_receiver_co(void *opaque);

/* Wait until the coroutines of the last channel have ended. */
void vfio_user_drain(VFIOProxy *proxy);

AioContext *vfio_user_proxy_context(VFIOProxy *proxy);

/* poll.c: the fast path */

void vfio_user_fast_path_init(VFIOProxy *proxy);
void vfio_user_fast_path_cleanup(VFIOProxy *proxy);

/* Register our AioHandler on the main socket for what is needed now. */
void vfio_user_update_handler(VFIOProxy *proxy);
/* Remove it, from the last channel's socket or the current. */
void vfio_user_clear_handler(VFIOProxy *proxy);
/* Our handler's callbacks: wake the main socket's receiver, or writer. */
void vfio_user_readable(void *opaque);
void vfio_user_writable(void *opaque);
/* A posted write went out: the main loop watches the socket again. */
void vfio_user_posted(VFIOProxy *proxy);

/*
 * A caller in the AioContext's home thread waits for a reply by polling
 * the socket itself: vfio_user_poll_begin() before the request starts,
 * vfio_user_poll_reply() until it is done (false: run the AioContext
 * instead), vfio_user_poll_end() after.
 */
void vfio_user_poll_begin(VFIOProxy *proxy);
bool vfio_user_poll_reply(VFIOProxy *proxy);
void vfio_user_poll_end(VFIOProxy *proxy);

/* serve.c: the server's requests */

/* Receive the rest of a request of the server and queue it. */
int coroutine_fn vfio_user_co_recv_request(VFIOUserSocket *s,
                                           VFIOUserHdr *hdr, int *fds,
                                           size_t nfds, Error **errp);
/* Let receivers paused by back-pressure read on. */
void vfio_user_recv_resume(VFIOProxy *proxy);
/* Drop the queued requests of a channel that ended. */
void vfio_user_drop_requests(VFIOProxy *proxy);

/* connect.c */

/* Negotiate the version on the channel just attached (CONNECTING). */
int coroutine_fn vfio_user_co_negotiate(VFIOProxy *proxy, Error **errp);

/*
 * Check that @sioc can become the proxy's channel, wait for the
 * coroutines of the last one to end, and attach it: the proxy is
 * CONNECTING.  Outside coroutines, in the AioContext's home thread.
 */
int vfio_user_proxy_start_attach(VFIOProxy *proxy, QIOChannelSocket *sioc,
                                 const char *name, Error **errp);

#endif /* HW_VFIO_USER_PROXY_INTERNAL_H */
