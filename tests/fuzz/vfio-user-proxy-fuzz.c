/*
 * libFuzzer target: the VFIOProxy transport against a server whose every
 * byte is the fuzzer's
 *
 * The input is what the server sends, whole: it is written to the
 * server's end of a socketpair before the client starts (then the server
 * end stops sending: the client sees end-of-file after it).  The client
 * negotiates the version, then makes a few requests (region reads and a
 * write, device info, a request that takes descriptors back), while the
 * server's requests in the stream (DMA_READ/DMA_WRITE) are served
 * against a small guest memory whose bounds the callback checks.  Our
 * requests are read and dropped from the server's end as they come.
 * Whatever the input, the client must not crash, leak, touch memory
 * outside its buffers, or hang: every wait ends at the end of the
 * stream.  The first input byte selects a file descriptor to send along
 * with the stream (none, an eventfd, a memfd, a socket): the fd side
 * channel.
 *
 * Built by scripts/fuzz (make fuzz) with clang and
 * -fsanitize=fuzzer,address,undefined, linked like the transport's unit
 * test.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/socket.h>
#include <sys/eventfd.h>
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "block/aio.h"
#include "hw/vfio-user/proxy.h"
/* libFuzzer's entry points, as QEMU's own fuzz targets declare them */
#include "tests/qtest/fuzz/fuzz.h"

#define GUEST_MEM_SIZE  0x4000
/* Inputs larger than this are cut (the socket buffer holds them whole) */
#define PROXY_FUZZ_MAX_INPUT       (128 * 1024)

static uint8_t guest_mem[GUEST_MEM_SIZE];

static int coroutine_fn fuzz_dma_rw(void *opaque, uint64_t addr, void *buf,
                                    uint64_t len, bool is_write)
{
    if (addr > sizeof(guest_mem) || len > sizeof(guest_mem) - addr) {
        return -EFAULT;
    }
    if (is_write) {
        memcpy(guest_mem + addr, buf, len);
    } else {
        memcpy(buf, guest_mem + addr, len);
    }
    return 0;
}

static void fuzz_failed(void *opaque, const Error *err)
{
}

static const VFIOUserProxyOps fuzz_ops = {
    .dma_rw = fuzz_dma_rw,
    .failed = fuzz_failed,
};

/* One request of ours; the reply's fds (if any) are closed. */
static void fuzz_request(VFIOProxy *proxy, uint16_t command,
                         const void *payload, uint32_t len, uint32_t max)
{
    g_autofree uint8_t *buf = g_malloc0(sizeof(VFIOUserHdr) + MAX(len, max));
    VFIOUserHdr *msg = (VFIOUserHdr *)buf;
    int fds[16];
    VFIOUserFDs vfds = { .recv = fds, .max_recv = ARRAY_SIZE(fds) };
    Error *err = NULL;
    unsigned int i;

    vfio_user_msg_init(msg, command, sizeof(*msg) + len);
    memcpy(msg + 1, payload, len);
    vfio_user_send_recv(proxy, msg, &vfds, sizeof(*msg) + max, 0, &err);
    error_free(err);
    for (i = 0; i < vfds.nrecv; i++) {
        close(fds[i]);
    }
}

/* The side channel's descriptor for the stream, or -1 */
static int fuzz_fd(uint8_t sel)
{
    int sv[2];

    switch (sel & 3) {
    case 1:
        return eventfd(0, 0);
    case 2:
        return memfd_create("fuzz", 0);
    case 3:
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
            close(sv[1]);
            return sv[0];
        }
    }
    return -1;
}

/* Write the stream (and the descriptor with its first byte). */
static void fuzz_feed(int fd, const uint8_t *data, size_t size, int pass)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = size };
    char control[CMSG_SPACE(sizeof(int))] = { };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;
    ssize_t n;

    if (pass >= 0 && size) {
        mh.msg_control = control;
        mh.msg_controllen = sizeof(control);
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &pass, sizeof(int));
    }
    while (iov.iov_len) {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n <= 0) {
            break;
        }
        iov.iov_base = (uint8_t *)iov.iov_base + n;
        iov.iov_len -= n;
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static bool initialized;
    static const struct {
        uint64_t offset;
        uint32_t region, count;
    } QEMU_PACKED rd = { 0, 0, 4 };
    static const struct {
        uint64_t offset;
        uint32_t region, count;
        uint8_t data[8];
    } QEMU_PACKED wr = { 8, 1, 8, { 1, 2, 3, 4, 5, 6, 7, 8 } };
    static const uint32_t info[4] = { 16, 0, 0, 0 };
    static const uint32_t region_info[8] = { 64, 0, 2, 0 };
    SocketAddress addr = { .type = SOCKET_ADDRESS_TYPE_FD };
    VFIOProxy *proxy;
    int sv[2], pass;
    char sink[4096];

    if (!initialized) {
        signal(SIGPIPE, SIG_IGN);
        module_call_init(MODULE_INIT_QOM);
        qemu_init_main_loop(&error_abort);
        initialized = true;
    }
    if (!size) {
        return 0;
    }
    pass = fuzz_fd(data[0]);
    data++;
    size = MIN(size - 1, PROXY_FUZZ_MAX_INPUT);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
        abort();
    }
    {
        int buf = 4 * PROXY_FUZZ_MAX_INPUT;

        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    }
    fuzz_feed(sv[0], data, size, pass);
    if (pass >= 0) {
        close(pass);
    }
    /* The server has said all it will say */
    shutdown(sv[0], SHUT_WR);

    proxy = vfio_user_proxy_new(NULL, &fuzz_ops, NULL);
    addr.u.fd.str = g_strdup_printf("%d", sv[1]);
    if (vfio_user_proxy_connect(proxy, &addr, NULL) == 0) {
        fuzz_request(proxy, VFIO_USER_DEVICE_GET_INFO, info, sizeof(info),
                     64);
        fuzz_request(proxy, VFIO_USER_REGION_READ, &rd, sizeof(rd), 64);
        fuzz_request(proxy, VFIO_USER_DEVICE_GET_REGION_INFO, region_info,
                     sizeof(region_info), 256);
        fuzz_request(proxy, VFIO_USER_REGION_WRITE, &wr, sizeof(wr), 32);
        fuzz_request(proxy, VFIO_USER_REGION_READ, &rd, sizeof(rd), 64);
        /* Our requests: read and dropped, for the socket not to fill */
        while (recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
            continue;
        }
    }
    g_free(addr.u.fd.str);
    vfio_user_proxy_free(proxy);
    close(sv[0]);
    return 0;
}
