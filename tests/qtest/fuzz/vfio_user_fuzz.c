/*
 * Fuzz target: vfio-user-pci against a server whose every byte is the
 * fuzzer's
 *
 * Each input is a server's side of one conversation: what it sends, whole,
 * and the file descriptors it passes along.  The stream is written to one
 * end of a socketpair before the device exists (then that end stops
 * sending, so every wait of the client ends at the end of the stream); the
 * other end is the device's socket (socket=fd:N).  The device is realized
 * (VERSION, DEVICE_GET_INFO, region and IRQ info with their capability
 * chains and descriptors, config space, DMA maps of the guest's RAM,
 * INTx), the guest sizes and places its BARs, enables it, reads and
 * writes each BAR, enables and disables MSI-X or MSI, migration's
 * requests are made (device state, data, DMA logging), the device is
 * reset (DEVICE_RESET) and unplugged.  The server's
 * requests in the stream (DMA_READ/DMA_WRITE) are served by the device's
 * container against the guest's RAM, through its map table.  The client
 * must not crash, leak, touch memory outside its buffers or hang.
 *
 * Input: byte 0 is the number N (modulo 9) of descriptors; N records of
 * 5 bytes follow (a little-endian 32-bit offset into the stream, modulo
 * its length, and a kind: see fuzz_fd_new()); the rest is the stream.  A
 * descriptor is sent with the stream's byte at its offset.
 *
 * With VFIO_USER_FUZZ_RECORD=SOCKET:FILE the target instead relays the
 * device to the real server listening on SOCKET and writes what it sent,
 * in the input format, to FILE: a seed made from a real conversation.
 *
 *   qemu-fuzz-x86_64 --fuzz-target=vfio-user-pci-fuzz CORPUS
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include "qobject/qdict.h"
#include "monitor/qdev.h"
#include "hw/qdev-core.h"
#include "qom/object.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "block/aio.h"
#include "qemu/thread.h"
#include "hw/vfio-user/pci.h"
#include "tests/qtest/libqtest.h"
#include "tests/vfio-user/count-fds.h"
#include "fuzz.h"

#define MAX_FDS         8
#define FD_RECORD_SIZE  5
/* The stream is cut here; the socket buffers hold it whole */
#define MAX_STREAM      (128 * 1024)
#define RAM_SIZE        (16 * MiB)

/* The device: bus 0, slot 4 */
#define DEVFN           (4 << 3)
#define BAR_MEM_BASE    0xe0000000u
#define BAR_MEM_STRIDE  0x01000000u
#define BAR_IO_BASE     0xc000u
#define BAR_IO_STRIDE   0x100u

typedef struct FuzzFd {
    uint32_t offset;
    uint8_t kind;
} FuzzFd;

/*
 * A descriptor of @kind: bits 0-1 its type (an eventfd; a memfd of
 * 4 KiB << bits 2-5; a socket whose peer stays open in *@peer; a pipe),
 * like those real servers pass: interrupt and ioeventfd eventfds, region
 * and shadow memory, the twin socket.
 */
static int fuzz_fd_new(uint8_t kind, int *peer)
{
    int sv[2], fd;

    switch (kind & 3) {
    case 0:
        return eventfd(0, 0);
    case 1:
        fd = memfd_create("vfio-user-fuzz", 0);
        if (fd >= 0 && ftruncate(fd, 4096ull << ((kind >> 2) & 15))) {
            close(fd);
            fd = -1;
        }
        return fd;
    case 2:
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
            return -1;
        }
        *peer = sv[1];
        return sv[0];
    default:
        if (pipe(sv)) {
            return -1;
        }
        close(sv[1]);
        return sv[0];
    }
}

/* Send @len bytes of @buf on @sock, the descriptors @fds with the first */
static void fuzz_send(int sock, const uint8_t *buf, size_t len,
                      const int *fds, unsigned int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;
    ssize_t n;

    if (nfds) {
        memset(&control, 0, sizeof(control));
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    while (iov.iov_len) {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            /* A stream cut short would make the input replay differently */
            fprintf(stderr, "vfio-user-pci-fuzz: sendmsg: %s\n",
                    n < 0 ? strerror(errno) : "nothing sent");
            abort();
        }
        iov.iov_base = (uint8_t *)iov.iov_base + n;
        iov.iov_len -= n;
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
    }
}

static int fuzz_fd_cmp(const void *a, const void *b)
{
    const FuzzFd *x = a, *y = b;

    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Write the input's stream and descriptors to @sock; returns the peers */
static void fuzz_feed(int sock, const uint8_t *data, size_t size,
                      int *peers, unsigned int *npeers)
{
    FuzzFd fds[MAX_FDS];
    unsigned int n = 0, i, j;
    size_t pos = 0;

    if (size) {
        n = MIN(data[0] % (MAX_FDS + 1), (size - 1) / FD_RECORD_SIZE);
        for (i = 0; i < n; i++) {
            const uint8_t *r = data + 1 + i * FD_RECORD_SIZE;

            fds[i].offset = ldl_le_p(r);
            fds[i].kind = r[4];
        }
        data += 1 + n * FD_RECORD_SIZE;
        size -= 1 + n * FD_RECORD_SIZE;
    }
    size = MIN(size, MAX_STREAM);
    if (!size) {
        return;
    }
    for (i = 0; i < n; i++) {
        fds[i].offset %= size;
    }
    qsort(fds, n, sizeof(fds[0]), fuzz_fd_cmp);

    *npeers = 0;
    for (i = 0; i < n; i = j) {
        int send[MAX_FDS];
        unsigned int nsend = 0;

        fuzz_send(sock, data + pos, fds[i].offset - pos, NULL, 0);
        pos = fds[i].offset;
        for (j = i; j < n && fds[j].offset == fds[i].offset; j++) {
            int peer = -1;
            int fd = fuzz_fd_new(fds[j].kind, &peer);

            if (fd >= 0) {
                send[nsend++] = fd;
            }
            if (peer >= 0) {
                peers[(*npeers)++] = peer;
            }
        }
        /* One byte carries them: a stream socket delivers them with it */
        fuzz_send(sock, data + pos, 1, send, nsend);
        pos++;
        while (nsend) {
            close(send[--nsend]);
        }
    }
    fuzz_send(sock, data + pos, size - pos, NULL, 0);
}

/* -- recording a real server (VFIO_USER_FUZZ_RECORD) ---------------------- */

typedef struct Relay {
    int client;             /* our end of the device's socketpair */
    int server;             /* connected to the real server */
    GByteArray *stream;     /* what the server sent */
    GArray *fds;            /* FuzzFd, where it sent descriptors */
} Relay;

/* The kind of a descriptor a server sent (fuzz_fd_new()'s) */
static uint8_t fuzz_fd_kind(int fd)
{
    struct stat st;
    char path[64], target[64] = "";
    uint8_t shift = 0;

    if (fstat(fd, &st)) {
        return 3;
    }
    if (S_ISSOCK(st.st_mode)) {
        return 2;
    }
    if (S_ISREG(st.st_mode)) {
        while (shift < 15 && (4096ull << shift) < (uint64_t)st.st_size) {
            shift++;
        }
        return 1 | shift << 2;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (readlink(path, target, sizeof(target) - 1) > 0 &&
        strstr(target, "eventfd")) {
        return 0;
    }
    return 3;
}

/* Move one message's bytes and descriptors from @from to @to */
static ssize_t relay_one(int from, int to, Relay *r)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } control;
    uint8_t buf[65536];
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cmsg;
    int fds[64];
    unsigned int nfds = 0, i;
    ssize_t n;

    n = recvmsg(from, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
        return n;
    }
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            unsigned int k = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            memcpy(fds + nfds, CMSG_DATA(cmsg), k * sizeof(int));
            nfds += k;
        }
    }
    if (r) {
        for (i = 0; i < nfds; i++) {
            FuzzFd f = { r->stream->len, fuzz_fd_kind(fds[i]) };

            if (r->fds->len < MAX_FDS) {
                g_array_append_val(r->fds, f);
            }
        }
        g_byte_array_append(r->stream, buf, n);
    }
    fuzz_send(to, buf, n, fds, MIN(nfds, MAX_FDS));
    for (i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    return n;
}

static void *relay_thread(void *opaque)
{
    Relay *r = opaque;

    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = r->client, .events = POLLIN },
            { .fd = r->server, .events = POLLIN },
        };

        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            break;
        }
        if (pfd[0].revents && relay_one(r->client, r->server, NULL) <= 0) {
            break;
        }
        if (pfd[1].revents && relay_one(r->server, r->client, r) <= 0) {
            break;
        }
    }
    return NULL;
}

static int relay_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    g_assert(fd >= 0 && strlen(path) < sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        fprintf(stderr, "vfio-user-pci-fuzz: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static void relay_save(Relay *r, const char *file)
{
    GByteArray *out = g_byte_array_new();
    uint8_t n = r->fds->len;
    unsigned int i;

    g_byte_array_append(out, &n, 1);
    for (i = 0; i < n; i++) {
        FuzzFd *f = &g_array_index(r->fds, FuzzFd, i);
        uint8_t rec[FD_RECORD_SIZE];

        stl_le_p(rec, f->offset);
        rec[4] = f->kind;
        g_byte_array_append(out, rec, sizeof(rec));
    }
    g_byte_array_append(out, r->stream->data, r->stream->len);
    g_assert(g_file_set_contents(file, (char *)out->data, out->len, NULL));
    g_byte_array_free(out, true);
}

/* -- the guest's side ------------------------------------------------------ */

static uint32_t cfg_read(QTestState *s, uint8_t off, int size)
{
    qtest_outl(s, 0xcf8, 0x80000000u | DEVFN << 8 | (off & ~3));
    switch (size) {
    case 1:
        return qtest_inb(s, 0xcfc + (off & 3));
    case 2:
        return qtest_inw(s, 0xcfc + (off & 2));
    default:
        return qtest_inl(s, 0xcfc);
    }
}

static void cfg_write(QTestState *s, uint8_t off, int size, uint32_t val)
{
    qtest_outl(s, 0xcf8, 0x80000000u | DEVFN << 8 | (off & ~3));
    switch (size) {
    case 1:
        qtest_outb(s, 0xcfc + (off & 3), val);
        break;
    case 2:
        qtest_outw(s, 0xcfc + (off & 2), val);
        break;
    default:
        qtest_outl(s, 0xcfc, val);
    }
}

/* The offset of capability @id in the device's list, or 0 */
static uint8_t cfg_find_cap(QTestState *s, uint8_t id)
{
    uint8_t pos;
    int n = 48;

    if (!(cfg_read(s, 0x06, 2) & 0x10)) {
        return 0;
    }
    for (pos = cfg_read(s, 0x34, 1) & ~3; pos && n--;
         pos = cfg_read(s, pos + 1, 1) & ~3) {
        if (cfg_read(s, pos, 1) == id) {
            return pos;
        }
    }
    return 0;
}

/* What a guest's driver does with a new device, in a few steps */
static void fuzz_guest(QTestState *s)
{
    uint64_t bar[6] = { 0 };
    uint8_t cap;
    int i;

    for (i = 0; i < 256; i += 4) {
        cfg_read(s, i, 4);
    }
    for (i = 0; i < 6; i++) {
        uint8_t off = 0x10 + i * 4;
        uint32_t old = cfg_read(s, off, 4);

        cfg_write(s, off, 4, 0xffffffff);
        if (!cfg_read(s, off, 4)) {
            continue;
        }
        if (old & 1) {
            bar[i] = BAR_IO_BASE + i * BAR_IO_STRIDE;
            cfg_write(s, off, 4, bar[i] | 1);
        } else {
            bar[i] = BAR_MEM_BASE + i * BAR_MEM_STRIDE;
            cfg_write(s, off, 4, bar[i]);
            if ((old & 6) == 4 && i < 5) {
                cfg_write(s, off + 4, 4, 0);
                i++;
            }
        }
    }
    cfg_write(s, 0x04, 2, 0x0007);
    for (i = 0; i < 6; i++) {
        if (!bar[i]) {
            continue;
        }
        if (bar[i] < BAR_MEM_BASE) {
            qtest_inl(s, bar[i]);
            qtest_outl(s, bar[i] + 4, 0x12345678);
            qtest_inb(s, bar[i] + 1);
        } else {
            qtest_readl(s, bar[i]);
            qtest_writel(s, bar[i] + 4, 0x12345678);
            qtest_writeq(s, bar[i] + 8, 0x0123456789abcdefull);
            qtest_readb(s, bar[i] + 1);
        }
    }
    cap = cfg_find_cap(s, 0x11);            /* MSI-X */
    if (cap) {
        cfg_write(s, cap + 2, 2, 0x8000);
        cfg_write(s, cap + 2, 2, 0xc000);   /* masked */
        cfg_write(s, cap + 2, 2, 0);
    } else {
        cap = cfg_find_cap(s, 0x05);                /* MSI */
        if (cap) {
            cfg_write(s, cap + 2, 2, 1);
            cfg_write(s, cap + 2, 2, 0);
        }
    }
    cfg_write(s, 0x04, 2, 0x0000);
}

/*
 * Our requests are read and dropped as they come, from the main loop the
 * client's waits poll: a socket buffer filled with them would make the
 * client's writes wait for the server, to a timeout.
 */
static void fuzz_drain(void *opaque)
{
    int fd = (intptr_t)opaque;
    char sink[65536];

    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
        continue;
    }
}

/* VFIO_DEVICE_FEATURE through the device's I/O ops */
static int fuzz_feature(VFIODevice *vbasedev, uint32_t flags, void *data,
                        size_t size)
{
    g_autofree struct vfio_device_feature *f =
        g_malloc0(sizeof(*f) + size);
    int ret;

    f->argsz = sizeof(*f) + size;
    f->flags = flags;
    if (size) {
        memcpy(f->data, data, size);
    }
    ret = vbasedev->io_ops->device_feature(vbasedev, f);
    if (size) {
        memcpy(data, f->data, size);
    }
    return ret;
}

static void fuzz_mig_state(VFIODevice *vbasedev, uint32_t state)
{
    struct vfio_device_feature_mig_state st = { .device_state = state };

    fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_SET |
                 VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &st, sizeof(st));
}

/*
 * What hw/vfio's migration asks of the device, in one pass: its
 * migration features, the state machine through STOP_COPY (reading the
 * data) and RESUMING (writing it back), its data size and pre-copy
 * information, and DMA logging (start, a report, stop).
 */
static void fuzz_migration(VFIODevice *vbasedev)
{
    struct vfio_device_feature_migration mig = { };
    struct vfio_device_feature_mig_data_size size = { };
    struct vfio_precopy_info precopy = { .argsz = sizeof(precopy) };
    struct vfio_device_feature_dma_logging_range range = {
        .iova = 0, .length = RAM_SIZE,
    };
    struct vfio_device_feature_dma_logging_control control = {
        .page_size = 4096, .num_ranges = 1,
        .ranges = (uintptr_t)&range,
    };
    uint64_t bitmap[8];
    struct vfio_device_feature_dma_logging_report report = {
        .iova = 0, .length = sizeof(bitmap) * 8 * 4096, .page_size = 4096,
        .bitmap = (uintptr_t)bitmap,
    };
    uint8_t buf[4096] = { 0 };
    ssize_t got = 0;
    int i;

    if (fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_GET |
                     VFIO_DEVICE_FEATURE_MIGRATION, &mig, sizeof(mig))) {
        return;
    }
    fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_GET |
                 VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &size, sizeof(size));
    if (mig.flags & VFIO_MIGRATION_PRE_COPY) {
        fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_PRE_COPY);
        if (vbasedev->io_ops->mig_precopy_info) {
            vbasedev->io_ops->mig_precopy_info(vbasedev, &precopy);
        }
        vbasedev->io_ops->mig_data_read(vbasedev, buf, sizeof(buf));
    }
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_STOP);
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_STOP_COPY);
    for (i = 0; i < 3; i++) {
        got = vbasedev->io_ops->mig_data_read(vbasedev, buf, sizeof(buf));
        if (got <= 0) {
            break;
        }
    }
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_STOP);
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_RESUMING);
    vbasedev->io_ops->mig_data_write(vbasedev, buf,
                                     got > 0 ? got : sizeof(buf));
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_STOP);
    fuzz_mig_state(vbasedev, VFIO_DEVICE_STATE_RUNNING);

    if (fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_PROBE |
                     VFIO_DEVICE_FEATURE_SET |
                     VFIO_DEVICE_FEATURE_DMA_LOGGING_START, NULL, 0)) {
        return;
    }
    fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_SET |
                 VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                 &control, sizeof(control));
    fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_GET |
                 VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
                 &report, sizeof(report));
    fuzz_feature(vbasedev, VFIO_DEVICE_FEATURE_SET |
                 VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, NULL, 0);
}

static void vfio_user_fuzz(QTestState *s, const unsigned char *data,
                           size_t size)
{
    static bool initialized;
    const char *record = getenv("VFIO_USER_FUZZ_RECORD");
    const char *rec_file = NULL;
    QemuThread thread;
    Relay relay = { .client = -1 };
    int sv[2], peers[MAX_FDS], buf = 4 * MAX_STREAM;
    unsigned int npeers = 0;
    char sink[4096];
    g_autofree char *sock = NULL;
    QDict *opts;
    DeviceState *dev;
    Error *err = NULL;
    /* An input must not leave a descriptor behind */
    int nfds = test_count_fds(0);

    if (!initialized) {
        signal(SIGPIPE, SIG_IGN);
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        abort();
    }
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));

    if (record) {
        g_autofree char *rec_sock = NULL;

        rec_file = strrchr(record, ':');
        g_assert(rec_file);
        rec_sock = g_strndup(record, rec_file++ - record);
        relay.client = sv[0];
        relay.server = relay_connect(rec_sock);
        relay.stream = g_byte_array_new();
        relay.fds = g_array_new(false, false, sizeof(FuzzFd));
        qemu_thread_create(&thread, "vfio-user-relay", relay_thread, &relay,
                           QEMU_THREAD_JOINABLE);
    } else {
        fuzz_feed(sv[0], data, size, peers, &npeers);
        /* The server has said all it will say */
        shutdown(sv[0], SHUT_WR);
        aio_set_fd_handler(qemu_get_aio_context(), sv[0], fuzz_drain, NULL,
                           NULL, NULL, (void *)(intptr_t)sv[0]);
    }

    opts = qdict_new();
    qdict_put_str(opts, "driver", "vfio-user-pci");
    qdict_put_str(opts, "addr", "4.0");
    sock = g_strdup_printf("fd:%d", sv[1]);
    qdict_put_str(opts, "socket", sock);
    /* No adaptive polling: an input's path must not depend on time */
    qdict_put_str(opts, "x-poll-max-ns", "0");
    /* A request the stream does not answer fails fast (not a hang) */
    qdict_put_str(opts, "x-msg-timeout", record ? "5000" : "200");
    dev = qdev_device_add_from_qdict(opts, false, &err);
    qobject_unref(opts);
    if (dev) {
        object_unref(OBJECT(dev));
        fuzz_guest(s);
        fuzz_migration(vfio_user_pci_vbasedev(dev));
        device_cold_reset(dev);
        object_unparent(OBJECT(dev));
    } else {
        /* The device took the socket (and closed it) all the same */
        error_free(err);
    }
    flush_events(s);
    if (!record) {
        aio_set_fd_handler(qemu_get_aio_context(), sv[0], NULL, NULL, NULL,
                           NULL, NULL);
    }

    if (record) {
        /* The device's socket is closed after a grace period */
        drain_call_rcu();
        qemu_thread_join(&thread);
        relay_save(&relay, rec_file);
        close(relay.server);
        g_byte_array_free(relay.stream, true);
        g_array_free(relay.fds, true);
    }
    while (recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
        continue;
    }
    close(sv[0]);
    while (npeers) {
        close(peers[--npeers]);
    }
    /*
     * The first conversation may open what QEMU keeps for later (see
     * vfio_user_fuzz_warm_up()); a region's descriptor is closed after a
     * grace period.
     */
    if (initialized && test_count_fds(0) > nfds) {
        drain_call_rcu();
        flush_events(s);
    }
    if (initialized && test_count_fds(0) > nfds) {
        fprintf(stderr, "vfio-user-pci-fuzz: %d descriptors leaked\n",
                test_count_fds(0) - nfds);
        abort();
    }
    initialized = true;
}

/* One empty conversation first: what QEMU opens once is open before */
static void vfio_user_fuzz_warm_up(QTestState *s)
{
    static const uint8_t nothing[1];

    if (!getenv("VFIO_USER_FUZZ_RECORD")) {
        vfio_user_fuzz(s, nothing, sizeof(nothing));
    }
}

static GString *vfio_user_fuzz_cmdline(FuzzTarget *t)
{
    return g_string_new(TARGET_NAME " -machine pc,accel=qtest,"
                        "memory-backend=ram -m 16M -nodefaults "
                        "-display none -object memory-backend-memfd,"
                        "id=ram,size=16M,share=on");
}

static void register_vfio_user_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "vfio-user-pci-fuzz",
        .description = "Fuzz vfio-user-pci with what its server sends: "
                       "bring-up, BAR accesses, interrupts, reset, unplug",
        .get_init_cmdline = vfio_user_fuzz_cmdline,
        .pre_fuzz = vfio_user_fuzz_warm_up,
        .fuzz = vfio_user_fuzz,
    });
}

fuzz_target_init(register_vfio_user_fuzz_targets);
