/*
 * vfio-user transport (VFIOProxy) tests
 *
 * The proxy runs in the main loop's AioContext of this thread; a scripted
 * server runs in a thread on the other end of a socketpair, with blocking
 * I/O, and checks every message it gets.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include "qapi/error.h"
#include "qemu/coroutine.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "block/aio.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "hw/vfio-user/proxy.h"
#include "trace/control.h"
#include "tests/vfio-user/count-fds.h"

/* Server side */

typedef struct TestServer TestServer;
typedef void TestScript(TestServer *s);

struct TestServer {
    int fd;
    TestScript *script;
    QemuThread thread;
    /* Posted by the main thread when a script waits for it. */
    QemuSemaphore go;
    /* Set by scripts that fail a check (asserting in a thread is messy). */
    const char *fail;
    void *opaque;
};

#define SRV_CHECK(s, cond) do {                          \
        if (!(cond) && !(s)->fail) {                     \
            (s)->fail = #cond;                           \
        }                                                \
    } while (0)

static void hdr_to_wire(VFIOUserHdr *w, const VFIOUserHdr *h)
{
    w->id = cpu_to_le16(h->id);
    w->command = cpu_to_le16(h->command);
    w->size = cpu_to_le32(h->size);
    w->flags = cpu_to_le32(h->flags);
    w->error_reply = cpu_to_le32(h->error_reply);
}

/* Send a message in one sendmsg(); @hdr->size may lie on purpose. */
static void srv_send(TestServer *s, const VFIOUserHdr *hdr,
                     const void *payload, size_t len,
                     const int *fds, size_t nfds)
{
    VFIOUserHdr wire;
    struct iovec iov[2] = {
        { .iov_base = &wire, .iov_len = sizeof(wire) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    char control[CMSG_SPACE(sizeof(int) * 16)] = { 0 };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    ssize_t n;

    hdr_to_wire(&wire, hdr);
    if (nfds) {
        struct cmsghdr *cmsg;

        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    n = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
    SRV_CHECK(s, n == sizeof(wire) + len);
}

static void srv_reply(TestServer *s, const VFIOUserHdr *req,
                      const void *payload, size_t len,
                      const int *fds, size_t nfds)
{
    VFIOUserHdr h = {
        .id = req->id, .command = req->command, .flags = VFIO_USER_REPLY,
        .size = sizeof(h) + len,
    };

    srv_send(s, &h, payload, len, fds, nfds);
}

/*
 * Receive a whole message; the payload goes to @payload (at most @max
 * bytes).  Descriptors go to @fds, or are counted in *@nfds and closed
 * if @fds is NULL.  Returns false at end-of-file.
 */
static bool srv_recv(TestServer *s, VFIOUserHdr *hdr, void *payload,
                     size_t max, int *fds, size_t *nfds)
{
    VFIOUserHdr wire;
    struct iovec iov = { .iov_base = &wire, .iov_len = sizeof(wire) };
    char control[CMSG_SPACE(sizeof(int) * 16)];
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control, .msg_controllen = sizeof(control),
    };
    struct cmsghdr *cmsg;
    size_t n = 0, len;

    if (recvmsg(s->fd, &mh, MSG_WAITALL) != sizeof(wire)) {
        return false;
    }
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        int *p = (int *)CMSG_DATA(cmsg);
        size_t i, cnt = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

        for (i = 0; i < cnt; i++, n++) {
            if (fds) {
                fds[n] = p[i];
            } else {
                close(p[i]);
            }
        }
    }
    if (nfds) {
        *nfds = n;
    }
    hdr->id = le16_to_cpu(wire.id);
    hdr->command = le16_to_cpu(wire.command);
    hdr->size = le32_to_cpu(wire.size);
    hdr->flags = le32_to_cpu(wire.flags);
    hdr->error_reply = le32_to_cpu(wire.error_reply);
    len = hdr->size - sizeof(wire);
    SRV_CHECK(s, hdr->size >= sizeof(wire) && len <= max);
    if (len > max) {
        return false;
    }
    return !len || recv(s->fd, payload, len, MSG_WAITALL) == len;
}

/* Read a message that must be a request for @command; returns its header. */
static VFIOUserHdr srv_expect(TestServer *s, uint16_t command, void *payload,
                              size_t max)
{
    VFIOUserHdr h = { 0 };

    SRV_CHECK(s, srv_recv(s, &h, payload, max, NULL, NULL));
    SRV_CHECK(s, h.command == command);
    SRV_CHECK(s, (h.flags & VFIO_USER_TYPE) == VFIO_USER_REQUEST);
    return h;
}

/* Answer the VERSION request with @payload; checks our proposal. */
static void srv_version_reply(TestServer *s, const void *payload, size_t len)
{
    g_autofree char *buf = g_malloc0(4096);
    VFIOUserHdr h = srv_expect(s, VFIO_USER_VERSION, buf, 4095);
    g_autoptr(QDict) top = NULL;
    QDict *caps;

    SRV_CHECK(s, h.size > 20 && buf[h.size - 17] == '\0');
    top = qobject_to(QDict, qobject_from_json(buf + 4, NULL));
    caps = top ? qdict_get_qdict(top, "capabilities") : NULL;
    SRV_CHECK(s, caps && qdict_get_int(caps, "max_msg_fds") == 16 &&
              qdict_get_int(caps, "max_data_xfer_size") == 1048576 &&
              qdict_haskey(caps, "max_dma_maps") &&
              qdict_haskey(caps, "pgsizes") &&
              qdict_get_qdict(caps, "migration") &&
              qdict_get_int(qdict_get_qdict(caps, "migration"), "pgsize") ==
              qemu_real_host_page_size() &&
              !qdict_haskey(caps, "write_multiple") &&
              qdict_get_qdict(caps, "twin_socket") &&
              qdict_get_bool(qdict_get_qdict(caps, "twin_socket"),
                             "supported"));
    srv_reply(s, &h, payload, len, NULL, 0);
}

#define GOOD_CAPS "{\"capabilities\":{\"max_msg_fds\":8," \
    "\"max_data_xfer_size\":65536,\"max_dma_maps\":16,\"pgsizes\":4096}}"

/* A VERSION reply payload: major, minor, then @json (with its NUL). */
static size_t version_payload(char *buf, uint16_t major, uint16_t minor,
                              const char *json, size_t jsonlen)
{
    uint16_t v[2] = { cpu_to_le16(major), cpu_to_le16(minor) };

    memcpy(buf, v, sizeof(v));
    memcpy(buf + sizeof(v), json, jsonlen);
    return sizeof(v) + jsonlen;
}

static void srv_negotiate(TestServer *s)
{
    char buf[512];

    srv_version_reply(s, buf, version_payload(buf, 0, 1, GOOD_CAPS,
                                              sizeof(GOOD_CAPS)));
}

/* Drain until the client hangs up. */
static void srv_until_eof(TestServer *s)
{
    char buf[4096];
    VFIOUserHdr h;

    while (srv_recv(s, &h, buf, sizeof(buf), NULL, NULL)) {
        /* nothing */
    }
}

static void *srv_thread(void *opaque)
{
    TestServer *s = opaque;

    s->script(s);
    return NULL;
}

/* Client side */

static AioContext *ctx;
static uint8_t guest_mem[64 * KiB];
static int failed_calls;
static char *failed_msg;
/* DMA requests served */
static int dma_calls;

static int coroutine_fn test_dma_rw(void *opaque, uint64_t addr, void *buf,
                                    uint64_t len, bool is_write);

static void test_failed(void *opaque, const Error *err)
{
    failed_calls++;
    g_free(failed_msg);
    failed_msg = g_strdup(error_get_pretty(err));
}

static const VFIOUserProxyOps test_ops = {
    .dma_rw = test_dma_rw,
    .failed = test_failed,
};

static SocketAddress *fd_address(int fd)
{
    SocketAddress *addr = g_new0(SocketAddress, 1);

    addr->type = SOCKET_ADDRESS_TYPE_FD;
    addr->u.fd.str = g_strdup_printf("%d", fd);
    return addr;
}

/* Start @script on one end of a socketpair; the proxy gets the other. */
static void server_start(TestServer *s, TestScript *script, int *client_fd)
{
    int sv[2];

    g_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    s->fd = sv[0];
    s->script = script;
    s->fail = NULL;
    qemu_sem_init(&s->go, 0);
    qemu_thread_create(&s->thread, "test-server", srv_thread, s,
                       QEMU_THREAD_JOINABLE);
    *client_fd = sv[1];
}

static void server_join(TestServer *s)
{
    qemu_thread_join(&s->thread);
    close(s->fd);
    qemu_sem_destroy(&s->go);
    g_assert_cmpstr(s->fail, ==, NULL);
}

/* Connect a proxy to @script through the fd path; @errp NULL: must work. */
static VFIOProxy *connect_to(TestServer *s, TestScript *script,
                             Error **errp)
{
    VFIOProxy *proxy = vfio_user_proxy_new(NULL, &test_ops, s);
    g_autoptr(SocketAddress) addr = NULL;
    int fd;

    server_start(s, script, &fd);
    addr = fd_address(fd);
    if (vfio_user_proxy_connect(proxy, addr, errp ? errp : &error_abort)) {
        g_assert(errp && *errp);
        g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_FAILED);
    } else {
        g_assert_cmpint(vfio_user_proxy_state(proxy), ==,
                        VFIO_PROXY_CONNECTED);
    }
    failed_calls = 0;
    return proxy;
}

static void finish(TestServer *s, VFIOProxy *proxy)
{
    vfio_user_proxy_free(proxy);
    server_join(s);
}

/* A REGION_READ of 4 bytes, with room for the reply. */
typedef union TestRead {
    VFIOUserRegionRW rw;
    uint8_t buf[sizeof(VFIOUserRegionRW) + 4];
} TestRead;

static void read_init(TestRead *r, uint64_t offset)
{
    vfio_user_msg_init(&r->rw.hdr, VFIO_USER_REGION_READ, sizeof(r->rw));
    r->rw.offset = cpu_to_le64(offset);
    r->rw.region = 0;
    r->rw.count = cpu_to_le32(4);
}

static uint32_t read_data(TestRead *r)
{
    uint32_t v;

    g_assert_cmpint(r->rw.hdr.size, ==, sizeof(r->rw) + 4);
    memcpy(&v, r->rw.data, 4);
    return le32_to_cpu(v);
}

/* Server: answer a 4-byte REGION_READ at offset N with N * 3 + 1. */
static void srv_answer_read(TestServer *s)
{
    struct {
        uint64_t offset;
        uint32_t region, count, data;
    } QEMU_PACKED p;
    VFIOUserHdr h = srv_expect(s, VFIO_USER_REGION_READ, &p, 16);

    p.data = cpu_to_le32(le64_to_cpu(p.offset) * 3 + 1);
    srv_reply(s, &h, &p, sizeof(p), NULL, 0);
}

static int do_read(VFIOProxy *proxy, uint64_t offset, uint32_t *val,
                   Error **errp)
{
    TestRead r;
    int ret;

    read_init(&r, offset);
    ret = vfio_user_send_recv(proxy, &r.rw.hdr, NULL, sizeof(r), 0, errp);
    if (!ret) {
        *val = read_data(&r);
    }
    return ret;
}

static void check_read(VFIOProxy *proxy, uint64_t offset)
{
    uint32_t v;

    g_assert_cmpint(do_read(proxy, offset, &v, &error_abort), ==, 0);
    g_assert_cmpint(v, ==, offset * 3 + 1);
}

/* Version negotiation */

typedef struct VersionCase {
    const char *name;
    uint16_t major, minor;
    const char *json;
    /* -1: strlen + NUL; else the exact number of JSON bytes sent */
    int jsonlen;
    /* NULL: accepted */
    const char *error;
} VersionCase;

static const VersionCase version_cases[] = {
    { "good", 0, 1, GOOD_CAPS, -1, NULL },
    { "lower-minor", 0, 0, GOOD_CAPS, -1, NULL },
    { "no-json", 0, 1, "", 0, NULL },
    { "no-caps", 0, 1, "{}", -1, NULL },
    { "short", 0, 1, NULL, -2, "too short" },
    { "no-nul", 0, 1, GOOD_CAPS, sizeof(GOOD_CAPS) - 1, "NUL-terminated" },
    { "inner-nul", 0, 1, "{}\0{}", 6, "NUL-terminated" },
    { "bad-json", 0, 1, "{\"capabilities\":", -1, "JSON" },
    { "not-object", 0, 1, "[1]", -1, "not a JSON object" },
    { "major", 1, 0, GOOD_CAPS, -1, "major version 1" },
    { "minor", 0, 2, GOOD_CAPS, -1, "minor version 2" },
    { "type-fds", 0, 1, "{\"capabilities\":{\"max_msg_fds\":\"8\"}}", -1,
      "not an unsigned integer" },
    { "negative-fds", 0, 1, "{\"capabilities\":{\"max_msg_fds\":-1}}", -1,
      "not an unsigned integer" },
    { "float-xfer", 0, 1,
      "{\"capabilities\":{\"max_data_xfer_size\":1.5}}", -1,
      "not an unsigned integer" },
    { "zero-fds", 0, 1, "{\"capabilities\":{\"max_msg_fds\":0}}", -1,
      "out of range" },
    { "tiny-xfer", 0, 1, "{\"capabilities\":{\"max_data_xfer_size\":4}}",
      -1, "out of range" },
    { "huge-xfer", 0, 1,
      "{\"capabilities\":{\"max_data_xfer_size\":4294967296}}", -1,
      "out of range" },
    { "pgsizes", 0, 1, "{\"capabilities\":{\"pgsizes\":512}}", -1,
      "below 4 KiB" },
    /* Migration: another page size leaves the device unmigratable */
    { "migration", 0, 1,
      "{\"capabilities\":{\"migration\":{\"pgsize\":4096}}}", -1, NULL },
    { "migration-pgsize", 0, 1,
      "{\"capabilities\":{\"migration\":{\"pgsize\":8192}}}", -1, NULL },
    { "migration-type", 0, 1, "{\"capabilities\":{\"migration\":1}}", -1,
      "not an object" },
    { "migration-member", 0, 1,
      "{\"capabilities\":{\"migration\":{\"foo\":1}}}", -1,
      "not proposed" },
    /* Known, not proposed (not implemented): ignored */
    { "write-multiple", 0, 1,
      "{\"capabilities\":{\"write_multiple\":true}}", -1, NULL },
    /* The twin socket: its descriptor must come with the reply */
    { "twin-unsupported", 0, 1,
      "{\"capabilities\":{\"twin_socket\":{\"supported\":false}}}", -1,
      NULL },
    { "twin-no-index", 0, 1,
      "{\"capabilities\":{\"twin_socket\":{\"supported\":true}}}", -1,
      "without an fd_index" },
    { "twin-no-fd", 0, 1, "{\"capabilities\":{\"twin_socket\":"
      "{\"supported\":true,\"fd_index\":0}}}", -1, "but 0 descriptors" },
    { "twin-big-index", 0, 1, "{\"capabilities\":{\"twin_socket\":"
      "{\"supported\":true,\"fd_index\":99}}}", -1, "out of range" },
    { "twin-type", 0, 1, "{\"capabilities\":{\"twin_socket\":"
      "{\"supported\":\"yes\"}}}", -1, "not a boolean" },
    { "twin-member", 0, 1, "{\"capabilities\":{\"twin_socket\":"
      "{\"foo\":1}}}", -1, "not proposed" },
    { "unknown-cap", 0, 1, "{\"capabilities\":{\"foo\":1}}", -1,
      "not proposed" },
    { "unknown-member", 0, 1, "{\"foo\":{}}", -1, "unexpected member" },
    { "caps-type", 0, 1, "{\"capabilities\":[]}", -1, "not an object" },
    { "duplicate", 0, 1,
      "{\"capabilities\":{\"max_msg_fds\":1,\"max_msg_fds\":2}}", -1,
      "duplicate" },
};

static void srv_version_case(TestServer *s)
{
    const VersionCase *c = s->opaque;
    char buf[512];
    size_t len;

    if (c->jsonlen == -2) {
        len = 2;
        memset(buf, 0, len);
    } else {
        len = version_payload(buf, c->major, c->minor, c->json,
                              c->jsonlen < 0 ? strlen(c->json) + 1 :
                              c->jsonlen);
    }
    srv_version_reply(s, buf, len);
    srv_until_eof(s);
}

static void test_version(const void *opaque)
{
    const VersionCase *c = opaque;
    TestServer s = { .opaque = (void *)c };
    Error *err = NULL;
    int fds = test_count_fds(0);
    VFIOProxy *proxy = connect_to(&s, srv_version_case, c->error ? &err :
                                  NULL);

    if (c->error) {
        const char *msg = error_get_pretty(err);

        g_assert(g_str_has_prefix(msg, "vfio-user server fd "));
        if (!strstr(msg, c->error)) {
            g_error("'%s' does not contain '%s'", msg, c->error);
        }
        g_assert_cmpint(failed_calls, ==, 0);
        error_free(err);
    } else {
        const VFIOUserCaps *caps = vfio_user_proxy_caps(proxy);
        bool good = !strcmp(c->json, GOOD_CAPS);

        g_assert_cmpint(caps->major, ==, 0);
        g_assert_cmpint(caps->minor, ==, c->minor);
        g_assert_cmpint(caps->max_send_fds, ==, good ? 8 : 1);
        g_assert_cmpint(caps->max_xfer, ==, good ? 65536 : 1048576);
        g_assert_cmpint(caps->max_dma_maps, ==, good ? 16 : 65535);
        g_assert_cmpint(caps->pgsizes, ==, 4096);
    }
    finish(&s, proxy);
    g_assert_cmpint(test_count_fds(0), ==, fds);
}

/* Connection through a UNIX socket path */

static void srv_negotiate_read(TestServer *s)
{
    srv_negotiate(s);
    srv_answer_read(s);
    srv_until_eof(s);
}

static void *srv_accept_thread(void *opaque)
{
    TestServer *s = opaque;
    int listen_fd = s->fd;

    s->fd = accept(listen_fd, NULL, NULL);
    close(listen_fd);
    SRV_CHECK(s, s->fd >= 0);
    if (s->fd >= 0) {
        srv_negotiate_read(s);
    }
    return NULL;
}

static void test_unix_path(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-user-proxy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "sock", NULL);
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_UNIX,
        .u.q_unix.path = path,
    };
    TestServer s = { 0 };
    VFIOProxy *proxy = vfio_user_proxy_new(NULL, &test_ops, NULL);
    Error *err = NULL;

    /* Nobody listens yet. */
    g_assert_cmpint(vfio_user_proxy_connect(proxy, &addr, &err), <, 0);
    g_assert(strstr(error_get_pretty(err), path));
    g_clear_pointer(&err, error_free);

    s.fd = socket_listen(&addr, 1, &error_abort);
    qemu_sem_init(&s.go, 0);
    qemu_thread_create(&s.thread, "test-server", srv_accept_thread, &s,
                       QEMU_THREAD_JOINABLE);
    g_assert_cmpint(vfio_user_proxy_connect(proxy, &addr, &error_abort), ==,
                    0);
    g_assert_cmpstr(vfio_user_proxy_name(proxy), ==, path);
    check_read(proxy, 5);
    finish(&s, proxy);
    unlink(path);
    rmdir(dir);
}

static void test_fd_not_socket(void)
{
    VFIOProxy *proxy = vfio_user_proxy_new(NULL, &test_ops, NULL);
    g_autoptr(SocketAddress) addr = fd_address(open("/dev/null", O_RDWR));
    SocketAddress inet = { .type = SOCKET_ADDRESS_TYPE_INET };
    Error *err = NULL;

    g_assert_cmpint(vfio_user_proxy_connect(proxy, addr, &err), <, 0);
    g_assert(strstr(error_get_pretty(err), "not a socket"));
    g_clear_pointer(&err, error_free);
    g_assert_cmpint(vfio_user_proxy_connect(proxy, &inet, &err), <, 0);
    g_assert(strstr(error_get_pretty(err), "UNIX socket"));
    error_free(err);
    vfio_user_proxy_free(proxy);
}

/* 64 concurrent requests, replies out of order, each with its own fd */

#define NCONCURRENT 64

typedef struct CoRead {
    VFIOProxy *proxy;
    int i;
    bool done;
} CoRead;

static void coroutine_fn co_read_entry(void *opaque)
{
    CoRead *c = opaque;
    TestRead r;
    int fd = -1;
    VFIOUserFDs fds = { .recv = &fd, .max_recv = 1 };
    uint8_t byte = 0;

    read_init(&r, c->i);
    g_assert_cmpint(vfio_user_co_send_recv(c->proxy, &r.rw.hdr, &fds,
                                           sizeof(r), 0, &error_abort), ==, 0);
    g_assert_cmpint(read_data(&r), ==, c->i * 3 + 1);
    g_assert_cmpint(fds.nrecv, ==, 1);
    g_assert_cmpint(read(fd, &byte, 1), ==, 1);
    g_assert_cmpint(byte, ==, c->i);
    close(fd);
    c->done = true;
}

static void srv_concurrent(TestServer *s)
{
    VFIOUserHdr h[NCONCURRENT];
    uint64_t offset[NCONCURRENT];
    int i;

    srv_negotiate(s);
    for (i = 0; i < NCONCURRENT; i++) {
        struct {
            uint64_t offset;
            uint32_t region, count;
        } QEMU_PACKED p;

        h[i] = srv_expect(s, VFIO_USER_REGION_READ, &p, sizeof(p));
        offset[i] = le64_to_cpu(p.offset);
    }
    for (i = 0; i < NCONCURRENT; i++) {
        /* A permutation: 0, 37, 10, 47, ... */
        int k = (i * 37) % NCONCURRENT;
        struct {
            uint64_t offset;
            uint32_t region, count, data;
        } QEMU_PACKED p = {
            .offset = cpu_to_le64(offset[k]),
            .count = cpu_to_le32(4),
            .data = cpu_to_le32(offset[k] * 3 + 1),
        };
        uint8_t byte = offset[k];
        int pipefd[2];

        SRV_CHECK(s, pipe(pipefd) == 0);
        SRV_CHECK(s, write(pipefd[1], &byte, 1) == 1);
        srv_reply(s, &h[k], &p, sizeof(p), &pipefd[0], 1);
        close(pipefd[0]);
        close(pipefd[1]);
    }
    srv_until_eof(s);
}

static void test_concurrent(void)
{
    TestServer s;
    int fds = test_count_fds(0);
    VFIOProxy *proxy = connect_to(&s, srv_concurrent, NULL);
    CoRead c[NCONCURRENT];
    int i, done;

    for (i = 0; i < NCONCURRENT; i++) {
        c[i] = (CoRead) { .proxy = proxy, .i = i };
        aio_co_enter(ctx, qemu_coroutine_create(co_read_entry, &c[i]));
    }
    do {
        aio_poll(ctx, true);
        for (i = done = 0; i < NCONCURRENT; i++) {
            done += c[i].done;
        }
    } while (done < NCONCURRENT);
    finish(&s, proxy);
    g_assert_cmpint(test_count_fds(0), ==, fds);
}

/* Server requests between a request and its reply */

static bool gate_test;

static void coroutine_fn co_posted_write(void *opaque)
{
    VFIOProxy *proxy = opaque;
    union {
        VFIOUserRegionRW rw;
        uint8_t buf[sizeof(VFIOUserRegionRW) + 4];
    } w;

    vfio_user_msg_init(&w.rw.hdr, VFIO_USER_REGION_WRITE,
                       sizeof(w.rw) + 4);
    w.rw.offset = cpu_to_le64(0x99);
    w.rw.region = 0;
    w.rw.count = cpu_to_le32(4);
    memset(w.rw.data, 0x99, 4);
    g_assert_cmpint(vfio_user_co_send_recv(proxy, &w.rw.hdr, NULL, 0,
                                           VFIO_USER_SEND_NO_REPLY,
                                           &error_abort), ==, 0);
}

static int coroutine_fn test_dma_rw(void *opaque, uint64_t addr, void *buf,
                                    uint64_t len, bool is_write)
{
    TestServer *s = opaque;

    dma_calls++;
    if (addr > sizeof(guest_mem) || len > sizeof(guest_mem) - addr) {
        return -EFAULT;
    }
    if (gate_test && !is_write) {
        /*
         * A request issued while the reply to the server is due: it must
         * go out after the reply.  Let it reach the send lock first.
         */
        gate_test = false;
        aio_co_enter(qemu_get_current_aio_context(),
                     qemu_coroutine_create(co_posted_write, s->opaque));
        aio_co_schedule(qemu_get_current_aio_context(),
                        qemu_coroutine_self());
        qemu_coroutine_yield();
    }
    if (is_write) {
        memcpy(guest_mem + addr, buf, len);
    } else {
        memcpy(buf, guest_mem + addr, len);
    }
    return 0;
}

/* Send a DMA request; the next message must be its reply. */
static void srv_dma(TestServer *s, uint16_t id, bool is_write, uint64_t addr,
                    const uint8_t *data, uint64_t count, int expect_error)
{
    g_autofree VFIOUserDMARW *req = g_malloc0(sizeof(*req) + count);
    g_autofree VFIOUserDMARW *reply = g_malloc0(sizeof(*reply) + count);
    uint64_t len = is_write ? count : 0;
    VFIOUserHdr h;

    req->hdr = (VFIOUserHdr) {
        .id = id, .size = sizeof(*req) + len,
        .command = is_write ? VFIO_USER_DMA_WRITE : VFIO_USER_DMA_READ,
    };
    req->address = cpu_to_le64(addr);
    req->count = cpu_to_le64(count);
    if (is_write) {
        memcpy(req->data, data, count);
    }
    srv_send(s, &req->hdr, &req->address, req->hdr.size - sizeof(h),
             NULL, 0);

    SRV_CHECK(s, srv_recv(s, &h, &reply->address, 16 + count, NULL, NULL));
    SRV_CHECK(s, h.id == id && h.command == req->hdr.command &&
              (h.flags & VFIO_USER_TYPE) == VFIO_USER_REPLY);
    if (expect_error) {
        SRV_CHECK(s, (h.flags & VFIO_USER_ERROR) &&
                  h.error_reply == expect_error && h.size == sizeof(h));
        return;
    }
    SRV_CHECK(s, !(h.flags & VFIO_USER_ERROR));
    SRV_CHECK(s, h.size == sizeof(*reply) + (is_write ? 0 : count));
    SRV_CHECK(s, le64_to_cpu(reply->address) == addr &&
              le64_to_cpu(reply->count) == count);
    if (!is_write) {
        SRV_CHECK(s, !memcmp(reply->data, data, count));
    }
}

static void srv_interleave(TestServer *s)
{
    uint8_t pattern[4096], p2[16];
    struct {
        uint64_t offset;
        uint32_t region, count;
        uint8_t data[4];
    } QEMU_PACKED w;
    VFIOUserHdr h, unknown;
    uint64_t zero = 0;
    int i;

    for (i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i * 7;
    }
    memset(p2, 0x5a, sizeof(p2));
    srv_negotiate(s);

    /* Three rounds: main thread caller, other thread caller, gate. */
    for (i = 0; i < 3; i++) {
        VFIOUserDMARW pw = {
            .hdr = {
                .id = 4, .command = VFIO_USER_DMA_WRITE,
                .flags = VFIO_USER_NO_REPLY, .size = sizeof(pw) + 16,
            },
            .address = cpu_to_le64(0x3000),
            .count = cpu_to_le64(16),
        };
        uint8_t buf[32];

        h = srv_expect(s, VFIO_USER_REGION_WRITE, &w, sizeof(w));
        srv_dma(s, 1, true, 0x1000, pattern, sizeof(pattern), 0);
        srv_dma(s, 2, false, 0x1000, pattern, sizeof(pattern), 0);
        if (i == 2) {
            /* The request the DMA callback issued comes after the reply. */
            VFIOUserHdr p = srv_expect(s, VFIO_USER_REGION_WRITE, &w,
                                       sizeof(w));

            SRV_CHECK(s, p.flags & VFIO_USER_NO_REPLY);
            SRV_CHECK(s, le64_to_cpu(w.offset) == 0x99);
        }
        /* Outside guest memory: the device's error goes back. */
        srv_dma(s, 3, false, sizeof(guest_mem), pattern, 16, EFAULT);
        /* An unknown command: refused, the stream goes on. */
        unknown = (VFIOUserHdr) {
            .id = 77, .command = 99, .size = sizeof(h) + 8,
        };
        srv_send(s, &unknown, &zero, 8, NULL, 0);
        SRV_CHECK(s, srv_recv(s, &unknown, NULL, 0, NULL, NULL));
        SRV_CHECK(s, unknown.id == 77 && unknown.command == 99 &&
                  (unknown.flags & VFIO_USER_ERROR) &&
                  unknown.error_reply == ENOSYS);
        /* A posted DMA write: no reply. */
        memcpy(buf, &pw.address, 16);
        memcpy(buf + 16, p2, 16);
        srv_send(s, &pw.hdr, buf, 32, NULL, 0);
        srv_reply(s, &h, NULL, 0, NULL, 0);
    }
    srv_until_eof(s);
}

typedef struct ThreadCall {
    VFIOProxy *proxy;
    bool done;
} ThreadCall;

static int do_write(VFIOProxy *proxy, unsigned int flags)
{
    union {
        VFIOUserRegionRW rw;
        uint8_t buf[sizeof(VFIOUserRegionRW) + 4];
    } w;

    vfio_user_msg_init(&w.rw.hdr, VFIO_USER_REGION_WRITE,
                       sizeof(w.rw) + 4);
    w.rw.offset = 0;
    w.rw.region = 0;
    w.rw.count = cpu_to_le32(4);
    memset(w.rw.data, 1, 4);
    return vfio_user_send_recv(proxy, &w.rw.hdr, NULL, sizeof(w), flags,
                               &error_abort);
}

static void *thread_write(void *opaque)
{
    ThreadCall *t = opaque;

    g_assert_cmpint(do_write(t->proxy, 0), ==, 0);
    qatomic_set(&t->done, true);
    aio_notify(ctx);
    return NULL;
}

static void test_interleave(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_interleave, NULL);
    ThreadCall t = { .proxy = proxy };
    QemuThread thread;
    uint8_t expect[16];
    int i;

    s.opaque = proxy;
    memset(guest_mem, 0, sizeof(guest_mem));
    memset(expect, 0x5a, sizeof(expect));

    /* Main loop thread: aio_poll() */
    g_assert_cmpint(do_write(proxy, 0), ==, 0);
    for (i = 0; i < 4096; i++) {
        g_assert_cmpint(guest_mem[0x1000 + i], ==, (uint8_t)(i * 7));
    }
    g_assert(!memcmp(guest_mem + 0x3000, expect, 16));

    /* Another thread: semaphore, while this one runs the loop */
    memset(guest_mem, 0, sizeof(guest_mem));
    qemu_thread_create(&thread, "caller", thread_write, &t,
                       QEMU_THREAD_JOINABLE);
    while (!qatomic_read(&t.done)) {
        aio_poll(ctx, true);
    }
    qemu_thread_join(&thread);
    g_assert(!memcmp(guest_mem + 0x3000, expect, 16));

    /* The gate: a request issued while a reply is due waits for it */
    gate_test = true;
    g_assert_cmpint(do_write(proxy, 0), ==, 0);
    g_assert(!gate_test);
    finish(&s, proxy);
    g_assert_cmpint(failed_calls, ==, 0);
}

/*
 * The twin socket: the server passes one end of a socketpair in its
 * VERSION reply; its DMA requests and our replies travel there, the way
 * libvfio-user does it: it answers our read only once it has the answers
 * to its own requests, which a client reading them on the main socket
 * would never send (our read is still unanswered there).
 */
static void srv_twin(TestServer *s)
{
    static const char caps[] = "{\"capabilities\":{\"twin_socket\":"
        "{\"supported\":true,\"fd_index\":0}}}";
    g_autofree char *buf = g_malloc0(4096);
    char payload[256];
    uint8_t pattern[64];
    VFIOUserHdr h = srv_expect(s, VFIO_USER_VERSION, buf, 4095);
    int sv[2], main_fd, i;

    for (i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i ^ 0xa5;
    }
    SRV_CHECK(s, !socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    srv_reply(s, &h, payload, version_payload(payload, 0, 1, caps,
                                              sizeof(caps)), &sv[1], 1);
    close(sv[1]);

    /* Our read waits on the main socket while the server does its DMA */
    h = srv_expect(s, VFIO_USER_REGION_READ, buf, 16);
    main_fd = s->fd;
    s->fd = sv[0];
    srv_dma(s, 7, true, 0x200, pattern, sizeof(pattern), 0);
    srv_dma(s, 8, false, 0x200, pattern, sizeof(pattern), 0);
    s->fd = main_fd;
    stl_le_p(buf + 16, 0x7f1c);
    srv_reply(s, &h, buf, 20, NULL, 0);

    srv_until_eof(s);
    close(sv[0]);
}

static void test_twin(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_twin, NULL);
    uint32_t v = 0;
    int i;

    memset(guest_mem, 0, sizeof(guest_mem));
    g_assert_cmpint(do_read(proxy, 0, &v, &error_abort), ==, 0);
    g_assert_cmphex(v, ==, 0x7f1c);
    for (i = 0; i < 64; i++) {
        g_assert_cmpint(guest_mem[0x200 + i], ==, i ^ 0xa5);
    }
    finish(&s, proxy);
    g_assert_cmpint(failed_calls, ==, 0);
}

/*
 * A server that stops reading its twin socket holds the handler in the
 * write of a reply: when the connection fails (EOF on the main socket),
 * the writer is woken (qio_channel_wake_write()) and the proxy can be
 * freed, which waits for the handler to end.
 */
static QemuSemaphore twin_stuck_freed;

static void srv_twin_stuck(TestServer *s)
{
    static const char caps[] = "{\"capabilities\":{\"twin_socket\":"
        "{\"supported\":true,\"fd_index\":0}}}";
    g_autofree char *buf = g_malloc0(4096);
    char payload[256];
    VFIOUserDMARW req = {
        .hdr = {
            .size = sizeof(req), .command = VFIO_USER_DMA_READ,
        },
        .address = cpu_to_le64(0),
        .count = cpu_to_le64(sizeof(guest_mem)),
    };
    VFIOUserHdr h = srv_expect(s, VFIO_USER_VERSION, buf, 4095);
    int sv[2], main_fd, queued = -1, last, i, small = 4096;

    SRV_CHECK(s, !socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    /* Room for a few replies only, whatever the system's default */
    SRV_CHECK(s, !setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small,
                             sizeof(small)));
    srv_reply(s, &h, payload, version_payload(payload, 0, 1, caps,
                                              sizeof(caps)), &sv[1], 1);
    close(sv[1]);
    srv_expect(s, VFIO_USER_REGION_READ, buf, 16);

    /* More replies than the socket holds, never read */
    main_fd = s->fd;
    s->fd = sv[0];
    for (i = 0; i < 16; i++) {
        req.hdr.id = i;
        srv_send(s, &req.hdr, &req.address, sizeof(req) - sizeof(req.hdr),
                 NULL, 0);
    }
    s->fd = main_fd;
    /* Until the replies stop coming: the handler waits for room */
    do {
        last = queued;
        g_usleep(50 * 1000);
        SRV_CHECK(s, !ioctl(sv[0], FIONREAD, &queued));
    } while (queued != last || queued <= 0);

    /* EOF; the twin stays open, unread, until the proxy is gone */
    shutdown(s->fd, SHUT_WR);
    srv_until_eof(s);
    qemu_sem_wait(&twin_stuck_freed);
    close(sv[0]);
}

static void test_twin_stuck(void)
{
    TestServer s;
    VFIOProxy *proxy;
    Error *err = NULL;
    uint32_t v;

    qemu_sem_init(&twin_stuck_freed, 0);
    proxy = connect_to(&s, srv_twin_stuck, NULL);
    dma_calls = 0;
    g_assert_cmpint(do_read(proxy, 0, &v, &err), ==, -ECONNRESET);
    g_assert(err);
    error_free(err);
    g_assert_cmpint(failed_calls, ==, 1);
    g_assert_cmpint(dma_calls, >, 0);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_FAILED);
    vfio_user_proxy_free(proxy);
    qemu_sem_post(&twin_stuck_freed);
    server_join(&s);
    qemu_sem_destroy(&twin_stuck_freed);
}

/* Posted writes go out in order, before a later read */

static void srv_posted(TestServer *s)
{
    struct {
        uint64_t offset;
        uint32_t region, count;
        uint8_t data[4];
    } QEMU_PACKED w;
    VFIOUserHdr h;
    int i;

    srv_negotiate(s);
    for (i = 0; i < 20; i++) {
        h = srv_expect(s, VFIO_USER_REGION_WRITE, &w, sizeof(w));
        SRV_CHECK(s, h.flags == VFIO_USER_NO_REPLY);
        SRV_CHECK(s, le64_to_cpu(w.offset) == i);
    }
    srv_answer_read(s);
    srv_until_eof(s);
}

static void test_posted(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_posted, NULL);
    int i;

    for (i = 0; i < 20; i++) {
        union {
            VFIOUserRegionRW rw;
            uint8_t buf[sizeof(VFIOUserRegionRW) + 4];
        } w;

        vfio_user_msg_init(&w.rw.hdr, VFIO_USER_REGION_WRITE,
                       sizeof(w.rw) + 4);
        w.rw.offset = cpu_to_le64(i);
        w.rw.region = 0;
        w.rw.count = cpu_to_le32(4);
        g_assert_cmpint(vfio_user_send_recv(proxy, &w.rw.hdr, NULL, 0,
                                            VFIO_USER_SEND_NO_REPLY,
                                            &error_abort), ==, 0);
    }
    check_read(proxy, 3);
    finish(&s, proxy);
}

/* Descriptors sent with requests; the server's limits */

static void srv_send_fds(TestServer *s)
{
    static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":8,"
        "\"max_data_xfer_size\":64}}";
    VFIOUserHdr h;
    char buf[512];
    int fds[16];
    size_t nfds, i;

    srv_version_reply(s, buf, version_payload(buf, 0, 1, caps,
                                              sizeof(caps)));
    /* The refused messages never arrive: the next one is this. */
    SRV_CHECK(s, srv_recv(s, &h, buf, sizeof(buf), fds, &nfds));
    SRV_CHECK(s, h.command == VFIO_USER_DEVICE_SET_IRQS && nfds == 8);
    for (i = 0; i < nfds; i++) {
        struct stat st;

        SRV_CHECK(s, fstat(fds[i], &st) == 0);
        close(fds[i]);
    }
    srv_reply(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void test_send_fds(void)
{
    TestServer s;
    int before = test_count_fds(0);
    VFIOProxy *proxy = connect_to(&s, srv_send_fds, NULL);
    struct {
        VFIOUserIRQSet set;
        uint8_t pad[64];
    } m;
    union {
        VFIOUserRegionRW rw;
        uint8_t buf[sizeof(VFIOUserRegionRW) + 65];
    } w = { };
    int efds[9];
    VFIOUserFDs fds = { .send = efds, .nsend = 9 };
    Error *err = NULL;
    int i;

    for (i = 0; i < 9; i++) {
        efds[i] = eventfd(0, EFD_CLOEXEC);
    }
    /* More descriptors than the server takes */
    vfio_user_msg_init(&m.set.hdr, VFIO_USER_DEVICE_SET_IRQS, sizeof(m.set));
    g_assert_cmpint(vfio_user_send_recv(proxy, &m.set.hdr, &fds, sizeof(m),
                                        0, &err), ==, -E2BIG);
    error_free(err);
    err = NULL;
    /* A REGION_WRITE with more data than max_data_xfer_size */
    vfio_user_msg_init(&w.rw.hdr, VFIO_USER_REGION_WRITE, sizeof(w));
    w.rw.count = cpu_to_le32(65);
    g_assert_cmpint(vfio_user_send_recv(proxy, &w.rw.hdr, NULL, sizeof(w),
                                        0, &err), ==, -E2BIG);
    error_free(err);
    fds.nsend = 8;
    vfio_user_msg_init(&m.set.hdr, VFIO_USER_DEVICE_SET_IRQS, sizeof(m.set));
    g_assert_cmpint(vfio_user_send_recv(proxy, &m.set.hdr, &fds, sizeof(m),
                                        0, &error_abort), ==, 0);
    for (i = 0; i < 9; i++) {
        close(efds[i]);
    }
    finish(&s, proxy);
    g_assert_cmpint(test_count_fds(0), ==, before);
}

/* Bad messages from the server */

typedef struct BadCase {
    const char *name;
    TestScript *script;
    /* the error of the pending request */
    const char *error;
    /* the proxy fails (else the next request works) */
    bool fatal;
    /* the request's return value; 0: any negative errno */
    int ret;
} BadCase;

/* Read the pending request; returns its header. */
static VFIOUserHdr srv_bad_start(TestServer *s)
{
    uint8_t p[16];

    srv_negotiate(s);
    return srv_expect(s, VFIO_USER_REGION_READ, p, sizeof(p));
}

static void srv_bad_size(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = VFIO_USER_REPLY;
    h.size = 0x7ffffff0;
    srv_send(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void srv_small_size(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = VFIO_USER_REPLY;
    h.size = 8;
    srv_send(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void srv_bad_type(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = 3;
    h.size = sizeof(h);
    srv_send(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void srv_bad_flags(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = VFIO_USER_REPLY | 0x100;
    h.size = sizeof(h);
    srv_send(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void srv_truncated(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);
    uint8_t p[10] = { 0 };

    h.flags = VFIO_USER_REPLY;
    h.size = sizeof(h) + 20;
    srv_send(s, &h, p, sizeof(p), NULL, 0);
    shutdown(s->fd, SHUT_RDWR);
}

static void srv_eof(TestServer *s)
{
    srv_bad_start(s);
    shutdown(s->fd, SHUT_RDWR);
}

/* Then serve one more read: the stream is still in sync. */
static void srv_bad_then_good(TestServer *s, VFIOUserHdr *h,
                              const void *p, size_t len,
                              const int *fds, size_t nfds)
{
    srv_send(s, h, p, len, fds, nfds);
    srv_answer_read(s);
    srv_until_eof(s);
}

static void srv_unexpected_fds(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);
    uint8_t p[20] = { 0 };
    int pipefd[2];

    SRV_CHECK(s, pipe(pipefd) == 0);
    h.flags = VFIO_USER_REPLY;
    h.size = sizeof(h) + sizeof(p);
    srv_bad_then_good(s, &h, p, sizeof(p), pipefd, 2);
    close(pipefd[0]);
    close(pipefd[1]);
}

static void srv_wrong_command(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);
    uint8_t p[20] = { 0 };

    h.flags = VFIO_USER_REPLY;
    h.command = 999;
    h.size = sizeof(h) + sizeof(p);
    srv_bad_then_good(s, &h, p, sizeof(p), NULL, 0);
}

static void srv_too_long(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);
    uint8_t p[4096] = { 0 };

    h.flags = VFIO_USER_REPLY;
    h.size = sizeof(h) + sizeof(p);
    srv_bad_then_good(s, &h, p, sizeof(p), NULL, 0);
}

static void srv_error_reply(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = VFIO_USER_REPLY | VFIO_USER_ERROR;
    h.error_reply = EPERM;
    h.size = sizeof(h);
    srv_bad_then_good(s, &h, NULL, 0, NULL, 0);
}

static void srv_unknown_id(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s), stray = h;
    uint8_t p[20] = { 0 };
    int pipefd[2];

    /* A reply for nobody, with descriptors: dropped and closed. */
    SRV_CHECK(s, pipe(pipefd) == 0);
    stray.id = h.id + 1000;
    stray.flags = VFIO_USER_REPLY;
    stray.size = sizeof(h) + sizeof(p);
    srv_send(s, &stray, p, sizeof(p), pipefd, 2);
    close(pipefd[0]);
    close(pipefd[1]);
    h.flags = VFIO_USER_REPLY | VFIO_USER_ERROR;
    h.error_reply = EIO;
    h.size = sizeof(h);
    srv_bad_then_good(s, &h, NULL, 0, NULL, 0);
}

static void srv_request_fds(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s), r;
    VFIOUserDMARW req = {
        .hdr = {
            .id = 9, .command = VFIO_USER_DMA_READ, .size = sizeof(req),
        },
        .count = cpu_to_le64(8),
    };
    int pipefd[2];

    /* A DMA request with descriptors: refused, descriptors closed. */
    SRV_CHECK(s, pipe(pipefd) == 0);
    srv_send(s, &req.hdr, &req.address, 16, pipefd, 2);
    close(pipefd[0]);
    close(pipefd[1]);
    SRV_CHECK(s, srv_recv(s, &r, NULL, 0, NULL, NULL));
    SRV_CHECK(s, r.id == 9 && (r.flags & VFIO_USER_ERROR) &&
              r.error_reply == EINVAL);
    /* A DMA write whose size disagrees with its count. */
    req.hdr.command = VFIO_USER_DMA_WRITE;
    srv_send(s, &req.hdr, &req.address, 16, NULL, 0);
    SRV_CHECK(s, srv_recv(s, &r, NULL, 0, NULL, NULL));
    SRV_CHECK(s, r.id == 9 && (r.flags & VFIO_USER_ERROR) &&
              r.error_reply == EINVAL);
    h.flags = VFIO_USER_REPLY | VFIO_USER_ERROR;
    h.error_reply = EIO;
    h.size = sizeof(h);
    srv_bad_then_good(s, &h, NULL, 0, NULL, 0);
}

/* An errno no errno has: still a failure (-EIO), never a success. */
static void srv_huge_errno(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);

    h.flags = VFIO_USER_REPLY | VFIO_USER_ERROR;
    h.error_reply = 0x80000001;
    h.size = sizeof(h);
    srv_bad_then_good(s, &h, NULL, 0, NULL, 0);
}

/* A request far larger than the max_data_xfer_size we proposed. */
static void srv_huge_request(TestServer *s)
{
    srv_bad_start(s);
    VFIOUserHdr req = {
        .id = 5, .command = VFIO_USER_DMA_WRITE, .size = 0xfffffff0,
    };
    uint8_t p[16] = { 0 };

    srv_send(s, &req, p, sizeof(p), NULL, 0);
    srv_until_eof(s);
}

static const BadCase bad_cases[] = {
    { "oversized", srv_bad_size, "invalid size", true },
    { "undersized", srv_small_size, "invalid size", true },
    { "wrong-type", srv_bad_type, "unknown type", true },
    { "unknown-flags", srv_bad_flags, "unknown flags", true },
    { "truncated", srv_truncated, "connection closed in a message", true },
    { "eof", srv_eof, "connection closed", true },
    { "unexpected-fds", srv_unexpected_fds, "unexpected file descriptors",
      false },
    { "unknown-command", srv_wrong_command, "is for unknown", false },
    { "too-long", srv_too_long, "exceeds the", false },
    { "error-reply", srv_error_reply, "REGION_READ failed", false },
    { "unknown-id", srv_unknown_id, "REGION_READ failed", false },
    { "request-fds", srv_request_fds, "REGION_READ failed", false },
    { "huge-errno", srv_huge_errno, "REGION_READ failed", false, -EIO },
    { "huge-request", srv_huge_request, "exceeds our max_data_xfer_size",
      true },
};

static void test_bad(const void *opaque)
{
    const BadCase *c = opaque;
    TestServer s;
    int fds = test_count_fds(0);
    VFIOProxy *proxy = connect_to(&s, c->script, NULL);
    Error *err = NULL;
    uint32_t v;
    int ret;

    ret = do_read(proxy, 7, &v, &err);
    g_assert_cmpint(ret, <, 0);
    if (c->ret) {
        g_assert_cmpint(ret, ==, c->ret);
    }
    if (!strstr(error_get_pretty(err), c->error)) {
        g_error("'%s' does not contain '%s'", error_get_pretty(err),
                c->error);
    }
    g_assert(g_str_has_prefix(error_get_pretty(err), "vfio-user server"));
    g_clear_pointer(&err, error_free);
    if (c->fatal) {
        g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_FAILED);
        g_assert_cmpint(failed_calls, ==, 1);
        /* Later sends fail at once. */
        g_assert_cmpint(do_read(proxy, 7, &v, &err), ==, -ENOTCONN);
        error_free(err);
    } else {
        check_read(proxy, 8);
        g_assert_cmpint(failed_calls, ==, 0);
    }
    finish(&s, proxy);
    g_assert_cmpint(test_count_fds(0), ==, fds);
}

/* Disconnect with 16 waiters */

#define NWAITERS 16

static int64_t disconnect_time;

static void srv_disconnect(TestServer *s)
{
    uint8_t p[16];
    int i;

    srv_negotiate(s);
    for (i = 0; i < NWAITERS; i++) {
        srv_expect(s, VFIO_USER_REGION_READ, p, sizeof(p));
    }
    qatomic_set(&disconnect_time, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    shutdown(s->fd, SHUT_RDWR);
}

typedef struct CoFail {
    VFIOProxy *proxy;
    int ret;
    bool done;
} CoFail;

static void coroutine_fn co_fail_entry(void *opaque)
{
    CoFail *c = opaque;
    Error *err = NULL;
    TestRead r;

    read_init(&r, 1);
    c->ret = vfio_user_co_send_recv(c->proxy, &r.rw.hdr, NULL, sizeof(r), 0,
                                    &err);
    g_assert(err);
    error_free(err);
    c->done = true;
}

static void test_disconnect(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_disconnect, NULL);
    CoFail c[NWAITERS];
    int i, done;
    int64_t elapsed;
    uint32_t v;
    Error *err = NULL;

    for (i = 0; i < NWAITERS; i++) {
        c[i] = (CoFail) { .proxy = proxy };
        aio_co_enter(ctx, qemu_coroutine_create(co_fail_entry, &c[i]));
    }
    do {
        aio_poll(ctx, true);
        for (i = done = 0; i < NWAITERS; i++) {
            done += c[i].done;
        }
    } while (done < NWAITERS);
    elapsed = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) -
              qatomic_read(&disconnect_time);
    g_assert_cmpint(elapsed, <, 100 * SCALE_MS);
    for (i = 0; i < NWAITERS; i++) {
        g_assert_cmpint(c[i].ret, ==, -ECONNRESET);
    }
    g_assert_cmpint(failed_calls, ==, 1);
    g_assert(strstr(failed_msg, "connection closed"));
    g_assert_cmpint(do_read(proxy, 1, &v, &err), ==, -ENOTCONN);
    error_free(err);
    finish(&s, proxy);
}

/* Timeouts */

static void srv_late(TestServer *s)
{
    VFIOUserHdr h = srv_bad_start(s);
    struct {
        uint64_t offset;
        uint32_t region, count, data;
    } QEMU_PACKED p = { .data = cpu_to_le32(0xdead) };

    /* Answer once the client gave up. */
    qemu_sem_wait(&s->go);
    srv_reply(s, &h, &p, sizeof(p), NULL, 0);
    srv_answer_read(s);
    srv_until_eof(s);
}

static void test_timeout_late_reply(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_late, NULL);
    Error *err = NULL;
    uint32_t v;

    vfio_user_proxy_set_timeout(proxy, 50);
    g_assert_cmpint(do_read(proxy, 7, &v, &err), ==, -ETIMEDOUT);
    g_assert(strstr(error_get_pretty(err), "no reply to REGION_READ"));
    error_free(err);
    qemu_sem_post(&s.go);
    /* The late reply is dropped; this one gets its own. */
    check_read(proxy, 9);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_CONNECTED);
    finish(&s, proxy);
}

static void srv_silent(TestServer *s)
{
    uint8_t p[16];

    srv_bad_start(s);
    srv_expect(s, VFIO_USER_REGION_READ, p, sizeof(p));
    srv_until_eof(s);
}

static void test_timeout_dead(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_silent, NULL);
    Error *err = NULL;
    uint32_t v;

    vfio_user_proxy_set_timeout(proxy, 20);
    g_assert_cmpint(do_read(proxy, 1, &v, &err), ==, -ETIMEDOUT);
    g_clear_pointer(&err, error_free);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_CONNECTED);
    /* A second strike while the first is unanswered: the server is dead */
    g_assert_cmpint(do_read(proxy, 2, &v, &err), ==, -ECONNRESET);
    g_assert(strstr(error_get_pretty(err), "not responding"));
    error_free(err);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_FAILED);
    g_assert_cmpint(failed_calls, ==, 1);
    finish(&s, proxy);
}

/*
 * A server's max_data_xfer_size limits the data of transfers, not the
 * fixed part of other messages: with the smallest one (8), a 48-byte
 * DMA_MAP goes through and a REGION_WRITE of 16 bytes is refused.
 */
static void srv_small_xfer(TestServer *s)
{
    static const char json[] = "{\"capabilities\":{\"max_data_xfer_size\":8}}";
    uint8_t p[64];
    char buf[128];
    VFIOUserHdr h;

    srv_version_reply(s, buf, version_payload(buf, 0, 1, json,
                                              sizeof(json)));
    h = srv_expect(s, VFIO_USER_DMA_MAP, p, sizeof(p));
    srv_reply(s, &h, NULL, 0, NULL, 0);
    srv_until_eof(s);
}

static void test_small_xfer(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_small_xfer, NULL);
    VFIOUserDMAMap map = { };
    union {
        VFIOUserRegionRW rw;
        uint8_t buf[sizeof(VFIOUserRegionRW) + 16];
    } w = { };
    Error *err = NULL;

    g_assert_cmpint(vfio_user_proxy_caps(proxy)->max_xfer, ==, 8);
    vfio_user_msg_init(&map.hdr, VFIO_USER_DMA_MAP, sizeof(map));
    g_assert_cmpint(vfio_user_send_recv(proxy, &map.hdr, NULL, sizeof(map),
                                        0, &error_abort), ==, 0);
    vfio_user_msg_init(&w.rw.hdr, VFIO_USER_REGION_WRITE, sizeof(w));
    w.rw.count = cpu_to_le32(16);
    g_assert_cmpint(vfio_user_send_recv(proxy, &w.rw.hdr, NULL, sizeof(w),
                                        0, &err), ==, -E2BIG);
    g_assert(strstr(error_get_pretty(err), "max_data_xfer_size"));
    error_free(err);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_CONNECTED);
    finish(&s, proxy);
}

/*
 * A burst of server requests, sent back to back while nothing of ours is
 * outstanding: every one is answered, in order, and correctly; the
 * client reads no faster than it serves (back-pressure), and the
 * connection goes on.
 */
#define BURST 10000

static void *srv_burst_sender(void *opaque)
{
    TestServer *s = opaque;
    VFIOUserDMARW req = {
        .hdr = { .command = VFIO_USER_DMA_READ, .size = sizeof(req) },
        .count = cpu_to_le64(4),
    };
    int i;

    for (i = 0; i < BURST; i++) {
        req.hdr.id = i;
        req.address = cpu_to_le64((i % 1024) * 4);
        srv_send(s, &req.hdr, &req.address, 16, NULL, 0);
    }
    return NULL;
}

static void srv_burst(TestServer *s)
{
    uint8_t p[32];
    QemuThread sender;
    VFIOUserHdr h;
    int i;

    srv_negotiate(s);
    /* Wait until the client is idle, then burst. */
    qemu_sem_wait(&s->go);
    qemu_thread_create(&sender, "burst", srv_burst_sender, s,
                       QEMU_THREAD_JOINABLE);
    for (i = 0; i < BURST; i++) {
        uint32_t want = cpu_to_le32((i % 1024) * 0x01010101u);

        SRV_CHECK(s, srv_recv(s, &h, p, sizeof(p), NULL, NULL));
        SRV_CHECK(s, h.id == i && h.command == VFIO_USER_DMA_READ &&
                  h.flags == VFIO_USER_REPLY && h.size == 16 + 20 &&
                  !memcmp(p + 16, &want, 4));
        if (s->fail) {
            break;
        }
    }
    qemu_thread_join(&sender);
    srv_answer_read(s);
    srv_until_eof(s);
}

static void test_burst(void)
{
    TestServer s;
    VFIOProxy *proxy = connect_to(&s, srv_burst, NULL);
    int i;

    for (i = 0; i < 1024; i++) {
        uint32_t v = cpu_to_le32(i * 0x01010101u);

        memcpy(guest_mem + i * 4, &v, 4);
    }
    dma_calls = 0;
    qemu_sem_post(&s.go);
    while (dma_calls < BURST) {
        aio_poll(ctx, true);
    }
    check_read(proxy, 12);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_CONNECTED);
    g_assert_cmpint(failed_calls, ==, 0);
    finish(&s, proxy);
}

/* A failed proxy takes a new channel */

static void test_reconnect(void)
{
    TestServer s, s2;
    VFIOProxy *proxy = connect_to(&s, srv_eof, NULL);
    g_autoptr(QIOChannelSocket) sioc = NULL;
    Error *err = NULL;
    uint32_t v;
    int fd;

    g_assert_cmpint(do_read(proxy, 1, &v, &err), <, 0);
    g_clear_pointer(&err, error_free);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_FAILED);
    server_join(&s);

    server_start(&s2, srv_negotiate_read, &fd);
    sioc = qio_channel_socket_new_fd(fd, &error_abort);
    g_assert_cmpint(vfio_user_proxy_attach(proxy, sioc, "second",
                                           &error_abort), ==, 0);
    g_assert_cmpint(vfio_user_proxy_state(proxy), ==, VFIO_PROXY_CONNECTED);
    check_read(proxy, 4);
    finish(&s2, proxy);
}

int main(int argc, char **argv)
{
    size_t i;

    signal(SIGPIPE, SIG_IGN);
    g_test_init(&argc, &argv, NULL);
    module_call_init(MODULE_INIT_QOM);
    /* TEST_TRACE=vfio_user_* shows the messages. */
    module_call_init(MODULE_INIT_TRACE);
    if (g_getenv("TEST_TRACE")) {
        trace_enable_events(g_getenv("TEST_TRACE"));
        qemu_set_log(LOG_TRACE, &error_abort);
    }
    qemu_init_main_loop(&error_abort);
    ctx = qemu_get_aio_context();

    for (i = 0; i < ARRAY_SIZE(version_cases); i++) {
        g_autofree char *path = g_strdup_printf("/vfio-user-proxy/version/%s",
                                                version_cases[i].name);

        g_test_add_data_func(path, &version_cases[i], test_version);
    }
    g_test_add_func("/vfio-user-proxy/connect/unix-path", test_unix_path);
    g_test_add_func("/vfio-user-proxy/connect/fd-not-socket",
                    test_fd_not_socket);
    g_test_add_func("/vfio-user-proxy/concurrent", test_concurrent);
    g_test_add_func("/vfio-user-proxy/interleave", test_interleave);
    g_test_add_func("/vfio-user-proxy/twin", test_twin);
    g_test_add_func("/vfio-user-proxy/twin-stuck", test_twin_stuck);
    g_test_add_func("/vfio-user-proxy/posted", test_posted);
    g_test_add_func("/vfio-user-proxy/send-fds", test_send_fds);
    for (i = 0; i < ARRAY_SIZE(bad_cases); i++) {
        g_autofree char *path = g_strdup_printf("/vfio-user-proxy/bad/%s",
                                                bad_cases[i].name);

        g_test_add_data_func(path, &bad_cases[i], test_bad);
    }
    g_test_add_func("/vfio-user-proxy/disconnect", test_disconnect);
    g_test_add_func("/vfio-user-proxy/timeout/late-reply",
                    test_timeout_late_reply);
    g_test_add_func("/vfio-user-proxy/timeout/dead", test_timeout_dead);
    g_test_add_func("/vfio-user-proxy/reconnect", test_reconnect);
    g_test_add_func("/vfio-user-proxy/small-xfer", test_small_xfer);
    g_test_add_func("/vfio-user-proxy/burst", test_burst);
    return g_test_run();
}
