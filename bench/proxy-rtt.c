/*
 * VFIOProxy round-trip latency
 *
 * A forked server process answers 4-byte REGION_READs over two socket
 * pairs with blocking I/O.  This process measures, against that same
 * server, the round trip of:
 *   raw        a blocking client: one send, then a read of the header and
 *              one of the payload (what a minimal synchronous client does)
 *   main       vfio_user_send_recv() from the main loop thread (aio_poll)
 *   vcpu-poll  vfio_user_send_recv() from a thread holding the BQL while
 *              the main loop thread runs main_loop_wait() (aio_poll in the
 *              vCPU thread)
 *   vcpu-sem   vfio_user_send_recv_unlocked() from that thread (drops the
 *              BQL and sleeps on a semaphore; the main loop thread runs
 *              the reply in)
 *   vcpu-bql   vfio_user_send_recv() from a thread that takes the BQL for
 *              each access and drops it after, as a TCG or KVM vCPU does
 *              around an MMIO access: the main loop thread, which polls
 *              the same socket, wakes up for each reply and competes for
 *              the BQL
 * The BQL is a real mutex here, so the main loop thread contends for it
 * as it does in QEMU.
 *
 * The modes take turns, in ROUNDS rounds, so that drifts of the machine
 * hit them alike.  Output: one line per mode, "mode median_us mean_us
 * p99_us".
 * Built and run by bench/proxy-rtt.sh.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "block/aio.h"
#include "hw/vfio-user/proxy.h"

/* The BQL: replaces the no-op stubs of libqemuutil. */
static QemuMutex bql;
static __thread bool bql_held;

bool bql_locked(void)
{
    return bql_held;
}

void bql_lock_impl(const char *file, int line)
{
    qemu_mutex_lock(&bql);
    bql_held = true;
}

void bql_unlock(void)
{
    bql_held = false;
    qemu_mutex_unlock(&bql);
}

typedef union ReadMsg {
    VFIOUserRegionRW rw;
    uint8_t buf[sizeof(VFIOUserRegionRW) + 8];
} ReadMsg;

#define READ_SIZE (sizeof(VFIOUserRegionRW))
#define REPLY_SIZE (sizeof(VFIOUserRegionRW) + 4)

static void *serve(void *opaque)
{
    int fd = (intptr_t)opaque;
    static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":8}}";
    uint8_t buf[512];
    VFIOUserHdr *h = (VFIOUserHdr *)buf;
    size_t len;

    while (recv(fd, h, sizeof(*h), MSG_WAITALL) == sizeof(*h)) {
        len = h->size - sizeof(*h);
        if (h->size < sizeof(*h) || h->size > sizeof(buf) ||
            (len && recv(fd, h + 1, len, MSG_WAITALL) != len)) {
            break;
        }
        h->flags = VFIO_USER_REPLY;
        if (h->command == VFIO_USER_VERSION) {
            memcpy(buf + sizeof(*h) + 4, caps, sizeof(caps));
            h->size = sizeof(*h) + 4 + sizeof(caps);
        } else {
            memset(buf + READ_SIZE, 0x42, 4);
            h->size = REPLY_SIZE;
        }
        if (send(fd, buf, h->size, MSG_NOSIGNAL) != h->size) {
            break;
        }
    }
    return NULL;
}

static void run_server(int raw_fd, int proxy_fd)
{
    QemuThread t;

    qemu_thread_create(&t, "raw", serve, (void *)(intptr_t)raw_fd,
                       QEMU_THREAD_JOINABLE);
    serve((void *)(intptr_t)proxy_fd);
    qemu_thread_join(&t);
    exit(0);
}

#define ROUNDS 10
#define NMODES 5

static int iterations = 20000;
static int warmup = 200;
static VFIOProxy *proxy;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* The CPU time of this process (all its threads) so far, microseconds */
static double cpu_us(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
}

/* median, mean, p99 and CPU time (@cpu in all) per round trip */
static void report(const char *mode, double *us, int n, double cpu)
{
    double sum = 0;
    int i;

    for (i = 0; i < n; i++) {
        sum += us[i];
    }
    qsort(us, n, sizeof(*us), cmp_double);
    printf("%s %.2f %.2f %.2f %.2f\n", mode, us[n / 2], sum / n,
           us[n * 99 / 100], cpu / n);
    fflush(stdout);
    g_free(us);
}

static void read_init(ReadMsg *m)
{
    vfio_user_msg_init(&m->rw.hdr, VFIO_USER_REGION_READ, READ_SIZE);
    m->rw.offset = 0;
    m->rw.region = 0;
    m->rw.count = 4;
}

/* Time warmup + @n calls of @fn; the samples go to @us, in microseconds. */
static void measure(void (*fn)(void *), void *opaque, double *us, int n)
{
    int i;

    for (i = -warmup; i < n; i++) {
        int64_t t0 = get_clock();

        fn(opaque);
        if (i >= 0) {
            us[i] = (get_clock() - t0) / 1000.0;
        }
    }
}

static void raw_rtt(void *opaque)
{
    int fd = *(int *)opaque;
    ReadMsg m;

    read_init(&m);
    if (send(fd, &m, READ_SIZE, MSG_NOSIGNAL) != READ_SIZE ||
        recv(fd, &m, sizeof(VFIOUserHdr), MSG_WAITALL) !=
        sizeof(VFIOUserHdr) ||
        recv(fd, m.buf + sizeof(VFIOUserHdr), REPLY_SIZE - sizeof(VFIOUserHdr),
             MSG_WAITALL) != REPLY_SIZE - sizeof(VFIOUserHdr)) {
        abort();
    }
}

static void proxy_rtt(void *opaque)
{
    bool unlocked = opaque;
    ReadMsg m;
    int ret;

    read_init(&m);
    if (unlocked) {
        ret = vfio_user_send_recv_unlocked(proxy, &m.rw.hdr, NULL, sizeof(m),
                                           0, &error_abort);
    } else {
        ret = vfio_user_send_recv(proxy, &m.rw.hdr, NULL, sizeof(m), 0,
                                  &error_abort);
    }
    if (ret || m.rw.hdr.size != REPLY_SIZE) {
        abort();
    }
}

typedef struct VCPU {
    bool unlocked;
    bool bql_per_access;
    double *us;
    int n;
    bool done;
} VCPU;

static void proxy_rtt_bql(void *opaque)
{
    bql_lock();
    proxy_rtt(NULL);
    bql_unlock();
}

static void *vcpu_thread(void *opaque)
{
    VCPU *v = opaque;

    if (v->bql_per_access) {
        measure(proxy_rtt_bql, NULL, v->us, v->n);
        qatomic_set(&v->done, true);
        qemu_notify_event();
        return NULL;
    }
    bql_lock();
    measure(proxy_rtt, v->unlocked ? (void *)1 : NULL, v->us, v->n);
    bql_unlock();
    qatomic_set(&v->done, true);
    qemu_notify_event();
    return NULL;
}

static void run_vcpu(bool unlocked, bool bql_per_access, double *us, int n)
{
    VCPU v = {
        .unlocked = unlocked, .bql_per_access = bql_per_access,
        .us = us, .n = n,
    };
    QemuThread t;

    qemu_thread_create(&t, "vcpu", vcpu_thread, &v, QEMU_THREAD_JOINABLE);
    while (!qatomic_read(&v.done)) {
        main_loop_wait(false);
    }
    qemu_thread_join(&t);
}

int main(int argc, char **argv)
{
    int raw[2], px[2];
    SocketAddress addr = { .type = SOCKET_ADDRESS_TYPE_FD };
    static const char *const modes[NMODES] = {
        "raw", "main", "vcpu-poll", "vcpu-sem", "vcpu-bql",
    };
    double *us[NMODES];
    bool run[NMODES];
    double cpu[NMODES] = { };
    pid_t pid;
    int i, r, n;

    if (argc > 1) {
        iterations = MAX(atoi(argv[1]), ROUNDS);
    }
    /* Optional: the modes to run, e.g. "raw,main". */
    for (i = 0; i < NMODES; i++) {
        run[i] = argc < 3 || strstr(argv[2], modes[i]);
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, raw) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, px)) {
        return 1;
    }
    pid = fork();
    if (getenv("SPLIT_CPUS")) {
        /* The server on CPU 1, the client on CPU 0 */
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(pid == 0 ? 1 : 0, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    if (pid == 0) {
        close(raw[1]);
        close(px[1]);
        run_server(raw[0], px[0]);
    }
    close(raw[0]);
    close(px[0]);

    signal(SIGPIPE, SIG_IGN);
    qemu_mutex_init(&bql);
    module_call_init(MODULE_INIT_QOM);
    bql_lock();
    qemu_init_main_loop(&error_abort);

    proxy = vfio_user_proxy_new(NULL, NULL, NULL);
    if (getenv("POLL_MAX_NS")) {
        uint64_t max_ns = 0;

        qemu_strtou64(getenv("POLL_MAX_NS"), NULL, 0, &max_ns);
        vfio_user_proxy_set_poll_max_ns(proxy, max_ns);
    }
    addr.u.fd.str = g_strdup_printf("%d", px[1]);
    vfio_user_proxy_connect(proxy, &addr, &error_abort);
    g_free(addr.u.fd.str);

    n = iterations / ROUNDS;
    for (i = 0; i < NMODES; i++) {
        us[i] = g_new(double, n * ROUNDS);
    }
    for (r = 0; r < ROUNDS; r++) {
        double c;

        c = cpu_us();
        if (run[0]) {
            measure(raw_rtt, &raw[1], us[0] + r * n, n);
        }
        cpu[0] += cpu_us() - c;
        c = cpu_us();
        if (run[1]) {
            measure(proxy_rtt, NULL, us[1] + r * n, n);
        }
        cpu[1] += cpu_us() - c;
        c = cpu_us();
        if (run[2]) {
            run_vcpu(false, false, us[2] + r * n, n);
        }
        cpu[2] += cpu_us() - c;
        c = cpu_us();
        if (run[3]) {
            run_vcpu(true, false, us[3] + r * n, n);
        }
        cpu[3] += cpu_us() - c;
        c = cpu_us();
        if (run[4]) {
            run_vcpu(false, true, us[4] + r * n, n);
        }
        cpu[4] += cpu_us() - c;
    }
    for (i = 0; i < NMODES; i++) {
        if (run[i]) {
            report(modes[i], us[i], n * ROUNDS, cpu[i]);
        } else {
            g_free(us[i]);
        }
    }

    vfio_user_proxy_free(proxy);
    close(raw[1]);
    waitpid(pid, NULL, 0);
    return 0;
}
