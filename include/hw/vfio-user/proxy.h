/*
 * vfio-user transport: VFIOProxy
 *
 * A VFIOProxy is the client end of one vfio-user connection.  It runs in
 * one AioContext (the main loop's by default): a receiver coroutine is the
 * only reader of the socket, a request handler coroutine serves the
 * server's DMA requests, and a CoMutex serialises whole messages.  See
 * docs/devel/vfio-user.rst for the design.
 *
 * Which call to use:
 * - in a coroutine running in the proxy's AioContext:
 *   vfio_user_co_send_recv();
 * - anywhere else: vfio_user_send_recv(), which picks the way to wait
 *   (a calling coroutine yields; the AioContext's home thread, which for
 *   the main loop's is the main loop thread or any thread holding the
 *   BQL, polls the socket itself while its reply is due, adaptively, and
 *   runs the AioContext otherwise; other threads sleep on a semaphore);
 * - a vCPU thread that must let other vCPUs run during a long wait:
 *   vfio_user_send_recv_unlocked() (drops the BQL while it sleeps).
 *
 * How a connection ends, from the owner's side: vfio_user_proxy_lost()
 * (the server is lost: FAILED, and the failed callback is called, as
 * when the proxy finds it lost itself), vfio_user_proxy_abort() (FAILED,
 * no callback; does not block), vfio_user_proxy_close() (CLOSED, no
 * callback; blocks until the channel's coroutines have ended and
 * releases it), vfio_user_proxy_free().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PROXY_H
#define HW_VFIO_USER_PROXY_H

#include "qapi/qapi-types-sockets.h"
#include "io/channel-socket.h"
#include "hw/vfio-user/protocol.h"

typedef struct VFIOProxy VFIOProxy;

typedef enum VFIOProxyState {
    /* No channel: not connected yet, or closed by the owner. */
    VFIO_PROXY_CLOSED,
    /* A channel is attached and the version is being negotiated. */
    VFIO_PROXY_CONNECTING,
    /* Messages flow. */
    VFIO_PROXY_CONNECTED,
    /*
     * The channel died (EOF, I/O error, protocol violation, or the
     * server stopped answering).  Sends fail at once; the owner may
     * attach a new channel with vfio_user_proxy_attach().
     */
    VFIO_PROXY_FAILED,
} VFIOProxyState;

/*
 * File descriptors that travel with a message.
 * @send, @nsend: passed with the request (the caller keeps them open and
 *                owns them); at most caps->max_send_fds.
 * @recv, @max_recv: room for the descriptors the reply may carry; a reply
 *                with more is an error (and its descriptors are closed).
 * @nrecv: set on return: how many were received; the caller owns them.
 */
typedef struct VFIOUserFDs {
    const int *send;
    unsigned int nsend;
    int *recv;
    unsigned int max_recv;
    unsigned int nrecv;
} VFIOUserFDs;

typedef struct VFIOUserProxyOps {
    /*
     * Serve the server's VFIO_USER_DMA_READ (@is_write false: fill @buf)
     * or VFIO_USER_DMA_WRITE (@is_write true: store @buf) of @len bytes at
     * DMA address @addr.  Runs in the request handler coroutine, in the
     * proxy's AioContext, with the BQL held when that is the main loop's.
     * Returns 0 or a negative errno, which goes back to the server.  May
     * be NULL: DMA requests then fail with ENODEV.
     */
    int coroutine_fn (*dma_rw)(void *opaque, uint64_t addr, void *buf,
                               uint64_t len, bool is_write);
    /*
     * The proxy moved to VFIO_PROXY_FAILED; @err says why (owned by the
     * proxy).  Called once per failure, in the proxy's AioContext,
     * possibly from a coroutine: do not block, and do not free the proxy
     * here (schedule a bottom half for that).  May be NULL.
     */
    void (*failed)(void *opaque, const Error *err);
} VFIOUserProxyOps;

/*
 * The default longest time a thread waiting for a reply busy-polls the
 * socket before it sleeps (x-poll-max-ns; 0 never polls).
 */
#define VFIO_USER_DEFAULT_POLL_MAX_NS   100000
/* ... and the most it may be set to */
#define VFIO_USER_MAX_POLL_NS           1000000

/**
 * vfio_user_proxy_set_poll_max_ns: cap adaptive polling (0: off)
 */
void vfio_user_proxy_set_poll_max_ns(VFIOProxy *proxy, uint64_t max_ns);

/* The default reply timeout: see docs/devel/vfio-user.rst. */
#define VFIO_USER_DEFAULT_TIMEOUT_MS    5000

/* @flags of the send functions. */
/* Posted: set no-reply, return once the message is sent. */
#define VFIO_USER_SEND_NO_REPLY         (1u << 0)

/**
 * vfio_user_proxy_new: create a proxy, in state VFIO_PROXY_CLOSED
 * @ctx: the AioContext it runs in; NULL for the main loop's
 * @ops: callbacks, or NULL
 * @opaque: passed to @ops
 */
VFIOProxy *vfio_user_proxy_new(AioContext *ctx, const VFIOUserProxyOps *ops,
                               void *opaque);

/**
 * vfio_user_proxy_set_timeout: set how long to wait for a reply
 * @timeout_ms: milliseconds; 0 waits forever
 *
 * A request without reply in time fails with -ETIMEDOUT; its late reply
 * is dropped.  If a second request times out while an earlier one is
 * still unanswered, the server is declared dead (VFIO_PROXY_FAILED).
 */
void vfio_user_proxy_set_timeout(VFIOProxy *proxy, uint32_t timeout_ms);

/**
 * vfio_user_proxy_begin_teardown: bound the waits of a reset or unplug
 *
 * Until vfio_user_proxy_end_teardown(), the first request that times out
 * declares the server lost (instead of failing alone): a hung server
 * holds a reset or unplug up for one reply timeout, not one per message,
 * while a slow one that answers in time is not hurt.  Calls nest.
 * @proxy may be NULL.
 */
void vfio_user_proxy_begin_teardown(VFIOProxy *proxy);
void vfio_user_proxy_end_teardown(VFIOProxy *proxy);

/**
 * vfio_user_proxy_connect: connect and negotiate the version
 * @addr: a UNIX socket path, or an already connected socket (type fd: a
 *        name passed with getfd/add-fd in the monitor, or a number)
 *
 * Blocking: call it outside coroutines, with the BQL when @ctx is the
 * main loop's.  On success the proxy is VFIO_PROXY_CONNECTED.
 * Returns 0 or -errno with @errp set.
 */
int vfio_user_proxy_connect(VFIOProxy *proxy, SocketAddress *addr,
                            Error **errp);

/**
 * vfio_user_proxy_attach: attach a connected socket and negotiate
 * @sioc: a connected AF_UNIX socket; the proxy takes a reference
 * @name: names the server in errors and traces
 *
 * The proxy must be VFIO_PROXY_CLOSED or VFIO_PROXY_FAILED: this is also
 * how a later reconnect gives a failed proxy a new channel, without the
 * device being torn down.  Blocking, like vfio_user_proxy_connect().
 */
int vfio_user_proxy_attach(VFIOProxy *proxy, QIOChannelSocket *sioc,
                           const char *name, Error **errp);

/**
 * vfio_user_proxy_open: connect a socket to the server at @addr
 * @nonblock: for a UNIX path, fail at once if the server does not accept
 *            the connection now, instead of waiting for it up to the
 *            reply timeout
 * @name: set to the server's name for errors (NULL if @addr is of a
 *        type that vfio-user cannot use); the caller frees it
 *
 * For a socket of type fd, the name is looked up in the current monitor
 * (call it from a monitor command, or at startup).  Returns the socket,
 * or NULL with @errp set.
 */
QIOChannelSocket *vfio_user_proxy_open(VFIOProxy *proxy, SocketAddress *addr,
                                       bool nonblock, char **name,
                                       Error **errp);

/**
 * vfio_user_co_proxy_attach: vfio_user_proxy_attach() in a coroutine
 *
 * The calling coroutine yields during the negotiation instead of
 * blocking.  Fails with -EBUSY if the coroutines of the last channel
 * have not ended yet (they end soon after a failure; try again later).
 * On failure the proxy is VFIO_PROXY_FAILED, and its owner's failed
 * callback is not called.
 */
int coroutine_fn vfio_user_co_proxy_attach(VFIOProxy *proxy,
                                           QIOChannelSocket *sioc,
                                           const char *name, Error **errp);

/**
 * vfio_user_proxy_lost: the owner declares the server lost (@err says
 * why; taken): as when the proxy finds it lost itself, the owner's
 * failed callback is called (if it was connected: a connection lost in
 * the version negotiation is its caller's error).  A no-op unless
 * connecting or connected.
 */
void vfio_user_proxy_lost(VFIOProxy *proxy, Error *err);

/** vfio_user_proxy_timeout: the reply timeout in ms (0: none) */
uint32_t vfio_user_proxy_timeout(VFIOProxy *proxy);

/**
 * vfio_user_proxy_abort: fail the connection now, from the owner's side
 *
 * Waiters fail at once, the proxy is VFIO_PROXY_FAILED; the owner's
 * failed callback is not called.  Does not block (coroutines of the
 * channel end later); a no-op unless the proxy is connecting or
 * connected.
 */
void vfio_user_proxy_abort(VFIOProxy *proxy);

/**
 * vfio_user_proxy_close: drop the channel; waiters fail, the proxy is
 * VFIO_PROXY_CLOSED and may be attached again.  Blocking.
 */
void vfio_user_proxy_close(VFIOProxy *proxy);

/** vfio_user_proxy_free: close and free the proxy (NULL is allowed). */
void vfio_user_proxy_free(VFIOProxy *proxy);

VFIOProxyState vfio_user_proxy_state(VFIOProxy *proxy);

/** vfio_user_proxy_caps: valid once the proxy has been connected. */
const VFIOUserCaps *vfio_user_proxy_caps(VFIOProxy *proxy);

/** vfio_user_proxy_name: the server's socket, as used in errors. */
const char *vfio_user_proxy_name(VFIOProxy *proxy);

/**
 * vfio_user_msg_init: fill in the header of a request
 * @size: the whole message, header included
 */
void vfio_user_msg_init(VFIOUserHdr *msg, VFIOUserCommand command,
                        uint32_t size);

/**
 * vfio_user_co_send_recv: send a request and wait for its reply
 * @msg: the request: header (vfio_user_msg_init()) and payload.  On
 *       success it holds the reply, header in host byte order.
 * @fds: descriptors to send and to receive, or NULL
 * @reply_max: room at @msg for the reply, header included (unused with
 *             VFIO_USER_SEND_NO_REPLY)
 * @flags: VFIO_USER_SEND_*
 *
 * Must run in the proxy's AioContext.  Messages leave in the order their
 * senders call this function, and a posted message has been sent when it
 * returns, so a later read observes earlier posted writes.
 *
 * Returns 0 on success; the negated errno of an error reply (EINVAL if
 * the server gave none); -ETIMEDOUT; or another negative errno when the
 * message could not be sent or the reply was malformed.  @errp is set on
 * every failure.
 */
int coroutine_fn vfio_user_co_send_recv(VFIOProxy *proxy, VFIOUserHdr *msg,
                                        VFIOUserFDs *fds, uint32_t reply_max,
                                        unsigned int flags, Error **errp);

/**
 * vfio_user_send_recv: vfio_user_co_send_recv() for any caller
 *
 * In a coroutine it is vfio_user_co_send_recv().  Otherwise it waits in
 * the way that suits the calling thread: in the proxy's AioContext's home
 * thread (for the main loop's: the main loop thread, and vCPU threads,
 * which hold the BQL) it polls the socket for its reply, busy for a
 * while, then blocking, and runs the AioContext (aio_poll()) when the
 * reply is not what it waits for; in other threads it sleeps on a
 * semaphore.  The server's DMA requests are served during the wait in
 * every case.
 */
int vfio_user_send_recv(VFIOProxy *proxy, VFIOUserHdr *msg, VFIOUserFDs *fds,
                        uint32_t reply_max, unsigned int flags, Error **errp);

/**
 * vfio_user_send_recv_unlocked: vfio_user_send_recv() for a vCPU thread
 * that lets the BQL go while it waits
 *
 * The message is sent from the calling thread; then the BQL is dropped
 * and the thread sleeps on a semaphore until the main loop has run the
 * reply in.  Slower than vfio_user_send_recv() (see the documentation),
 * but other vCPUs and the main loop keep running during a long wait.
 * Requires the BQL and a proxy in the main loop's AioContext.
 */
int vfio_user_send_recv_unlocked(VFIOProxy *proxy, VFIOUserHdr *msg,
                                 VFIOUserFDs *fds, uint32_t reply_max,
                                 unsigned int flags, Error **errp);

#endif /* HW_VFIO_USER_PROXY_H */
