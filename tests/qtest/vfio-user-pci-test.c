/*
 * qtest for vfio-user-pci against real vfio-user servers
 *
 * Each test starts its own server on its own temporary socket: QEMU's
 * x-vfio-user-server (serving edu), the libvfio-user samples
 * (gpio-pci-idio-16, server), or our scripted fault server
 * (tests/vfio-user/fault-server.py), and the samples of a newer
 * libvfio-user than QEMU's subproject (migration, region ioeventfds).
 * Servers are killed when the test ends, pass or fail.
 *
 * A test whose server is missing is skipped, and says why:
 * x-vfio-user-server and the subproject's samples need
 * --enable-vfio-user-server, the fault server needs Python (PYTHON, set
 * by meson, or python3 in PATH; VFIO_USER_FAULT_SERVER is the script,
 * set by meson too), and the newer libvfio-user's samples are looked for
 * in VFIO_USER_TEST_LIBVFIO_USER (default: vfio-user-peers/libvfio-user
 * in the build directory).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "libqtest.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include <linux/vfio.h>
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qapi/error.h"
#include "tests/vfio-user/count-fds.h"

#define EDU_VENDOR          0x1234
#define EDU_DEVICE          0x11e8
#define GPIO_VENDOR         0x494f
#define GPIO_DEVICE         0x0dc8
#define SLOT                4

/* The fault server's BAR0 registers (tests/vfio-user/fault-server.py) */
#define FAULT_CMD           0xff8
#define FAULT_ADDR          0xfe0
#define FAULT_ARMED_REG     0xff0
#define CLIENT_MAX_XFER     (1 * MiB)

typedef struct Server {
    GPid pid;
    char *dir;
    char *sock;
    char *log;
    GSList *extra;      /* more files in @dir */
    int log_pos;        /* log lines consumed by fault_event() */
    char **argv;        /* how it was started, for server_restart() */
} Server;

static const char *qemu_bin(void)
{
    return g_getenv("QTEST_QEMU_BINARY");
}

/* The build directory holds the QEMU binary and the samples. */
static char *build_path(const char *rel)
{
    g_autofree char *dir = g_path_get_dirname(qemu_bin());

    return g_build_filename(dir, rel, NULL);
}

static char *build_path2(const char *rel, const char *name)
{
    g_autofree char *dir = build_path(rel);

    return g_build_filename(dir, name, NULL);
}

/* Python, for the fault server: meson's (PYTHON), or python3 in PATH */
static char *python_bin(void)
{
    const char *python = g_getenv("PYTHON");

    return g_find_program_in_path(python ?: "python3");
}

/* tests/vfio-user/fault-server.py: meson says where it is */
static char *fault_server_script(void)
{
    const char *script = g_getenv("VFIO_USER_FAULT_SERVER");

    return script ? g_strdup(script)
                  : build_path("../tests/vfio-user/fault-server.py");
}

/* The newer libvfio-user's sample @name */
static char *peer_path(const char *name)
{
    const char *dir = g_getenv("VFIO_USER_TEST_LIBVFIO_USER");

    return dir ? g_build_filename(dir, name, NULL)
               : build_path2("vfio-user-peers/libvfio-user", name);
}

/*
 * What a test needs besides this QEMU and its qtest; without it the test
 * is skipped (missing() says why).
 */
enum {
    NEEDS_REMOTE = 1 << 0,      /* x-vfio-user-server */
    NEEDS_SAMPLES = 1 << 1,     /* the libvfio-user subproject's samples */
    NEEDS_FAULT = 1 << 2,       /* Python and the fault server */
    NEEDS_PEER = 1 << 3,        /* the newer libvfio-user's samples */
};

static bool have_remote_server(void)
{
    static int have = -1;

    if (have < 0) {
        g_autofree char *out = NULL;
        char *argv[] = {
            (char *)qemu_bin(), (char *)"-object", (char *)"help", NULL
        };

        have = g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL,
                            NULL, NULL, &out, NULL, NULL, NULL) &&
               strstr(out, "x-vfio-user-server");
    }
    return have;
}

static char *missing(unsigned needs)
{
    if (needs & NEEDS_REMOTE && !have_remote_server()) {
        return g_strdup("this QEMU has no x-vfio-user-server "
                        "(configure --enable-vfio-user-server)");
    }
    if (needs & NEEDS_SAMPLES) {
        g_autofree char *bin = build_path(
            "subprojects/libvfio-user/samples/gpio-pci-idio-16");

        if (!g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE)) {
            return g_strdup_printf("no libvfio-user samples (%s; configure "
                                   "--enable-vfio-user-server)", bin);
        }
    }
    if (needs & NEEDS_FAULT) {
        g_autofree char *python = python_bin();
        g_autofree char *script = fault_server_script();

        if (!python) {
            return g_strdup_printf("no Python for the fault server (%s)",
                                   g_getenv("PYTHON") ?: "python3 in PATH");
        }
        if (!g_file_test(script, G_FILE_TEST_EXISTS)) {
            return g_strdup_printf("no fault server %s "
                                   "(VFIO_USER_FAULT_SERVER)", script);
        }
    }
    if (needs & NEEDS_PEER) {
        g_autofree char *bin = peer_path("server");

        if (!g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE)) {
            return g_strdup_printf("the newer libvfio-user's samples are "
                                   "not built (no %s; "
                                   "VFIO_USER_TEST_LIBVFIO_USER)", bin);
        }
    }
    return NULL;
}

typedef struct TestCase {
    unsigned needs;
    void (*fn)(void);
    GTestDataFunc data_fn;
    const void *data;
} TestCase;

static void run_test(const void *opaque)
{
    const TestCase *t = opaque;
    g_autofree char *why = missing(t->needs);

    if (why) {
        g_test_skip(why);
        return;
    }
    if (t->fn) {
        t->fn();
    } else {
        t->data_fn(t->data);
    }
}

static void add_test_case(const char *path, TestCase tc)
{
    qtest_add_data_func_full(path, g_memdup2(&tc, sizeof(tc)), run_test,
                             g_free);
}

/* Register test @fn, which needs @needs (NEEDS_*) */
static void add_test(const char *path, unsigned needs, void (*fn)(void))
{
    add_test_case(path, (TestCase) { .needs = needs, .fn = fn });
}

static void add_data_test(const char *path, unsigned needs,
                          GTestDataFunc fn, const void *data)
{
    add_test_case(path, (TestCase) {
        .needs = needs, .data_fn = fn, .data = data
    });
}

/*
 * The servers accept a single client, so do not connect to see whether
 * they listen: wait for the socket file, then give listen() a moment.
 */
static bool socket_exists(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        return false;
    }
    g_usleep(50 * 1000);
    return true;
}

static void server_wait_socket(Server *s)
{
    int i;

    for (i = 0; i < 600; i++) {
        if (socket_exists(s->sock)) {
            return;
        }
        g_assert(waitpid(s->pid, NULL, WNOHANG) == 0);
        g_usleep(50 * 1000);
    }
    g_error("server did not create %s", s->sock);
}

/* A server dies with the test, even when a failed assertion aborts it. */
static void server_child_setup(gpointer opaque)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static Server *server_spawn(char **argv, Server *s)
{
    g_autoptr(GError) err = NULL;
    int out = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

    if (argv != s->argv) {
        g_strfreev(s->argv);
        s->argv = g_strdupv(argv);
    }

    g_assert(out >= 0);
    g_assert(g_spawn_async_with_fds(NULL, argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD |
                                    G_SPAWN_STDIN_FROM_DEV_NULL,
                                    server_child_setup, NULL, &s->pid, -1,
                                    out, out, &err));
    close(out);
    server_wait_socket(s);
    return s;
}

/* A server whose socket is @name in a directory of its own, or @sock. */
static Server *server_new_at(const char *name, const char *sock)
{
    Server *s = g_new0(Server, 1);

    s->dir = g_dir_make_tmp("vfio-user-test-XXXXXX", NULL);
    g_assert(s->dir);
    s->sock = sock ? g_strdup(sock) : g_build_filename(s->dir, name, NULL);
    s->log = g_build_filename(s->dir, "server.log", NULL);
    return s;
}

static Server *server_new(const char *name)
{
    return server_new_at(name, NULL);
}

/*
 * QEMU's x-vfio-user-server serving @device (e.g. "edu"), on socket path
 * @sock if not NULL.
 */
static Server *remote_start_at(const char *device, const char *sock)
{
    Server *s = server_new_at("remote.sock", sock);
    g_autofree char *dev = g_strdup_printf("%s,id=d0", device);
    /* QEMU 10.0 takes the server's socket only in the JSON form */
    g_autofree char *obj = g_strdup_printf(
        "{\"qom-type\":\"x-vfio-user-server\",\"id\":\"s0\","
        "\"socket\":{\"type\":\"unix\",\"path\":\"%s\"},"
        "\"device\":\"d0\"}", s->sock);
    char *argv[] = {
        (char *)qemu_bin(), (char *)"-machine",
        (char *)"x-remote,vfio-user=on,auto-shutdown=on",
        (char *)"-nodefaults", (char *)"-display", (char *)"none",
        (char *)"-device", dev, (char *)"-object", obj, NULL
    };

    return server_spawn(argv, s);
}

static Server *remote_start(const char *device)
{
    return remote_start_at(device, NULL);
}

/* A libvfio-user sample, e.g. "gpio-pci-idio-16" or "server". */
static Server *sample_start(const char *name, const char *opt)
{
    Server *s = server_new("sample.sock");
    g_autofree char *bin = NULL;
    g_autofree char *rel = g_strdup_printf(
        "subprojects/libvfio-user/samples/%s", name);
    char *argv[4] = { NULL };
    int i = 0;

    bin = build_path(rel);
    argv[i++] = bin;
    if (opt) {
        argv[i++] = (char *)opt;
    }
    argv[i++] = s->sock;
    return server_spawn(argv, s);
}

/* tests/vfio-user/fault-server.py in @mode, with option @opt @arg. */
static Server *fault_start_opt(const char *mode, const char *opt,
                               const char *arg)
{
    Server *s = server_new("fault.sock");
    g_autofree char *python = python_bin();
    g_autofree char *script = fault_server_script();
    char *argv[] = {
        python, script, (char *)"--socket", s->sock,
        (char *)"--mode", (char *)mode, (char *)"--log", s->log,
        (char *)opt, (char *)arg, NULL
    };

    return server_spawn(argv, s);
}

static Server *fault_start(const char *mode)
{
    return fault_start_opt(mode, NULL, NULL);
}

static void server_kill(Server *s)
{
    if (s->pid) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        g_spawn_close_pid(s->pid);
        s->pid = 0;
    }
}

/*
 * Start the server again as it was started, on the same socket path
 * (killed first if it still runs; the path is removed first: servers
 * create their socket).
 */
static void server_restart(Server *s)
{
    server_kill(s);
    unlink(s->sock);
    server_spawn(s->argv, s);
}

static void server_free(Server *s)
{
    server_kill(s);
    unlink(s->sock);
    unlink(s->log);
    for (GSList *l = s->extra; l; l = l->next) {
        unlink(l->data);
    }
    g_slist_free_full(s->extra, g_free);
    rmdir(s->dir);
    g_free(s->sock);
    g_free(s->log);
    g_free(s->dir);
    g_strfreev(s->argv);
    g_free(s);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Server, server_free)

static char *server_file(Server *s, const char *name)
{
    s->extra = g_slist_prepend(s->extra, g_build_filename(s->dir, name,
                                                         NULL));
    return g_strdup(s->extra->data);
}

/* Does the text file @path contain @what? */
static bool file_contains(const char *path, const char *what)
{
    g_autofree char *text = NULL;

    return g_file_get_contents(path, &text, NULL, NULL) &&
           strstr(text, what);
}

static QTestState *client_start(Server *s, const char *extra)
{
    return qtest_initf("-machine pc -display none "
                       "-device vfio-user-pci,id=vu0,addr=%d,socket=%s %s",
                       SLOT, s->sock, extra ?: "");
}

static QPCIDevice *find_dev(QPCIBus *bus)
{
    QPCIDevice *dev = qpci_device_find(bus, QPCI_DEVFN(SLOT, 0));

    g_assert(dev);
    qpci_device_enable(dev);
    return dev;
}

/* Undo client_start(), qpci_new_pc(), find_dev() and qpci_iomap(). */
static void client_end(QTestState *qts, QPCIBus *bus, QPCIDevice *dev,
                       QPCIBar bar)
{
    qpci_iounmap(dev, bar);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* Hot-add vfio-user-pci through QMP; return the error text or NULL. */
static char *device_add_error(QTestState *qts, const char *id,
                              const char *sock)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                            "{'driver': 'vfio-user-pci', 'id': %s, "
                            "'addr': %s, 'socket': %s}}", id,
                            stringify(SLOT), sock);
    char *msg = NULL;

    g_assert(resp);
    if (qdict_haskey(resp, "error")) {
        msg = g_strdup(qdict_get_str(qdict_get_qdict(resp, "error"),
                                     "desc"));
    }
    qobject_unref(resp);
    return msg;
}

/* QEMU is alive and well: it still hot-plugs a device and lists PCI. */
static void assert_alive(QTestState *qts)
{
    QDict *resp;

    qtest_qmp_device_add(qts, "pci-testdev", "alive", "{'addr': '0x9'}");
    resp = qtest_qmp(qts, "{'execute': 'query-pci'}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
}

/*
 * Start QEMU with its stderr going to a file of @s (the child inherits
 * our fd 2), to count what it reports.
 */
static QTestState *client_start_stderr(Server *s, const char *extra,
                                       char **path)
{
    int saved = dup(2);
    int fd;
    QTestState *qts;

    *path = server_file(s, "qemu-stderr.log");
    fd = open(*path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    g_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    qts = client_start(s, extra);
    dup2(saved, 2);
    close(saved);
    return qts;
}

/* How many lines of the text file @path contain @what? */
static int file_count(const char *path, const char *what)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int i, n = 0;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        n += !!strstr(lines[i], what);
    }
    return n;
}

/* QEMU's stderr @path holds one report: the loss of the server. */
static void assert_reported_once(const char *path)
{
    if (file_count(path, "lost the server") != 1 ||
        file_count(path, "vfio-user") != 1) {
        g_autofree char *text = NULL;

        g_file_get_contents(path, &text, NULL, NULL);
        g_error("expected one report of the lost server, got:\n%s", text);
    }
}

static long rss_kib(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *text = NULL;
    const char *p, *end;
    long kib;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    p = strstr(text, "VmRSS:");
    g_assert(p);
    g_assert(!qemu_strtol(p + 6, &end, 10, &kib));
    return kib;
}

/* -- edu over x-vfio-user-server -------------------------------------- */

static void test_edu_registers(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, NULL);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    uint64_t size;
    QPCIBar bar0;

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, EDU_VENDOR);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, EDU_DEVICE);
    g_assert_cmphex(qpci_config_readw(dev, PCI_CLASS_DEVICE), ==, 0x00ff);

    bar0 = qpci_iomap(dev, 0, &size);
    g_assert_cmphex(size, ==, 1 * MiB);
    /* Identity: major 1, minor 0, 0xed */
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0x010000ed);
    /* Liveness: reads back the inverse of what was written */
    qpci_io_writel(dev, bar0, 0x04, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x04), ==, ~0x12345678u);
    qpci_io_writel(dev, bar0, 0x04, 0);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x04), ==, 0xffffffffu);
    /* Posted writes then a read: the read observes every write. */
    for (int i = 0; i < 64; i++) {
        qpci_io_writel(dev, bar0, 0x04, i);
    }
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x04), ==, ~63u);

    client_end(qts, bus, dev, bar0);
}

static void test_edu_reset(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, NULL);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);

    qpci_io_writel(dev, bar0, 0x04, 0xa5a5a5a5);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x04), ==, 0x5a5a5a5a);
    qtest_qmp_assert_success(qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(qts, "RESET");
    qpci_iounmap(dev, bar0);
    g_free(dev);

    /* The guest's view after reset: IDs, and BAR0 works once re-enabled */
    dev = find_dev(bus);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, EDU_VENDOR);
    bar0 = qpci_iomap(dev, 0, NULL);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0x010000ed);
    qpci_io_writel(dev, bar0, 0x04, 1);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x04), ==, ~1u);

    client_end(qts, bus, dev, bar0);
}

/* The JSON -device form and the unix: form of the socket property. */
static void test_socket_forms(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = qtest_initf(
        "-machine pc -display none -device "
        "'{\"driver\":\"vfio-user-pci\",\"id\":\"vu0\",\"addr\":\"%d\","
        "\"socket\":{\"type\":\"unix\",\"path\":\"%s\"}}'", SLOT, s->sock);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);

    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, EDU_DEVICE);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    server_free(g_steal_pointer(&s));

    s = remote_start("edu");
    qts = qtest_initf("-machine pc -display none -device vfio-user-pci,"
                      "id=vu0,addr=%d,socket=unix:%s", SLOT, s->sock);
    bus = qpci_new_pc(qts, NULL);
    dev = find_dev(bus);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, EDU_DEVICE);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* -- libvfio-user samples ------------------------------------------------ */

static void gpio_check(QTestState *qts)
{
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    uint64_t size;
    QPCIBar bar2;
    int i, v, prev = -1;

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, GPIO_VENDOR);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, GPIO_DEVICE);
    bar2 = qpci_iomap(dev, 2, &size);
    g_assert_cmphex(size, ==, 0x100);
    /* The sample's input register counts reads: value n / 3 on read n. */
    for (i = 0; i < 9; i++) {
        v = qpci_io_readb(dev, bar2, 0);
        g_assert(prev < 0 || v == prev || v == ((prev + 1) & 0xff));
        prev = v;
    }
    qpci_iounmap(dev, bar2);
    g_free(dev);
    qpci_free_pc(bus);
}

static void test_gpio(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    QTestState *qts = client_start(s, NULL);

    gpio_check(qts);
    qtest_quit(qts);

    /* The sample re-attaches: a second client after the first quit. */
    qts = client_start(s, NULL);
    gpio_check(qts);
    qtest_quit(qts);
}

/*
 * libvfio-user's "server" sample: BAR1 is 0x3000 bytes, backed by a file
 * it passes with REGION_INFO, mmap-able at pages 0 and 2 only; page 1 is
 * reached by messages.  The sample answers every message read of BAR1
 * with the bytes at the start of BAR1 (whatever the offset), so a read
 * through messages shows what was written through the mmap of page 0.
 */
static void test_server_sparse_bar(void)
{
    g_autoptr(Server) s = sample_start("server", NULL);
    g_autofree char *trace = server_file(s, "trace.log");
    g_autofree char *extra = g_strdup_printf(
        "-trace vfio_user_pci_posted_writes -D %s", trace);
    QTestState *qts = client_start(s, extra);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    uint64_t size;
    QPCIBar bar1 = qpci_iomap(dev, 1, &size);
    int i;

    /* 0x3000 rounded up to a power of two for the PCI BAR */
    g_assert_cmphex(size, ==, 0x4000);
    /*
     * PCI ordering is per function: with mmap-ed areas in BAR1, writes to
     * any BAR of the device are not posted.
     */
    g_assert(file_contains(trace, "posted MMIO writes 0"));
    for (i = 0; i < 16; i += 4) {
        /* page 0, through the mmap of the server's file */
        qpci_io_writel(dev, bar1, 0, 0xc0de0000 + i);
        /* page 1, through messages: served from that file */
        g_assert_cmphex(qpci_io_readl(dev, bar1, 0x1000 + i), ==,
                        0xc0de0000 + i);
        /* page 2, through the other mmap area */
        qpci_io_writel(dev, bar1, 0x2000 + i, 0xbeef0000 + i);
    }
    for (i = 0; i < 16; i += 4) {
        g_assert_cmphex(qpci_io_readl(dev, bar1, 0x2000 + i), ==,
                        0xbeef0000 + i);
    }
    /*
     * A write through messages lands in the same file: the sample
     * serves message reads from offset 0, so write there with a
     * message-sized access the mmap does not cover... page 1 then reads
     * back what page 0's mmap shows.
     */
    qpci_io_writel(dev, bar1, 0x1000, 0x11112222);
    qpci_io_writel(dev, bar1, 0, 0x33334444);
    g_assert_cmphex(qpci_io_readl(dev, bar1, 0x1000), ==, 0x33334444);
    g_assert_cmphex(qpci_io_readl(dev, bar1, 0), ==, 0x33334444);

    qpci_iounmap(dev, bar1);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* -- bad input ---------------------------------------------------------- */

static void assert_contains(const char *msg, const char *what)
{
    if (!msg || !strstr(msg, what)) {
        g_error("expected an error containing '%s', got '%s'", what,
                msg ?: "(success)");
    }
}

static void test_bad_input(void)
{
    QTestState *qts = qtest_init("-machine pc -display none");
    g_autofree char *dir = g_dir_make_tmp("vfio-user-test-XXXXXX", NULL);
    g_autofree char *none = g_build_filename(dir, "none.sock", NULL);
    g_autofree char *file = g_build_filename(dir, "file", NULL);
    g_autofree char *msg = NULL;
    QDict *resp;

    /* No socket property at all */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vfio-user-pci', 'id': 'b0'}}");
    assert_contains(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"),
                    "the socket property is required");
    qobject_unref(resp);

    /* A path where nothing listens */
    msg = device_add_error(qts, "b1", none);
    assert_contains(msg, none);
    assert_contains(msg, "No such file or directory");
    g_free(msg);

    /* A path that is not a socket */
    g_assert(g_file_set_contents(file, "x", 1, NULL));
    msg = device_add_error(qts, "b2", file);
    assert_contains(msg, "not a socket");
    g_free(msg);
    unlink(file);

    /* A socket type vfio-user cannot use */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vfio-user-pci', 'id': 'b3', 'socket': "
                     "{'type': 'inet', 'host': 'localhost', 'port': '1'}}}");
    assert_contains(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"),
                    "needs a UNIX socket");
    qobject_unref(resp);

    /* A network address in the string form: named, not taken as a path */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vfio-user-pci', 'id': 'b7', "
                     "'socket': 'tcp:1.2.3.4:5'}}");
    msg = g_strdup(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"));
    assert_contains(msg, "a tcp address");
    assert_contains(msg, "needs a UNIX socket");
    g_free(msg);
    qobject_unref(resp);

    /* A server that closes the connection right after accept */
    {
        g_autoptr(Server) s = fault_start("close");

        msg = device_add_error(qts, "b4", s->sock);
        assert_contains(msg, s->sock);
        g_free(msg);
    }

    /* A server that answers VERSION with garbage */
    {
        g_autoptr(Server) s = fault_start("garbage");

        msg = device_add_error(qts, "b5", s->sock);
        assert_contains(msg, s->sock);
        assert_contains(msg, "VERSION");
        g_free(msg);
        msg = NULL;
    }

    /* A server that never accepts, its one-connection backlog taken */
    {
        g_autofree char *path = g_build_filename(dir, "busy.sock", NULL);
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        gint64 t0;

        g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
        g_assert(!bind(lfd, (struct sockaddr *)&sun, sizeof(sun)));
        g_assert(!listen(lfd, 0));
        g_assert(!connect(cfd, (struct sockaddr *)&sun, sizeof(sun)));
        t0 = g_get_monotonic_time();
        resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                         "{'driver': 'vfio-user-pci', 'id': 'b6', "
                         "'x-msg-timeout': 300, 'socket': %s}}", path);
        assert_contains(qdict_get_str(qdict_get_qdict(resp, "error"),
                                      "desc"), "did not accept");
        qobject_unref(resp);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
        close(cfd);
        close(lfd);
        unlink(path);
    }

    assert_alive(qts);
    rmdir(dir);
    qtest_quit(qts);
}

/*
 * Realize fails at each step of the bring-up (the server's device info,
 * region info), with a message that says what was wrong, and unwinds:
 * QEMU stays alive and keeps no descriptor of the failed attempt.
 */
static void test_realize_unwind(void)
{
    static const struct {
        const char *fail, *msg;
    } cases[] = {
        { "not-pci", "not a PCI device" },
        { "few-regions", "unexpected number of io regions" },
        { "many-regions", "DEVICE_GET_INFO failed" },
        { "short-region-info", "region 0" },
        { "wrong-region-index", "region 0" },
        { "bad-region-caps", "region 0" },
        { "cap-loop", "invalid capability list" },
        { "msix-bir", "MSI-X table (BAR 7" },
    };
    QTestState *qts = qtest_init("-machine pc -display none");
    int fds0 = -1;

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < ARRAY_SIZE(cases); i++) {
            g_autoptr(Server) s = fault_start_opt("device", "--fail",
                                                  cases[i].fail);
            g_autofree char *msg = device_add_error(qts, "u0", s->sock);

            assert_contains(msg, cases[i].msg);
            assert_contains(msg, s->sock);
        }
        if (round == 0) {
            fds0 = test_count_fds(qtest_pid(qts));
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);
    assert_alive(qts);
    qtest_quit(qts);
}

/*
 * A BAR's mmap area that cannot be mapped (beyond the region, not aligned
 * to the host page) is reached by messages, with a warning, as vfio-pci
 * does with an area it fails to map: the device is not refused.  An area
 * inside a file shorter than the region (SPDK's BAR0: its file ends with
 * the doorbells, 8 KiB of a 16 KiB BAR) is mapped.
 */
static void test_sparse_areas(void)
{
    static const struct {
        const char *fail;
        bool mapped;
    } cases[] = {
        { "short-file-sparse", true },
        { "bad-sparse", false },
        { "unaligned-sparse", false },
    };

    for (int i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autoptr(Server) s = fault_start_opt("device", "--fail",
                                              cases[i].fail);
        g_autofree char *trace = server_file(s, "trace.log");
        g_autofree char *extra = g_strdup_printf(
            "-trace vfio_region_mmap -D %s", trace);
        g_autofree char *err = NULL;
        QTestState *qts = client_start_stderr(s, extra, &err);

        /* Mapped: the area, and nothing else of BAR 0 */
        g_assert_cmpint(file_count(trace, "BAR 0 mmaps"), ==,
                        cases[i].mapped);
        g_assert_cmpint(file_count(trace, "BAR 0 mmaps[0] [0x1000 - 0x1fff]"),
                        ==, cases[i].mapped);
        g_assert_cmpint(file_count(err, "cannot be mapped"), ==,
                        !cases[i].mapped);
        assert_alive(qts);
        qtest_quit(qts);
    }
}

/*
 * -device vfio-user-pci,help describes this device's properties, not
 * those of a kernel VFIO device.
 */
static void test_help(void)
{
    g_autofree char *out = NULL;
    char *argv[] = {
        (char *)qemu_bin(), (char *)"-device", (char *)"vfio-user-pci,help",
        NULL
    };
    int status;

    g_assert(g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL,
                          NULL, NULL, &out, NULL, &status, NULL));
    g_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_contains(out, "socket=");
    assert_contains(out, "x-msg-timeout=");
    g_assert(!strstr(out, "mdev driver"));
    assert_contains(out, "enable-migration=");
    /* A command line written for QEMU 10.1's client works */
    assert_contains(out, "x-send-queued=");
}

/*
 * intel-iommu without caching-mode cannot tell QEMU the guest's maps (it
 * would not invalidate them): realize fails with intel-iommu's error,
 * naming the socket; QEMU goes on.
 */
static void test_viommu_no_caching_mode(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = qtest_init("-machine q35 -display none "
                                 "-device intel-iommu -device "
                                 "pcie-root-port,id=rp0,chassis=1");
    QDict *resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                            "{'driver': 'vfio-user-pci', 'id': 'vu0', "
                            "'bus': 'rp0', 'socket': %s}}", s->sock);
    const char *msg = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");

    assert_contains(msg, "caching-mode=on");
    assert_contains(msg, s->sock);
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'query-pci'}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    qtest_quit(qts);
}

/* -- a server that dies -------------------------------------------------- */

static void test_disconnect(void)
{
    g_autoptr(Server) s = remote_start("edu");
    g_autofree char *err = NULL;
    QTestState *qts = client_start_stderr(s, NULL, &err);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    gint64 t0;
    QDict *resp;
    int i;

    for (i = 0; i < 50; i++) {
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0x010000ed);
    }
    server_kill(s);
    /* Reads go on: the first ones may race with the kill. */
    for (i = 0; i < 50; i++) {
        qpci_io_readl(dev, bar0, 0x00);
    }
    t0 = g_get_monotonic_time();
    resp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 2 * G_USEC_PER_SEC);

    for (i = 0; i < 10; i++) {
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0xffffffff);
        qpci_io_writel(dev, bar0, 0x04, i);
    }
    /* Like a device that fell off the bus */
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0xffff);

    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_unplug_acpi_device_test(qts, "vu0", SLOT);
    assert_alive(qts);
    qpci_free_pc(bus);
    qtest_quit(qts);
    /* The loss is reported once; the unplug that follows adds nothing */
    assert_reported_once(err);
}

/* -- DMA and interrupts ---------------------------------------------------- */

/* Guest RAM in a shareable memfd: x-vfio-user-server maps only that. */
#define MEMFD_RAM \
    "-m 256M -object memory-backend-memfd,id=mem,size=256M,share=on " \
    "-machine memory-backend=mem"

#define WAIT_US             (10 * G_USEC_PER_SEC)

#define EDU_IRQ_STATUS      0x24
#define EDU_IRQ_RAISE       0x60
#define EDU_IRQ_ACK         0x64
#define EDU_DMA_SRC         0x80
#define EDU_DMA_DST         0x88
#define EDU_DMA_COUNT       0x90
#define EDU_DMA_CMD         0x98
#define EDU_DMA_RUN         0x1
#define EDU_DMA_TO_RAM      0x2
#define EDU_DMA_IRQ         0x4
#define EDU_DMA_BUF         0x40000

/* The PIIX3 routes slot 4's INTA to PIRQD; send that to ISA IRQ 11. */
#define PIIX3_DEVFN         QPCI_DEVFN(1, 0)
#define PIIX3_PIRQD         0x63
#define INTX_GSI            11

/* Wait until @cond holds, or fail after WAIT_US. */
#define WAIT_FOR(cond, what) do {                                         \
        gint64 deadline_ = g_get_monotonic_time() + WAIT_US;              \
        while (!(cond)) {                                                 \
            if (g_get_monotonic_time() > deadline_) {                     \
                g_error("timed out waiting for %s", what);                \
            }                                                             \
            g_usleep(2 * 1000);                                           \
        }                                                                 \
    } while (0)

static void fill_pattern(uint8_t *buf, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = seed + i * 7 + (i >> 8);
    }
}

/* Run one transfer of edu's DMA engine and wait for its end. */
static void edu_dma(QPCIDevice *dev, QPCIBar bar0, uint64_t src,
                    uint64_t dst, uint64_t len, uint64_t cmd)
{
    qpci_io_writeq(dev, bar0, EDU_DMA_SRC, src);
    qpci_io_writeq(dev, bar0, EDU_DMA_DST, dst);
    qpci_io_writeq(dev, bar0, EDU_DMA_COUNT, len);
    qpci_io_writeq(dev, bar0, EDU_DMA_CMD, EDU_DMA_RUN | cmd);
    WAIT_FOR(!(qpci_io_readq(dev, bar0, EDU_DMA_CMD) & EDU_DMA_RUN),
             "edu's DMA to complete");
}

/*
 * edu's DMA engine over x-vfio-user-server reaches guest RAM through the
 * memfd the client passed with DMA_MAP: a buffer goes from guest RAM into
 * edu and back out to another address.
 */
static void test_edu_dma(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, MEMFD_RAM);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    g_autofree uint8_t *in = g_malloc(4096);
    g_autofree uint8_t *out = g_malloc(4096);
    g_autofree uint8_t *zero = g_malloc0(4096);
    static const struct {
        uint64_t src, dst, len, bufoff;
    } xfers[] = {
        { 0x100000, 0x180000, 4096, 0 },
        /* unaligned, partial, into the middle of edu's buffer */
        { 0x234567, 0x3456789, 1000, 0x123 },
        /* the end of guest RAM, both ways */
        { 0x10000000 - 4096, 0x10000000 - 8192, 4096, 0 },
        { 0x8, 0x9000000, 1, 0xfff },
    };
    int fds0 = 0;

    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < ARRAY_SIZE(xfers); i++) {
            uint64_t len = xfers[i].len;

            fill_pattern(in, len, round * 16 + i);
            qtest_memwrite(qts, xfers[i].src, in, len);
            qtest_memwrite(qts, xfers[i].dst, zero, len);
            /* RAM to edu, then edu to RAM */
            edu_dma(dev, bar0, xfers[i].src, EDU_DMA_BUF + xfers[i].bufoff,
                    len, 0);
            edu_dma(dev, bar0, EDU_DMA_BUF + xfers[i].bufoff, xfers[i].dst,
                    len, EDU_DMA_TO_RAM);
            qtest_memread(qts, xfers[i].dst, out, len);
            g_assert(memcmp(in, out, len) == 0);
        }
        if (round == 0) {
            fds0 = test_count_fds(qtest_pid(qts));
        }
    }
    /* Many transfers leave no descriptor behind. */
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);

    client_end(qts, bus, dev, bar0);
}

/*
 * MSI: the guest points edu's MSI at a RAM address.  edu raises its
 * interrupt in the server; the client's eventfd fires and the vfio-pci
 * base writes the MSI message, which lands in guest RAM.
 */
static void test_edu_msi(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, MEMFD_RAM);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    const uint64_t msi_addr = 0x1f0000;
    uint8_t msi = qpci_find_capability(dev, PCI_CAP_ID_MSI, 0);
    uint16_t ctrl;
    uint8_t buf[64], out[64];

    g_assert(msi);
    ctrl = qpci_config_readw(dev, msi + PCI_MSI_FLAGS);
    g_assert(ctrl & PCI_MSI_FLAGS_64BIT);
    qpci_config_writel(dev, msi + PCI_MSI_ADDRESS_LO, msi_addr);
    qpci_config_writel(dev, msi + PCI_MSI_ADDRESS_HI, 0);
    qpci_config_writew(dev, msi + PCI_MSI_DATA_64, 0x4321);
    qpci_config_writew(dev, msi + PCI_MSI_FLAGS, ctrl | PCI_MSI_FLAGS_ENABLE);
    g_assert(qpci_config_readw(dev, msi + PCI_MSI_FLAGS) &
             PCI_MSI_FLAGS_ENABLE);

    for (int i = 0; i < 4; i++) {
        qtest_writel(qts, msi_addr, 0);
        /* edu's interrupt raise register */
        qpci_io_writel(dev, bar0, EDU_IRQ_RAISE, 1u << i);
        WAIT_FOR(qtest_readl(qts, msi_addr) == 0x4321, "the MSI write");
        g_assert_cmphex(qpci_io_readl(dev, bar0, EDU_IRQ_STATUS), ==,
                        1u << i);
        qpci_io_writel(dev, bar0, EDU_IRQ_ACK, 1u << i);
    }

    /* The end of a DMA transfer raises it too, when asked. */
    qtest_writel(qts, msi_addr, 0);
    fill_pattern(buf, sizeof(buf), 0x42);
    qtest_memwrite(qts, 0x120000, buf, sizeof(buf));
    edu_dma(dev, bar0, 0x120000, EDU_DMA_BUF, sizeof(buf), EDU_DMA_IRQ);
    WAIT_FOR(qtest_readl(qts, msi_addr) == 0x4321, "the DMA's MSI write");
    g_assert_cmphex(qpci_io_readl(dev, bar0, EDU_IRQ_STATUS), ==, 0x100);
    qpci_io_writel(dev, bar0, EDU_IRQ_ACK, 0x100);
    edu_dma(dev, bar0, EDU_DMA_BUF, 0x130000, sizeof(buf), EDU_DMA_TO_RAM);
    qtest_memread(qts, 0x130000, out, sizeof(out));
    g_assert(memcmp(buf, out, sizeof(buf)) == 0);

    client_end(qts, bus, dev, bar0);
}

/* Route slot 4's INTA to INTX_GSI and watch that IOAPIC input. */
static void intx_setup(QTestState *qts, QPCIBus *bus)
{
    QPCIDevice *piix3 = qpci_device_find(bus, PIIX3_DEVFN);

    g_assert(piix3);
    qpci_config_writeb(piix3, PIIX3_PIRQD, INTX_GSI);
    g_free(piix3);
    qtest_irq_intercept_in(qts, "ioapic");
}

/*
 * INTx: edu raises its interrupt line in the server; the client's eventfd
 * asserts INTA, which reaches the IOAPIC; the guest's next access to the
 * device is the end of interrupt, after which INTA follows edu's line:
 * up until the guest acknowledges the interrupt, down after.
 */
static void test_edu_intx(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, MEMFD_RAM);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);

    g_assert_cmpint(qpci_config_readb(dev, PCI_INTERRUPT_PIN), ==, 1);
    intx_setup(qts, bus);
    g_assert_false(qtest_get_irq(qts, INTX_GSI));

    for (int i = 0; i < 4; i++) {
        qpci_io_writel(dev, bar0, EDU_IRQ_RAISE, 1u << i);
        WAIT_FOR(qtest_get_irq(qts, INTX_GSI), "INTx");
        /*
         * This access is the end of interrupt; INTx is level-triggered
         * and edu still asserts it until acknowledged: it is asserted
         * again (it used to be lost: the eventfd only signals the rise).
         */
        g_assert_cmphex(qpci_io_readl(dev, bar0, EDU_IRQ_STATUS), ==,
                        1u << i);
        WAIT_FOR(qtest_get_irq(qts, INTX_GSI), "INTx still asserted");
        qpci_io_writel(dev, bar0, EDU_IRQ_ACK, 1u << i);
        g_assert_cmphex(qpci_io_readl(dev, bar0, EDU_IRQ_STATUS), ==, 0);
        g_assert_false(qtest_get_irq(qts, INTX_GSI));
    }
    g_assert_false(qtest_get_irq(qts, INTX_GSI));

    client_end(qts, bus, dev, bar0);
}

/* The file of @s's directory named @name (removed with the server). */
/* Wait for the server to exit by itself; its exit status. */
static int server_wait_exit(Server *s)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;
    int status;
    pid_t ret;

    while ((ret = waitpid(s->pid, &status, WNOHANG)) == 0) {
        if (g_get_monotonic_time() > deadline) {
            g_error("server %d did not exit", s->pid);
        }
        g_usleep(5 * 1000);
    }
    g_assert_cmpint(ret, ==, s->pid);
    g_spawn_close_pid(s->pid);
    s->pid = 0;
    return status;
}

/*
 * libvfio-user's "server" sample with guest RAM that has no fd: the
 * server gets DMA maps without fds.  Its BAR0 timer, once it fires, raises
 * INTx and then does a DMA_WRITE of 4 KiB of 'A' at the start of its
 * first map, and a DMA_READ of them back; it exits with failure if that
 * fails or the CRCs differ, and with success when the client hangs up.
 */
static void test_server_dma_messages(void)
{
    g_autoptr(Server) s = sample_start("server", "-v");
    g_autofree char *trace = server_file(s, "trace.log");
    g_autofree char *extra = g_strdup_printf(
        "-m 128M -trace vfio_user_request -trace vfio_user_dma -D %s",
        trace);
    QTestState *qts = client_start(s, extra);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    g_autofree uint8_t *buf = g_malloc(4096);
    g_autofree uint8_t *want = g_malloc(4096);
    QPCIBar bar1 = qpci_iomap(dev, 1, NULL);
    int status;

    /* The maps went out without fds; the first one is at 0 */
    g_assert(file_contains(trace, "map iova 0x0 size 0xa0000 fd -1: 0"));
    g_assert(!file_contains(trace, "fd -1: -"));

    intx_setup(qts, bus);
    memset(want, 'A', 4096);
    memset(buf, 0x5a, 4096);
    qtest_memwrite(qts, 0, buf, 4096);

    /*
     * Fire the timer.  The guest cannot arm it: BAR0 is an I/O BAR that
     * takes only 8-byte accesses (a time_t), and x86 port I/O is at most
     * 4 bytes wide (the client splits nothing: two outl reach the sample
     * as two refused 4-byte REGION_WRITEs).  All the timer does is send
     * SIGALRM to the sample, which interrupts its wait for a message; so
     * send it ourselves, once the sample is idle in that wait.  From then
     * on leave the device alone: the sample expects the replies to its
     * DMA requests as the very next messages it reads.
     */
    g_usleep(100 * 1000);
    g_assert_cmpint(kill(s->pid, SIGALRM), ==, 0);
    WAIT_FOR(qtest_get_irq(qts, INTX_GSI), "the sample's INTx");
    WAIT_FOR((qtest_memread(qts, 0, buf, 4096), !memcmp(buf, want, 4096)),
             "the sample's DMA_WRITE");
    /*
     * Once the client has received the DMA_READ, its own messages wait
     * for the reply to go first.
     */
    WAIT_FOR(file_contains(trace, "DMA_READ error 0"), "the DMA_READ");
    g_assert(file_contains(trace, "DMA_WRITE error 0"));

    /*
     * A BAR access is the end of interrupt; the sample still answers
     * (BAR1 page 1 is served by messages from the start of BAR1).
     */
    qpci_io_writel(dev, bar1, 0, 0x600dda7a);
    g_assert_cmphex(qpci_io_readl(dev, bar1, 0x1000), ==, 0x600dda7a);
    g_assert_false(qtest_get_irq(qts, INTX_GSI));

    qpci_iounmap(dev, bar1);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);

    status = server_wait_exit(s);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_autofree char *log = NULL;

        g_file_get_contents(s->log, &log, NULL, NULL);
        g_error("the sample failed (status 0x%x):\n%s", status, log);
    }
}

/* -- the server's DMA requests, checked --------------------------------- */


/*
 * The next event @event (for command @cmd if >= 0) in the fault server's
 * log, after those already returned; waits for it.
 */
static QDict *fault_event(Server *s, const char *event, int cmd)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;

    for (;;) {
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        int i;

        g_assert(g_file_get_contents(s->log, &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (i = s->log_pos; lines[i] && lines[i + 1]; i++) {
            QDict *ev;

            if (lines[i][0] != '{') {
                continue;
            }
            ev = qobject_to(QDict, qobject_from_json(lines[i], &error_abort));
            g_assert(ev);
            if (!strcmp(qdict_get_str(ev, "event"), event) &&
                (cmd < 0 || qdict_get_int(ev, "cmd") == cmd)) {
                s->log_pos = i + 1;
                return ev;
            }
            qobject_unref(ev);
        }
        if (g_get_monotonic_time() > deadline) {
            g_error("no %s event for command %d in the fault server's "
                    "log:\n%s", event, cmd, text);
        }
        g_usleep(2 * 1000);
    }
}

/* Make the fault server run DMA command @cmd; return its errno. */
static int fault_dma(QPCIDevice *dev, QPCIBar bar0, Server *s, int cmd,
                     uint64_t addr, QDict **ev)
{
    QDict *e;
    int err;

    qpci_io_writel(dev, bar0, FAULT_ADDR, addr);
    qpci_io_writel(dev, bar0, FAULT_ADDR + 4, addr >> 32);
    qpci_io_writel(dev, bar0, FAULT_CMD, cmd);
    e = fault_event(s, "dma-reply", cmd);
    err = qdict_get_int(e, "error");
    if (ev) {
        *ev = e;
    } else {
        qobject_unref(e);
    }
    return err;
}

static void assert_event_data(QDict *ev, const void *want, size_t len)
{
    g_autofree char *hex = g_malloc(len * 2 + 1);

    for (size_t i = 0; i < len; i++) {
        sprintf(hex + 2 * i, "%02x", ((const uint8_t *)want)[i]);
    }
    g_assert_cmpstr(qdict_get_str(ev, "data"), ==, hex);
}

/*
 * The fault server's DMA requests against guest RAM without an fd (so
 * every map goes without one): the client checks each against its maps
 * and their permissions and against its max_data_xfer_size, answers the
 * bad ones with errors and no effect, serves the good ones, and serves
 * one while a vCPU waits for the server to answer a REGION_READ.
 */
static void test_fault_dma(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    uint8_t pat[64], buf[64], ones[16];
    int fds0 = 0, round;
    uint64_t rom;
    QDict *ev;

    /* The maps: RAM read-write, the ROMs read-only, none with an fd */
    ev = fault_event(s, "dma-map", -1);
    g_assert_cmphex(qdict_get_int(ev, "addr"), ==, 0);
    g_assert_cmphex(qdict_get_int(ev, "size"), ==, 0xa0000);
    g_assert_cmpint(qdict_get_int(ev, "flags"), ==, 3);
    g_assert_false(qdict_get_bool(ev, "fd"));
    qobject_unref(ev);
    ev = fault_event(s, "dma-map", -1);
    g_assert_cmphex(qdict_get_int(ev, "addr"), ==, 0xc0000);
    g_assert_cmpint(qdict_get_int(ev, "flags"), ==, 1);
    qobject_unref(ev);
    ev = fault_event(s, "dma-map", -1);
    g_assert_cmphex(qdict_get_int(ev, "addr"), ==, 0xe0000);
    g_assert_cmpint(qdict_get_int(ev, "flags"), ==, 1);
    qobject_unref(ev);
    ev = fault_event(s, "dma-map", -1);
    g_assert_cmphex(qdict_get_int(ev, "addr"), ==, 0x100000);
    g_assert_cmpint(qdict_get_int(ev, "flags"), ==, 3);
    qobject_unref(ev);

    for (round = 0; round < 4; round++) {
        fill_pattern(pat, sizeof(pat), round);

        /* Outside every map */
        g_assert_cmpint(fault_dma(dev, bar0, s, 1, 0, NULL), ==, EFAULT);

        /* More than the max_data_xfer_size the client proposed */
        g_assert_cmpint(fault_dma(dev, bar0, s, 2, 0, &ev), ==, EINVAL);
        g_assert_cmpint(qdict_get_int(ev, "len"), ==, 0);
        qobject_unref(ev);
        /* ... while exactly that much goes through */
        qtest_memwrite(qts, 0x100000, pat, sizeof(pat));
        g_assert_cmpint(fault_dma(dev, bar0, s, 6, 0, &ev), ==, 0);
        g_assert_cmpint(qdict_get_int(ev, "len"), ==, CLIENT_MAX_XFER);
        assert_event_data(ev, pat, sizeof(pat));
        qobject_unref(ev);

        /* A write to a read-only map (the option ROM area) */
        rom = qtest_readq(qts, 0xc0000);
        g_assert_cmpint(fault_dma(dev, bar0, s, 3, 0, NULL), ==, EPERM);
        g_assert_cmphex(qtest_readq(qts, 0xc0000), ==, rom);

        /* A read across two adjacent maps (0xc0000 and 0xe0000) */
        qtest_memread(qts, 0xdfff8, buf, 16);
        g_assert_cmpint(fault_dma(dev, bar0, s, 8, 0, &ev), ==, 0);
        assert_event_data(ev, buf, 16);
        qobject_unref(ev);

        /*
         * A write that starts in a map and runs off its end (0xa0000 is
         * VGA, not RAM): refused, and none of it is written.
         */
        memset(ones, 0xff, sizeof(ones));
        qtest_memwrite(qts, 0x9fff8, ones, 8);
        g_assert_cmpint(fault_dma(dev, bar0, s, 7, 0x9fff8, NULL), ==,
                        EFAULT);
        g_assert_cmphex(qtest_readq(qts, 0x9fff8), ==, UINT64_MAX);

        /* A good write and read back */
        qtest_memwrite(qts, 0x123450, pat, 16);
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0x123450, &ev), ==, 0);
        memset(buf, 0xa5, 16);
        assert_event_data(ev, buf, 16);
        qobject_unref(ev);
        qtest_memread(qts, 0x123450, pat, 16);
        g_assert(!memcmp(pat, buf, 16));

        /*
         * A DMA_READ while the vCPU waits for a REGION_READ: the server
         * answers the read only once it has its DMA data.
         */
        fill_pattern(pat, sizeof(pat), 0x80 + round);
        qtest_memwrite(qts, 0x54320, pat, 16);
        qpci_io_writel(dev, bar0, FAULT_ARMED_REG, 0xfeed0000 + round);
        qpci_io_writel(dev, bar0, FAULT_ADDR, 0x54320);
        qpci_io_writel(dev, bar0, FAULT_ADDR + 4, 0);
        qpci_io_writel(dev, bar0, FAULT_CMD, 4);
        qobject_unref(fault_event(s, "armed", -1));
        g_assert_cmphex(qpci_io_readl(dev, bar0, FAULT_ARMED_REG), ==,
                        0xfeed0000 + round);
        ev = fault_event(s, "dma-reply", 4);
        g_assert_cmpint(qdict_get_int(ev, "error"), ==, 0);
        assert_event_data(ev, pat, 16);
        qobject_unref(ev);

        if (round == 0) {
            fds0 = test_count_fds(qtest_pid(qts));
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);
    assert_alive(qts);

    client_end(qts, bus, dev, bar0);
}

/*
 * A DMA_WRITE larger than the client's max_data_xfer_size breaks the
 * protocol: the client does not read it (it could be 4 GiB), none of its
 * data reaches guest memory, and the server is lost: the device reads
 * all ones, QEMU goes on.
 */
static void test_fault_dma_big_write(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    uint64_t before = qtest_readq(qts, 0x100000);

    qpci_io_writel(dev, bar0, 0x10, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0x12345678);
    qpci_io_writel(dev, bar0, FAULT_CMD, 9);
    qobject_unref(fault_event(s, "eof", -1));
    g_assert_cmphex(qtest_readq(qts, 0x100000), ==, before);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0xffffffff);
    assert_alive(qts);

    client_end(qts, bus, dev, bar0);
}

/*
 * A server that sends 10,000 valid DMA_READs back to back while nothing
 * of ours is outstanding, then 2,000 DMA_WRITEs of 64 KiB (125 MiB): all
 * answered, correctly and in order; QEMU's memory stays bounded (the
 * client stops reading while its queue is full); the device works on.
 */
static void test_fault_burst(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    g_autofree uint8_t *pat = g_malloc(4096);
    long rss0, rss1;
    QDict *ev;

    fill_pattern(pat, 4096, 0x42);
    qtest_memwrite(qts, 0x200000, pat, 4096);
    qpci_io_writel(dev, bar0, FAULT_ADDR, 0x200000);
    qpci_io_writel(dev, bar0, FAULT_ADDR + 4, 0);
    rss0 = rss_kib(qtest_pid(qts));

    qpci_io_writel(dev, bar0, FAULT_CMD, 10);
    ev = fault_event(s, "burst", -1);
    g_assert_cmpint(qdict_get_int(ev, "sent"), ==, 10000);
    g_assert_cmpint(qdict_get_int(ev, "answered"), ==, 10000);
    g_assert_cmpint(qdict_get_int(ev, "bad"), ==, 0);
    qobject_unref(ev);

    qpci_io_writel(dev, bar0, FAULT_ADDR, 0x300000);
    qpci_io_writel(dev, bar0, FAULT_CMD, 11);
    ev = fault_event(s, "burst", -1);
    g_assert_cmpint(qdict_get_int(ev, "answered"), ==, 2000);
    g_assert_cmpint(qdict_get_int(ev, "bad"), ==, 0);
    qobject_unref(ev);
    g_assert_cmphex(qtest_readb(qts, 0x30fff0), ==, 0x6b);
    rss1 = rss_kib(qtest_pid(qts));
    g_test_message("QEMU RSS %ld KiB before the bursts, %ld KiB after",
                   rss0, rss1);
    g_assert_cmpint(rss1 - rss0, <, 48 * 1024);

    /* The device works on */
    qpci_io_writel(dev, bar0, 0x10, 0xabcd1234);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0xabcd1234);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1af4);
    assert_alive(qts);
    client_end(qts, bus, dev, bar0);
}

/*
 * Unplug while the server hangs (reads, answers nothing): done within
 * one reply timeout in total, QMP answers afterwards, and the loss is
 * reported once (and, with reconnect-ms, not reconnected).
 */
static void test_unplug_hung(void)
{
    g_autoptr(Server) s = fault_start("device");
    g_autofree char *err = NULL;
    QTestState *qts = client_start_stderr(s, "-global "
                                          "vfio-user-pci.x-msg-timeout=2000 "
                                          "-global "
                                          "vfio-user-pci.reconnect-ms=50",
                                          &err);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    gint64 t0, ms;

    qpci_io_writel(dev, bar0, 0x10, 0x1234);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0x1234);
    qpci_io_writel(dev, bar0, FAULT_CMD, 12);
    qobject_unref(fault_event(s, "hanging", -1));

    qpci_iounmap(dev, bar0);
    g_free(dev);
    t0 = g_get_monotonic_time();
    qpci_unplug_acpi_device_test(qts, "vu0", SLOT);
    ms = (g_get_monotonic_time() - t0) / 1000;
    g_test_message("unplug with a hung server: %" PRId64 " ms "
                   "(reply timeout 2000 ms)", ms);
    g_assert_cmpint(ms, <, 3000);
    /* A loss during the unplug schedules no reconnect of a freed device */
    g_usleep(300 * 1000);
    assert_alive(qts);
    qpci_free_pc(bus);
    qtest_quit(qts);
    assert_reported_once(err);
}

/* i440FX's PAM register for 0xc0000-0xc7fff: 3 RAM, 1 RAM read-only, 0 ROM */
#define I440FX_PAM_C0       0x5a

static const uint8_t pam_states[] = { 0x33, 0x11, 0x00 };

/*
 * The guest remaps memory under the device's feet: toggling the i440FX's
 * PAM register for 0xc0000-0xc7fff turns it into RAM, read-only RAM, or
 * back to the option ROM area.  Each change unmaps and maps again; the
 * server's DMA there must follow (written when RAM, refused otherwise),
 * and the churn must leave no descriptor behind.
 */
static void test_fault_dma_remap(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIDevice *host = qpci_device_find(bus, QPCI_DEVFN(0, 0));
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    int fds0 = 0;

    g_assert(host);
    for (int round = 0; round < 12; round++) {
        uint8_t pam = pam_states[round % 3];
        uint64_t v;

        qpci_config_writeb(host, I440FX_PAM_C0, pam);
        qtest_writeq(qts, 0xc0000, 0x0123456789abcdefULL);
        v = qtest_readq(qts, 0xc0000);
        if (pam == 0x33) {
            g_assert_cmphex(v, ==, 0x0123456789abcdefULL);
            g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0xc0000, NULL), ==, 0);
            g_assert_cmphex(qtest_readq(qts, 0xc0000), ==,
                            0xa5a5a5a5a5a5a5a5ULL);
        } else {
            g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0xc0000, NULL), ==,
                            EPERM);
            g_assert_cmphex(qtest_readq(qts, 0xc0000), ==, v);
        }
        /* The rest of memory is unaffected */
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0x123450, NULL), ==, 0);
        if (round == 2) {
            fds0 = test_count_fds(qtest_pid(qts));
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);

    qpci_iounmap(dev, bar0);
    g_free(host);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/*
 * The same churn with fd-backed RAM and x-vfio-user-server: each map of
 * RAM goes with its memfd, which the server maps and must let go of when
 * it is unmapped; edu's DMA into the remapped range lands in guest RAM.
 * Neither process keeps descriptors from it.
 */
static void test_edu_dma_remap(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, MEMFD_RAM);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIDevice *host = qpci_device_find(bus, QPCI_DEVFN(0, 0));
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    uint8_t in[64], out[64];
    int fds0 = 0, sfds0 = 0;

    g_assert(host);
    for (int round = 0; round < 9; round++) {
        uint8_t pam = pam_states[round % 3];

        qpci_config_writeb(host, I440FX_PAM_C0, pam);
        if (pam == 0x33) {
            fill_pattern(in, sizeof(in), round);
            qtest_memwrite(qts, 0x100000, in, sizeof(in));
            edu_dma(dev, bar0, 0x100000, EDU_DMA_BUF, sizeof(in), 0);
            edu_dma(dev, bar0, EDU_DMA_BUF, 0xc0000, sizeof(in),
                    EDU_DMA_TO_RAM);
            qtest_memread(qts, 0xc0000, out, sizeof(out));
            g_assert(!memcmp(in, out, sizeof(in)));
        } else if (pam == 0x11) {
            /*
             * Read-only RAM: the server maps it read-only and the
             * device's write is dropped (patch "vfio-user-obj: map
             * read-only DMA regions read-only"), not a crash.
             */
            qtest_memread(qts, 0xc0000, in, sizeof(in));
            fill_pattern(out, sizeof(out), round + 100);
            qtest_memwrite(qts, 0x100000, out, sizeof(out));
            edu_dma(dev, bar0, 0x100000, EDU_DMA_BUF, sizeof(out), 0);
            edu_dma(dev, bar0, EDU_DMA_BUF, 0xc0000, sizeof(out),
                    EDU_DMA_TO_RAM);
            qtest_memread(qts, 0xc0000, out, sizeof(out));
            g_assert(!memcmp(in, out, sizeof(in)));
        }
        if (round == 2) {
            fds0 = test_count_fds(qtest_pid(qts));
            sfds0 = test_count_fds(s->pid);
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);
    /* The server closes an unmapped region's fd after an RCU grace period */
    for (int i = 0; i < 100 && test_count_fds(s->pid) > sfds0; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(test_count_fds(s->pid), <=, sfds0);

    qpci_iounmap(dev, bar0);
    g_free(host);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/*
 * How many @event events with @key (if not NULL) @value, and @key2 (if
 * not NULL) @value2, are logged?
 */
static int fault_count_where2(Server *s, const char *event, const char *key,
                              int64_t value, const char *key2,
                              int64_t value2)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int n = 0;

    g_assert(g_file_get_contents(s->log, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (int i = 0; lines[i] && lines[i + 1]; i++) {
        QDict *ev = qobject_to(QDict, qobject_from_json(lines[i],
                                                        &error_abort));

        if (!strcmp(qdict_get_str(ev, "event"), event) &&
            (!key || qdict_get_int(ev, key) == value) &&
            (!key2 || qdict_get_int(ev, key2) == value2)) {
            n++;
        }
        qobject_unref(ev);
    }
    return n;
}

/* How many events @event with @addr and @size the fault server logged. */
static int fault_count(Server *s, const char *event, uint64_t addr,
                       uint64_t size)
{
    return fault_count_where2(s, event, "addr", addr, "size", size);
}

/* The ACPI memory hotplug registers of a pc machine (PIIX4 PM) */
#define MEMHP_IO            0x0a00
#define MEMHP_SLOT          0x00
#define MEMHP_FLAGS         0x14
#define MEMHP_EJECT         8

/*
 * Guest memory that comes and goes: a pc-dimm hot-plugged is mapped for
 * the server, with its RAM's fd, and the server may DMA to it; once the
 * guest ejected it, it is unmapped, and the server's DMA there is
 * refused.  Twice, with the same slot.
 */
static void test_dimm_hotplug(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M,slots=2,maxmem=1G");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    const uint64_t size = 128 * MiB;

    for (int round = 0; round < 2; round++) {
        QDict *resp, *ev;
        uint64_t addr;

        resp = qtest_qmp(qts, "{'execute': 'object-add', 'arguments': "
                         "{'qom-type': 'memory-backend-memfd', 'id': 'hp0', "
                         "'size': %" PRIu64 ", 'share': true}}", size);
        g_assert(qdict_haskey(resp, "return"));
        qobject_unref(resp);
        qtest_qmp_device_add(qts, "pc-dimm", "dimm0", "{'memdev': 'hp0'}");
        resp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': "
                         "{'path': 'dimm0', 'property': 'addr'}}");
        addr = qdict_get_int(resp, "return");
        qobject_unref(resp);

        /* Mapped with its fd: the server could mmap it */
        do {
            ev = fault_event(s, "dma-map", -1);
            if (qdict_get_int(ev, "addr") == addr) {
                break;
            }
            qobject_unref(ev);
        } while (true);
        g_assert_cmpuint(qdict_get_int(ev, "size"), ==, size);
        g_assert(qdict_get_bool(ev, "fd"));
        qobject_unref(ev);
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, addr + 0x1000, NULL), ==,
                        0);

        /* The guest ejects it (ACPI): unmapped, DMA refused */
        qtest_qmp_device_del_send(qts, "dimm0");
        qtest_outl(qts, MEMHP_IO + MEMHP_SLOT, 0);
        qtest_outl(qts, MEMHP_IO + MEMHP_FLAGS, MEMHP_EJECT);
        qtest_qmp_eventwait(qts, "DEVICE_DELETED");
        ev = fault_event(s, "dma-unmap", -1);
        g_assert_cmpuint(qdict_get_int(ev, "addr"), ==, addr);
        g_assert_cmpuint(qdict_get_int(ev, "size"), ==, size);
        qobject_unref(ev);
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, addr + 0x1000, NULL), ==,
                        EFAULT);
        resp = qtest_qmp(qts, "{'execute': 'object-del', 'arguments': "
                         "{'id': 'hp0'}}");
        g_assert(qdict_haskey(resp, "return"));
        qobject_unref(resp);
    }
    client_end(qts, bus, dev, bar0);
}

/*
 * The server refuses one DMA_MAP (of 0xc0000-0xc7fff once PAM makes it
 * RAM): the client reports it, forgets the range (the server's DMA there
 * is refused as outside every map) and does not unmap what the server
 * never mapped; the device goes on working.
 */
static void test_fault_dma_map_refused(void)
{
    g_autoptr(Server) s = fault_start_opt("device", "--refuse-map",
                                          "0xc0000+0x8000");
    QTestState *qts = client_start(s, "-m 128M");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIDevice *host = qpci_device_find(bus, QPCI_DEVFN(0, 0));
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);

    g_assert(host);
    for (int round = 0; round < 3; round++) {
        qpci_config_writeb(host, I440FX_PAM_C0, 0x33);
        qobject_unref(fault_event(s, "dma-map-refused", -1));
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0xc0000, NULL), ==,
                        EFAULT);
        /* The rest of the new layout was mapped */
        g_assert_cmpint(fault_dma(dev, bar0, s, 8, 0, NULL), ==, 0);
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0x123450, NULL), ==, 0);

        qpci_config_writeb(host, I440FX_PAM_C0, 0x00);
        g_assert_cmpint(fault_dma(dev, bar0, s, 5, 0xc0000, NULL), ==,
                        EPERM);
        g_assert_cmpint(fault_count(s, "dma-unmap", 0xc0000, 0x8000), ==, 0);
        g_assert_cmpint(fault_count(s, "dma-map", 0xc0000, 0x20000), ==,
                        round + 2);
    }
    assert_alive(qts);

    qpci_iounmap(dev, bar0);
    g_free(host);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* -- nvme over x-vfio-user-server, with MSI-X ---------------------------- */

#define NVME_CC             0x14
#define NVME_CSTS           0x1c
#define NVME_AQA            0x24
#define NVME_ASQ            0x28
#define NVME_ACQ            0x30
#define NVME_SQ0TDBL        0x1000
#define NVME_CQ0HDBL        0x1004

/*
 * The SET_IRQS the client sent for MSI-X (index 2) with eventfds
 * (DATA_EVENTFD | ACTION_TRIGGER): each must carry one real fd per
 * vector (a vfio-user server takes no fd -1); returns how many vectors
 * got one.  Also counts the MSI-X unmask hints.
 */
static int msix_eventfd_vectors(const char *trace, int *unmasks)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int vectors = 0;

    *unmasks = 0;
    g_assert(g_file_get_contents(trace, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        const char *p = strstr(lines[i], ": flags 0x");
        unsigned flags, index, start, count, nfds;

        if (!strstr(lines[i], "vfio_user_set_irqs") || !p ||
            sscanf(p, ": flags 0x%x index %u start %u count %u fds %u",
                   &flags, &index, &start, &count, &nfds) != 5 ||
            index != VFIO_PCI_MSIX_IRQ_INDEX) {
            continue;
        }
        if (flags == (VFIO_IRQ_SET_DATA_EVENTFD |
                      VFIO_IRQ_SET_ACTION_TRIGGER)) {
            if (nfds != count) {
                g_error("SET_IRQS for MSI-X without an eventfd for every "
                        "vector: %s", lines[i]);
            }
            vectors += count;
        } else if (flags == (VFIO_IRQ_SET_DATA_NONE |
                             VFIO_IRQ_SET_ACTION_UNMASK)) {
            *unmasks += count;
        }
    }
    return vectors;
}

/* Program MSI-X vector @v to write @data at @addr, and unmask it. */
static void msix_vector_setup(QPCIDevice *dev, int v, uint64_t addr,
                              uint32_t data)
{
    uint64_t off = dev->msix_table_off + v * PCI_MSIX_ENTRY_SIZE;

    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_LOWER_ADDR,
                   addr);
    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_UPPER_ADDR,
                   addr >> 32);
    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_DATA, data);
    qpci_io_writel(dev, dev->msix_table_bar,
                   off + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
}

/*
 * nvme over x-vfio-user-server with MSI-X: the guest's unmasking of
 * table entries reaches the server as SET_IRQS with eventfds (and unmask
 * hints), and an admin command (Identify) completes with the controller's
 * data in guest RAM and its MSI-X message in guest RAM too.
 */
static void test_nvme_msix(void)
{
    g_autoptr(Server) s = remote_start("nvme,serial=deadbeef");
    g_autofree char *trace = server_file(s, "trace.log");
    g_autofree char *extra = g_strdup_printf(
        MEMFD_RAM " -trace vfio_user_set_irqs -D %s", trace);
    QTestState *qts = client_start(s, extra);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    const uint64_t asq = 0x400000, acq = 0x401000, idbuf = 0x402000;
    const uint64_t msi_addr = 0x1e0000;
    uint8_t sqe[64] = { 0 }, cqe[16], id[24];
    int vectors, unmasks;
    QPCIBar bar0;

    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1b36);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, 0x0010);
    qpci_msix_enable(dev);
    /* The MSI-X table is in BAR0, with the registers */
    g_assert_cmphex(qpci_config_readl(dev, qpci_find_capability(
                        dev, PCI_CAP_ID_MSIX, 0) + PCI_MSIX_TABLE) &
                    PCI_MSIX_FLAGS_BIRMASK, ==, 0);
    bar0 = dev->msix_table_bar;
    g_assert_cmpint(msix_eventfd_vectors(trace, &unmasks), ==, 0);

    /* Vector 0 (the admin queue's), then 2, then 1 */
    msix_vector_setup(dev, 0, msi_addr, 0x5678);
    g_assert_cmpint(msix_eventfd_vectors(trace, &unmasks), >=, 1);
    g_assert_cmpint(unmasks, >=, 1);
    msix_vector_setup(dev, 2, msi_addr + 8, 0x5679);
    msix_vector_setup(dev, 1, msi_addr + 4, 0x567a);
    vectors = msix_eventfd_vectors(trace, &unmasks);
    g_assert_cmpint(vectors, >=, 3);
    g_assert_cmpint(unmasks, >=, 3);
    g_assert_false(qpci_msix_masked(dev, 0));

    /* Bring the controller up with an admin queue pair of 8 entries */
    qpci_io_writel(dev, bar0, NVME_CC, 0);
    WAIT_FOR(!(qpci_io_readl(dev, bar0, NVME_CSTS) & 1), "CSTS.RDY = 0");
    qpci_io_writel(dev, bar0, NVME_AQA, 0x00070007);
    qpci_io_writeq(dev, bar0, NVME_ASQ, asq);
    qpci_io_writeq(dev, bar0, NVME_ACQ, acq);
    qtest_memset(qts, acq, 0, 4096);
    qtest_writel(qts, msi_addr, 0);
    /* EN, 4 KiB pages, 64-byte SQEs, 16-byte CQEs */
    qpci_io_writel(dev, bar0, NVME_CC, 0x00460001);
    WAIT_FOR(qpci_io_readl(dev, bar0, NVME_CSTS) & 1, "CSTS.RDY = 1");

    /* Identify Controller into idbuf */
    sqe[0] = 0x06;
    stw_le_p(sqe + 2, 0x1234);
    stq_le_p(sqe + 24, idbuf);
    stl_le_p(sqe + 40, 1);
    qtest_memwrite(qts, asq, sqe, sizeof(sqe));
    qpci_io_writel(dev, bar0, NVME_SQ0TDBL, 1);

    WAIT_FOR((qtest_memread(qts, acq, cqe, sizeof(cqe)), cqe[14] & 1),
             "the Identify completion");
    g_assert_cmphex(lduw_le_p(cqe + 12), ==, 0x1234);
    g_assert_cmphex(lduw_le_p(cqe + 14) >> 1, ==, 0);
    qtest_memread(qts, idbuf, id, sizeof(id));
    g_assert_cmphex(lduw_le_p(id), ==, 0x1b36);
    g_assert(!memcmp(id + 4, "deadbeef            ", 20));
    WAIT_FOR(qtest_readl(qts, msi_addr) == 0x5678, "the MSI-X message");
    qpci_io_writel(dev, bar0, NVME_CQ0HDBL, 1);
    /* The other vectors stayed quiet */
    g_assert_cmphex(qtest_readl(qts, msi_addr + 4), ==, 0);
    g_assert_cmphex(qtest_readl(qts, msi_addr + 8), ==, 0);

    /* The whole trace, once more: no vector ever went without an fd */
    g_assert_cmpint(msix_eventfd_vectors(trace, &unmasks), >=, vectors);

    qpci_msix_disable(dev);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
}

/* -- hot-plug ------------------------------------------------------------ */

static void test_hotplug(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    QTestState *qts = qtest_init("-machine pc -display none");
    int i, fds0 = -1;

    for (i = 0; i < 20; i++) {
        g_autofree char *msg = device_add_error(qts, "vu0", s->sock);
        QPCIBus *bus;
        QPCIDevice *dev;

        g_assert_null(msg);
        bus = qpci_new_pc(qts, NULL);
        dev = qpci_device_find(bus, QPCI_DEVFN(SLOT, 0));
        g_assert(dev);
        g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==,
                        GPIO_VENDOR);
        g_free(dev);
        qpci_free_pc(bus);
        qpci_unplug_acpi_device_test(qts, "vu0", SLOT);
        if (i == 1) {
            /* after the first cycle, once lazily allocated things exist */
            fds0 = test_count_fds(qtest_pid(qts));
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);
    qtest_quit(qts);
}

/* -- reconnect (reconnect-ms, x-vfio-user-reconnect) ------------------- */

static int fault_count_where(Server *s, const char *event, const char *key,
                             int64_t value)
{
    return fault_count_where2(s, event, key, value, NULL, 0);
}

/* Eventfds sent for interrupt index @index */
static int fault_count_eventfds(Server *s, int index)
{
    return fault_count_where2(s, "set-irqs", "index", index, "fds", 1);
}

/* The next VFIO_USER_* event is @event, for device vu0 and @s's socket. */
static void reconnect_event(QTestState *qts, const char *event, Server *s)
{
    QDict *ev = qtest_qmp_eventwait_ref(qts, event);
    QDict *data = qdict_get_qdict(ev, "data");

    g_assert_cmpstr(qdict_get_str(data, "device-id"), ==, "vu0");
    g_assert_cmpstr(qdict_get_str(data, "socket"), ==, s->sock);
    if (!strcmp(event, "VFIO_USER_DISCONNECTED")) {
        g_assert(strlen(qdict_get_str(data, "reason")));
    }
    qobject_unref(ev);
}

/*
 * libvfio-user's gpio sample killed and started again, 20 times: the
 * device comes back each time by itself (reconnect-ms), reads correctly,
 * and QEMU keeps no descriptor or memory of the old connections.
 */
static void test_reconnect_gpio(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    g_autofree char *err = NULL;
    QTestState *qts = client_start_stderr(s, "-global "
                                          "vfio-user-pci.reconnect-ms=50",
                                          &err);
    int fds0 = 0;
    long rss0 = 0;

    gpio_check(qts);
    for (int i = 0; i < 20; i++) {
        gint64 t0;

        server_kill(s);
        reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
        t0 = g_get_monotonic_time();
        server_restart(s);
        reconnect_event(qts, "VFIO_USER_CONNECTED", s);
        if (i == 0) {
            g_test_message("reconnected %" PRId64 " ms after the restart",
                           (g_get_monotonic_time() - t0) / 1000);
        }
        gpio_check(qts);
        if (i == 1) {
            fds0 = test_count_fds(qtest_pid(qts));
            rss0 = rss_kib(qtest_pid(qts));
        }
    }
    g_assert_cmpint(test_count_fds(qtest_pid(qts)), <=, fds0);
    g_assert_cmpint(rss_kib(qtest_pid(qts)) - rss0, <, 4096);
    qtest_quit(qts);
    /* Each loss is reported once, each return too */
    g_assert_cmpint(file_count(err, "lost the server"), ==, 20);
    g_assert_cmpint(file_count(err, "connected again to"), ==, 20);
    g_assert_cmpint(file_count(err, "cannot reconnect"), ==, 0);
}

/*
 * edu over x-vfio-user-server, killed and started again: the new server's
 * edu starts from reset; the client re-sends the DMA maps (memfd) and
 * restores bus mastering and MSI, so DMA and MSI work again.
 */
static void test_reconnect_edu(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, MEMFD_RAM " -global "
                                   "vfio-user-pci.reconnect-ms=100");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    g_autofree uint8_t *in = g_malloc(4096);
    g_autofree uint8_t *out = g_malloc(4096);

    for (int round = 0; round < 2; round++) {
        fill_pattern(in, 4096, round);
        qtest_memwrite(qts, 0x100000, in, 4096);
        edu_dma(dev, bar0, 0x100000, EDU_DMA_BUF, 4096, 0);
        edu_dma(dev, bar0, EDU_DMA_BUF, 0x180000, 4096, EDU_DMA_TO_RAM);
        qtest_memread(qts, 0x180000, out, 4096);
        g_assert(!memcmp(in, out, 4096));
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0x010000ed);

        server_kill(s);
        reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0xffffffff);
        server_restart(s);
        reconnect_event(qts, "VFIO_USER_CONNECTED", s);
        /* A new edu: its registers are back to reset values */
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x00), ==, 0x010000ed);
        g_assert_cmphex(qpci_config_readw(dev, PCI_COMMAND) &
                        PCI_COMMAND_MASTER, ==, PCI_COMMAND_MASTER);
    }
    client_end(qts, bus, dev, bar0);
}

/*
 * A server that only drops the connection and accepts a new one keeps its
 * device state: the client reconnects, re-sends the DMA maps and the
 * interrupt eventfds, and what the guest wrote is still there.
 */
static void test_reconnect_keep_state(void)
{
    g_autoptr(Server) s = fault_start("device");
    QTestState *qts = client_start(s, "-m 128M -global "
                                   "vfio-user-pci.reconnect-ms=50");
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    int maps, intx, req;

    intx_setup(qts, bus);
    qpci_io_writel(dev, bar0, 0x20, 0x5eed5eed);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x20), ==, 0x5eed5eed);
    maps = fault_count_where(s, "dma-map", NULL, 0);
    g_assert_cmpint(maps, >, 0);
    /* INTx's eventfd, and the request notifier's */
    intx = fault_count_eventfds(s, VFIO_PCI_INTX_IRQ_INDEX);
    req = fault_count_eventfds(s, VFIO_PCI_REQ_IRQ_INDEX);
    g_assert_cmpint(intx, >, 0);
    g_assert_cmpint(req, >, 0);

    qpci_io_writel(dev, bar0, FAULT_CMD, 13);
    qobject_unref(fault_event(s, "dropped", -1));
    reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
    reconnect_event(qts, "VFIO_USER_CONNECTED", s);

    /* State kept, maps and the INTx eventfd sent again */
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x20), ==, 0x5eed5eed);
    g_assert_cmpint(fault_count_where(s, "dma-map", NULL, 0), ==, 2 * maps);
    g_assert_cmpint(fault_count_eventfds(s, VFIO_PCI_INTX_IRQ_INDEX), ==,
                    intx + 1);
    g_assert_cmpint(fault_count_eventfds(s, VFIO_PCI_REQ_IRQ_INDEX), ==,
                    req + 1);
    qpci_io_writel(dev, bar0, 0x24, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x24), ==, 0x12345678);
    client_end(qts, bus, dev, bar0);
}

/*
 * Another device on the socket path (edu where gpio was): refused, with
 * the reason, once; the device stays disconnected and QEMU alive; the
 * right server started later: connected again.
 */
static void test_reconnect_wrong_device(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    g_autoptr(Server) edu = NULL;
    g_autofree char *err = NULL;
    QTestState *qts = client_start_stderr(s, "-global "
                                          "vfio-user-pci.reconnect-ms=50",
                                          &err);

    gpio_check(qts);
    server_kill(s);
    reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
    unlink(s->sock);
    edu = remote_start_at("edu", s->sock);
    WAIT_FOR(file_count(err, "cannot reconnect") > 0,
             "the refusal of the other device");
    /* Several attempts, one report */
    g_usleep(300 * 1000);
    g_assert_cmpint(file_count(err, "cannot reconnect"), ==, 1);
    g_assert(file_contains(err, "a different device"));
    g_assert(file_contains(err, s->sock));
    assert_alive(qts);

    server_kill(edu);
    server_restart(s);
    reconnect_event(qts, "VFIO_USER_CONNECTED", s);
    gpio_check(qts);
    qtest_quit(qts);
}

/*
 * Management passes a connected socket (getfd) to a device whose server
 * died: x-vfio-user-reconnect connects it at once.
 */
static void test_reconnect_fd(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    QTestState *qts = client_start(s, NULL);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    QDict *resp;
    int fd;

    gpio_check(qts);
    server_kill(s);
    reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
    /* Not connected: the command refuses a connected device only */
    server_restart(s);

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_strlcpy(sun.sun_path, s->sock, sizeof(sun.sun_path));
    g_assert(!connect(fd, (struct sockaddr *)&sun, sizeof(sun)));
    qtest_qmp_fds_assert_success(qts, &fd, 1, "{'execute': 'getfd', "
                                 "'arguments': {'fdname': 'srv'}}");
    close(fd);
    resp = qtest_qmp(qts, "{'execute': 'x-vfio-user-reconnect', "
                     "'arguments': {'id': 'vu0', 'socket': "
                     "{'type': 'fd', 'str': 'srv'}}}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    qtest_qmp_eventwait(qts, "VFIO_USER_CONNECTED");
    gpio_check(qts);

    /* Connected: refused */
    resp = qtest_qmp(qts, "{'execute': 'x-vfio-user-reconnect', "
                     "'arguments': {'id': 'vu0', 'socket': "
                     "{'type': 'unix', 'path': %s}}}", s->sock);
    assert_contains(qdict_get_str(qdict_get_qdict(resp, "error"), "desc"),
                    "is connected");
    qobject_unref(resp);
    qtest_quit(qts);
}

/*
 * A system reset and device_del while an attempt waits for a server that
 * accepted and does not answer (a listening socket nobody serves), and
 * QEMU's quit while the server is away: none waits for the server.
 */
static void test_reconnect_unplug(void)
{
    g_autoptr(Server) s = sample_start("gpio-pci-idio-16", NULL);
    QTestState *qts = client_start(s, "-global vfio-user-pci.reconnect-ms=50"
                                   " -global vfio-user-pci.x-msg-timeout="
                                   "20000");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    gint64 t0;
    int lfd;

    gpio_check(qts);
    server_kill(s);
    reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
    unlink(s->sock);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_strlcpy(sun.sun_path, s->sock, sizeof(sun.sun_path));
    g_assert(!bind(lfd, (struct sockaddr *)&sun, sizeof(sun)));
    g_assert(!listen(lfd, 4));
    /* Let an attempt connect and wait for the VERSION reply */
    g_usleep(300 * 1000);
    /* A system reset in the middle of it does not wait for it */
    t0 = g_get_monotonic_time();
    qtest_qmp_assert_success(qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(qts, "RESET");
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
    g_usleep(300 * 1000);
    t0 = g_get_monotonic_time();
    qpci_unplug_acpi_device_test(qts, "vu0", SLOT);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
    assert_alive(qts);
    qtest_quit(qts);
    close(lfd);

    /* quit while the server is away */
    server_restart(s);
    qts = client_start(s, "-global vfio-user-pci.reconnect-ms=50");
    gpio_check(qts);
    server_kill(s);
    reconnect_event(qts, "VFIO_USER_DISCONNECTED", s);
    g_usleep(200 * 1000);
    t0 = g_get_monotonic_time();
    qtest_quit(qts);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
}

/* -- migration (protocol v2: DEVICE_FEATURE, MIG_DATA_READ/WRITE) ------ */

/*
 * Guest RAM the server can map (it DMA-writes it directly), and a guest
 * that does not run: memory is what the test writes.
 */
#define MIG_RAM_SIZE        (128 * MiB)
#define MIG_MACHINE         "-machine pc,memory-backend=mem -display none " \
    "-m 128M -object memory-backend-memfd,id=mem,size=128M,share=on "
/* The newer libvfio-user's server sample */
#define PEER_BAR1_SIZE      0x4000
/* Where its timer's DMA lands: directly at 0, by messages at 8 KiB */
#define PEER_DMA_DIRECT     0
#define PEER_DMA_MSG        8192

/*
 * A sample of the newer libvfio-user (VFIO_USER_TEST_LIBVFIO_USER),
 * verbose, with option @opt.
 */
static Server *peer_start_opt(const char *name, const char *opt)
{
    Server *s = server_new("peer.sock");
    g_autofree char *bin = peer_path(name);
    char *argv[] = { bin, (char *)"-v", (char *)opt, s->sock, NULL };

    if (!opt) {
        argv[2] = s->sock;
        argv[3] = NULL;
    }

    return server_spawn(argv, s);
}

static Server *peer_start(const char *name)
{
    return peer_start_opt(name, NULL);
}

/* A QEMU for migrations, its device on @s; @extra: more options. */
static QTestState *mig_start(Server *s, const char *extra)
{
    return qtest_initf(MIG_MACHINE "-device vfio-user-pci,id=vu0,addr=%d,"
                       "socket=%s %s", SLOT, s->sock, extra ?: "");
}

/* The destination QEMU, waiting for a migration on @uri. */
static QTestState *mig_start_incoming(Server *s, const char *extra,
                                      const char *uri)
{
    g_autofree char *opts = g_strdup_printf("%s -incoming %s", extra ?: "",
                                            uri);

    return mig_start(s, opts);
}

static void mig_set_bandwidth(QTestState *qts, uint64_t bytes_per_sec)
{
    qtest_qmp_assert_success(qts, "{'execute': 'migrate-set-parameters', "
                             "'arguments': {'max-bandwidth': %" PRIu64 "}}",
                             bytes_per_sec);
}

static void mig_migrate(QTestState *from, const char *uri)
{
    qtest_qmp_assert_success(from, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
}

/* The migration's status; its error in *@err (if not NULL). */
static char *mig_status(QTestState *qts, char **err)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'query-migrate'}");
    QDict *ret = qdict_get_qdict(resp, "return");
    char *status = g_strdup(qdict_get_try_str(ret, "status") ?: "none");

    if (err) {
        *err = g_strdup(qdict_get_try_str(ret, "error-desc"));
    }
    qobject_unref(resp);
    return status;
}

/* Wait (at most 60 s) for a final status; return it, error in *@err. */
static char *mig_wait_end(QTestState *qts, char **err)
{
    int i;

    for (i = 0; i < 6000; i++) {
        char *status = mig_status(qts, err);

        if (!strcmp(status, "completed") || !strcmp(status, "failed") ||
            !strcmp(status, "cancelled")) {
            return status;
        }
        g_free(status);
        if (err) {
            g_clear_pointer(err, g_free);
        }
        g_usleep(10 * 1000);
    }
    g_error("migration did not end");
}

static void mig_wait_status(QTestState *qts, const char *want)
{
    g_autofree char *err = NULL;
    g_autofree char *status = mig_wait_end(qts, &err);

    if (strcmp(status, want)) {
        g_error("migration %s (%s), expected %s", status, err ?: "", want);
    }
}

static bool vm_running(QTestState *qts)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'query-status'}");
    bool running = qdict_get_bool(qdict_get_qdict(resp, "return"),
                                  "running");

    qobject_unref(resp);
    return running;
}

/* BAR @n of the device as the (migrated) config space places it. */
static QPCIBar mig_bar(QPCIDevice *dev, int n)
{
    uint32_t val = qpci_config_readl(dev, PCI_BASE_ADDRESS_0 + 4 * n);
    QPCIBar bar = {
        .is_io = val & PCI_BASE_ADDRESS_SPACE_IO,
        .addr = val & (val & PCI_BASE_ADDRESS_SPACE_IO ?
                       PCI_BASE_ADDRESS_IO_MASK : PCI_BASE_ADDRESS_MEM_MASK),
    };

    g_assert(bar.addr);
    return bar;
}

static uint32_t peer_pattern(uint32_t off, uint32_t seed)
{
    return 0xc0de0000u ^ (off * 0x9e3779b1u) ^ seed;
}

static void peer_bar1_fill(QPCIDevice *dev, QPCIBar bar1, uint32_t seed)
{
    uint32_t off;

    for (off = 0; off < PEER_BAR1_SIZE; off += 4) {
        qpci_io_writel(dev, bar1, off, peer_pattern(off, seed));
    }
}

static void peer_bar1_check(QPCIDevice *dev, QPCIBar bar1, uint32_t seed)
{
    uint32_t off;

    for (off = 0; off < PEER_BAR1_SIZE; off += 4) {
        g_assert_cmphex(qpci_io_readl(dev, bar1, off), ==,
                        peer_pattern(off, seed));
    }
}

/* Arm the sample's BAR0 timer to fire in @secs seconds (two halves). */
static void peer_arm_timer(QPCIDevice *dev, QPCIBar bar0, int secs)
{
    uint64_t when = time(NULL) + secs;

    qpci_io_writel(dev, bar0, 0, (uint32_t)when);
    qpci_io_writel(dev, bar0, 4, when >> 32);
}

/* The timer's DMA pattern: 1 KiB each of 'A', 'B', 'C', 'D'. */
static bool peer_dma_landed(QTestState *qts, uint64_t addr)
{
    uint8_t buf[4096];
    int i;

    qtest_memread(qts, addr, buf, sizeof(buf));
    for (i = 0; i < sizeof(buf); i++) {
        if (buf[i] != 'A' + i / 1024) {
            return false;
        }
    }
    return true;
}

/* Wait (at most 20 s) for the timer's DMA, both kinds, at 0 and 8 KiB. */
static void peer_wait_dma(QTestState *qts)
{
    int i;

    for (i = 0; i < 2000; i++) {
        if (peer_dma_landed(qts, PEER_DMA_DIRECT) &&
            peer_dma_landed(qts, PEER_DMA_MSG)) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_error("the server's timer DMA did not land in guest memory (0x%x at "
            "0, 0x%x at 8 KiB)", qtest_readb(qts, PEER_DMA_DIRECT),
            qtest_readb(qts, PEER_DMA_MSG));
}

typedef enum {
    MIG_TRACK_DEVICE,       /* the server's DMA logging */
    MIG_TRACK_FALLBACK,     /* all mapped memory dirty in stop-and-copy */
    MIG_TRACK_NONE,         /* x-no-dirty-tracking: the control */
} MigTracking;

/*
 * The server sample with its BAR1 filled and its timer armed to fire
 * during pre-copy (slowed down by a bandwidth limit and 96 MiB of
 * non-zero RAM): the timer writes guest memory directly (mmap) and by
 * DMA_WRITE messages.  On the destination, BAR1 reads back equal, the
 * memory the server wrote directly during pre-copy is there (only with
 * dirty tracking: the control without it shows it lost), and the timer
 * still works.
 */
static void test_migrate_server_tracking(MigTracking tracking)
{
    static const char *const props[] = {
        [MIG_TRACK_DEVICE] = "",
        [MIG_TRACK_FALLBACK] = "-global "
            "vfio-user-pci.x-device-dirty-page-tracking=off",
        [MIG_TRACK_NONE] = "-global vfio-user-pci.x-no-dirty-tracking=on",
    };
    g_autoptr(Server) a = peer_start("server");
    g_autoptr(Server) b = peer_start("server");
    g_autofree char *mig = server_file(b, "mig.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", mig);
    QTestState *src = mig_start(a, props[tracking]);
    QTestState *dst = mig_start_incoming(b, props[tracking], uri);
    QPCIBus *bus = qpci_new_pc(src, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0, bar1;
    g_autofree char *status = NULL;
    bool direct_ok;

    bar0 = qpci_iomap(dev, 0, NULL);
    bar1 = qpci_iomap(dev, 1, NULL);
    peer_bar1_fill(dev, bar1, 0);
    peer_bar1_check(dev, bar1, 0);

    qtest_memset(src, 0, 0, 16 * KiB);
    qtest_memset(src, 1 * MiB, 0x5a, 96 * MiB);
    mig_set_bandwidth(src, 16 * MiB);
    peer_arm_timer(dev, bar0, 2);
    mig_migrate(src, uri);
    peer_wait_dma(src);
    status = mig_status(src, NULL);
    g_assert_cmpstr(status, ==, "active");     /* it landed in pre-copy */
    mig_set_bandwidth(src, 10 * GiB);
    mig_wait_status(src, "completed");
    g_free(dev);
    qpci_free_pc(bus);

    /* The destination runs on with the device's state */
    bus = qpci_new_pc(dst, NULL);
    dev = qpci_device_find(bus, QPCI_DEVFN(SLOT, 0));
    g_assert(dev);
    g_assert(vm_running(dst));
    bar0 = mig_bar(dev, 0);
    bar1 = mig_bar(dev, 1);
    peer_bar1_check(dev, bar1, 0);
    /* What QEMU wrote itself (DMA_WRITE messages) is always there */
    g_assert(peer_dma_landed(dst, PEER_DMA_MSG));
    direct_ok = peer_dma_landed(dst, PEER_DMA_DIRECT);
    if (tracking == MIG_TRACK_NONE) {
        /* Without dirty tracking the server's direct writes are lost */
        g_assert(!direct_ok);
    } else {
        g_assert(direct_ok);
    }

    /* The timer still DMA-writes guest memory on the destination */
    qtest_memset(dst, 0, 0, 16 * KiB);
    peer_arm_timer(dev, bar0, 1);
    peer_wait_dma(dst);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(dst);
    qtest_quit(src);
}

static void test_migrate_server(void)
{
    test_migrate_server_tracking(MIG_TRACK_DEVICE);
}

static void test_migrate_server_fallback(void)
{
    test_migrate_server_tracking(MIG_TRACK_FALLBACK);
}

static void test_migrate_server_untracked(void)
{
    test_migrate_server_tracking(MIG_TRACK_NONE);
}

/*
 * Servers without migration v2 (x-vfio-user-server; the libvfio-user of
 * the base tree, which offers v1 migration): migrate fails at once with
 * the blocker's message naming the device and the reason; the VM and the
 * device run on.
 */
static void test_migrate_blocked_one(Server *s, const char *why)
{
    QTestState *qts = client_start(s, NULL);
    QDict *resp;
    const char *desc;

    resp = qtest_qmp(qts, "{'execute': 'migrate', 'arguments': "
                     "{'uri': 'exec:cat > /dev/null'}}");
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("migrate: %s", desc);
    g_assert(strstr(desc, "vfio-user-pci"));
    g_assert(strstr(desc, s->sock));
    g_assert(strstr(desc, why));
    qobject_unref(resp);
    g_assert(vm_running(qts));
    assert_alive(qts);
    qtest_quit(qts);
}

static void test_migrate_blocked(void)
{
    g_autoptr(Server) remote = remote_start("edu");
    g_autoptr(Server) old = sample_start("gpio-pci-idio-16", NULL);

    test_migrate_blocked_one(remote, "does not support migration");
    test_migrate_blocked_one(old, "predates migration v2");
}

/*
 * A migration cancelled in pre-copy: the source runs on, its device
 * RUNNING (the timer DMA works, BAR1 holds its contents), no descriptor
 * left behind.
 */
static void test_migrate_cancel(void)
{
    g_autoptr(Server) a = peer_start("server");
    g_autoptr(Server) b = peer_start("server");
    g_autofree char *mig = server_file(b, "mig.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", mig);
    QTestState *src = mig_start(a, NULL);
    QTestState *dst = mig_start_incoming(b, NULL, uri);
    QPCIBus *bus = qpci_new_pc(src, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    QPCIBar bar1 = qpci_iomap(dev, 1, NULL);
    g_autofree char *status = NULL;
    int fds0;

    peer_bar1_fill(dev, bar1, 1);
    qtest_memset(src, 1 * MiB, 0x5a, 96 * MiB);
    fds0 = test_count_fds(qtest_pid(src));
    mig_set_bandwidth(src, 8 * MiB);
    mig_migrate(src, uri);
    g_usleep(500 * 1000);
    status = mig_status(src, NULL);
    g_assert_cmpstr(status, ==, "active");
    qtest_qmp_assert_success(src, "{'execute': 'migrate_cancel'}");
    mig_wait_status(src, "cancelled");
    /* The destination fails the load and exits by itself */
    qtest_set_expected_status(dst, 1);
    qtest_wait_qemu(dst);
    qtest_quit(dst);

    g_assert(vm_running(src));
    peer_bar1_check(dev, bar1, 1);
    qtest_memset(src, 0, 0, 16 * KiB);
    peer_arm_timer(dev, bar0, 1);
    peer_wait_dma(src);
    g_assert_cmpint(test_count_fds(qtest_pid(src)), <=, fds0);
    client_end(src, bus, dev, bar1);
}

/* Our fault server with --migration @src_mode and @dst_mode */
static Server *fault_start_migration(const char *mode)
{
    return fault_start_opt("device", "--migration", mode);
}

/*
 * The destination refuses the device state (MIG_DATA_WRITE fails), or
 * the source's server dies in stop-and-copy: migration fails with an
 * error, the source runs on with a working device (after a reconnect
 * when its server died), QEMU keeps no descriptor of it.
 */
static void test_migrate_fail(const char *src_mode, const char *dst_mode)
{
    g_autoptr(Server) a = fault_start_migration(src_mode);
    g_autoptr(Server) b = fault_start_migration(dst_mode);
    g_autofree char *mig = server_file(b, "mig.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", mig);
    const char *opts = "-global vfio-user-pci.reconnect-ms=50";
    QTestState *src = mig_start(a, opts);
    QTestState *dst = mig_start_incoming(b, opts, uri);
    QPCIBus *bus = qpci_new_pc(src, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);
    g_autofree char *err = NULL;
    g_autofree char *status = NULL;
    bool died = !strcmp(src_mode, "die-stop-copy");
    int fds0, i;

    qpci_io_writel(dev, bar0, 0x10, 0x600d600d);
    fds0 = test_count_fds(qtest_pid(src));
    mig_migrate(src, uri);
    status = mig_wait_end(src, &err);
    g_test_message("migration %s: %s", status, err ?: "");
    g_assert_cmpstr(status, ==, "failed");
    /* The destination fails the load and exits by itself */
    qtest_set_expected_status(dst, 1);
    qtest_wait_qemu(dst);
    qtest_quit(dst);
    g_assert(vm_running(src));

    if (died) {
        g_assert(file_contains(a->log, "\"dying\""));
        server_restart(a);
        for (i = 0; i < 500; i++) {
            if (qpci_io_readl(dev, bar0, 0x10) != 0xffffffff) {
                break;
            }
            g_usleep(10 * 1000);
        }
        /* A new server: the device is back, with its fresh state */
        g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0);
        qpci_io_writel(dev, bar0, 0x10, 0x600d600d);
    } else {
        g_assert(file_contains(b->log, "mig-write-refused"));
        /* The source's device went back to RUNNING (2) */
        g_assert(file_contains(a->log, "\"state\": 2"));
    }
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0x600d600d);
    g_assert_cmpint(test_count_fds(qtest_pid(src)), <=, fds0);
    assert_alive(src);
    client_end(src, bus, dev, bar0);
}

static void test_migrate_refused(void)
{
    test_migrate_fail("ok", "refuse-write");
}

static void test_migrate_source_died(void)
{
    test_migrate_fail("die-stop-copy", "ok");
}

/*
 * Migrate back and forth three times (six migrations, each to a new QEMU
 * with a fresh server): BAR1's contents follow, changed at every stop.
 */
static void test_migrate_back_and_forth(void)
{
    Server *s = peer_start("server");
    QTestState *qts = mig_start(s, NULL);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar1 = qpci_iomap(dev, 1, NULL);
    int hop;

    peer_bar1_fill(dev, bar1, 0);
    for (hop = 1; hop <= 6; hop++) {
        Server *next = peer_start("server");
        g_autofree char *mig = server_file(next, "mig.sock");
        g_autofree char *uri = g_strdup_printf("unix:%s", mig);
        QTestState *to = mig_start_incoming(next, NULL, uri);

        mig_migrate(qts, uri);
        mig_wait_status(qts, "completed");
        g_free(dev);
        qpci_free_pc(bus);
        qtest_quit(qts);
        server_free(s);

        qts = to;
        s = next;
        bus = qpci_new_pc(qts, NULL);
        dev = qpci_device_find(bus, QPCI_DEVFN(SLOT, 0));
        g_assert(dev);
        bar1 = mig_bar(dev, 1);
        peer_bar1_check(dev, bar1, hop - 1);
        peer_bar1_fill(dev, bar1, hop);
    }
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    server_free(s);
}

/* -- region ioeventfds (DEVICE_GET_REGION_IO_FDS) ---------------------- */

/* Wait (at most 5 s) until the server's log has @what. */
static bool server_log_wait(Server *s, const char *what)
{
    int i;

    for (i = 0; i < 500; i++) {
        if (file_contains(s->log, what)) {
            return true;
        }
        g_usleep(10 * 1000);
    }
    return false;
}

/*
 * The newer libvfio-user's shadow_ioeventfd_server gives BAR0 offset 0
 * (4 bytes) an ioeventfd, with shadow memory or plain (-p): a guest write
 * there reaches the server through the eventfd (with the value in the
 * shadow memory), not as a message; other writes still come as messages.
 */
static void test_ioeventfd(const void *opaque)
{
    bool plain = opaque != NULL;
    g_autoptr(Server) s = peer_start_opt("shadow_ioeventfd_server",
                                         plain ? "-p" : NULL);
    QTestState *qts = client_start(s, NULL);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);

    qpci_io_writel(dev, bar0, 0, 0x12345678);
    g_assert(server_log_wait(s, plain ?
                             "bar0: ioeventfd signalled 1 times" :
                             "bar0: ioeventfd signalled 1 times, shadow "
                             "0x12345678"));
    /* Another offset, another size: messages */
    qpci_io_writel(dev, bar0, 4, 0xcafe);
    g_assert(server_log_wait(s, "message write of 4 bytes at 0x4: 0xcafe"));
    qpci_io_writew(dev, bar0, 0, 0xbeef);
    g_assert(server_log_wait(s, "message write of 2 bytes at 0: 0xbeef"));
    g_assert(!file_contains(s->log, "message write of 4 bytes at 0:"));
    client_end(qts, bus, dev, bar0);
}

/*
 * A server's io fds with one good ioeventfd and six bad ones (the same
 * again, size 3, beyond the region, no descriptor, an ioregionfd, an
 * unknown flag): one warning, the good one used (a write there is not a
 * message), the device works.
 */
static void test_ioeventfd_bad(void)
{
    g_autoptr(Server) s = fault_start_opt("device", "--iofds", NULL);
    g_autofree char *err = NULL;
    QTestState *qts = client_start_stderr(s, NULL, &err);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    QPCIBar bar0 = qpci_iomap(dev, 0, NULL);

    g_assert(file_contains(s->log, "\"io-fds\""));
    g_assert_cmpint(file_count(err, "6 of 7 ioeventfds not used"), ==, 1);
    g_assert_cmpint(file_count(err, "it overlaps another"), ==, 1);
    qpci_io_writel(dev, bar0, 0x100, 0x1234);
    qpci_io_writel(dev, bar0, 0x10, 0x600d);
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x10), ==, 0x600d);
    /* The doorbell went to the eventfd: not to BAR0's memory */
    g_assert_cmphex(qpci_io_readl(dev, bar0, 0x100), ==, 0);
    assert_alive(qts);
    client_end(qts, bus, dev, bar0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    add_test("/vfio-user-pci/edu/registers", NEEDS_REMOTE, test_edu_registers);
    add_test("/vfio-user-pci/edu/reset", NEEDS_REMOTE, test_edu_reset);
    add_test("/vfio-user-pci/edu/dma", NEEDS_REMOTE, test_edu_dma);
    add_test("/vfio-user-pci/edu/msi", NEEDS_REMOTE, test_edu_msi);
    add_test("/vfio-user-pci/edu/intx", NEEDS_REMOTE, test_edu_intx);
    add_test("/vfio-user-pci/edu/dma-remap", NEEDS_REMOTE, test_edu_dma_remap);
    add_test("/vfio-user-pci/nvme/msix", NEEDS_REMOTE, test_nvme_msix);
    add_test("/vfio-user-pci/socket-forms", NEEDS_REMOTE, test_socket_forms);
    add_test("/vfio-user-pci/gpio", NEEDS_SAMPLES, test_gpio);
    add_test("/vfio-user-pci/server-sparse-bar", NEEDS_SAMPLES,
             test_server_sparse_bar);
    add_test("/vfio-user-pci/sparse-areas", NEEDS_FAULT, test_sparse_areas);
    add_test("/vfio-user-pci/server-dma-messages", NEEDS_SAMPLES,
             test_server_dma_messages);
    add_test("/vfio-user-pci/bad-input", NEEDS_FAULT, test_bad_input);
    add_test("/vfio-user-pci/realize-unwind", NEEDS_FAULT, test_realize_unwind);
    add_test("/vfio-user-pci/viommu-no-caching-mode", NEEDS_REMOTE,
             test_viommu_no_caching_mode);
    add_test("/vfio-user-pci/dimm-hotplug", NEEDS_FAULT, test_dimm_hotplug);
    add_test("/vfio-user-pci/fault-dma", NEEDS_FAULT, test_fault_dma);
    add_test("/vfio-user-pci/fault-dma-remap", NEEDS_FAULT,
             test_fault_dma_remap);
    add_test("/vfio-user-pci/fault-dma-map-refused", NEEDS_FAULT,
             test_fault_dma_map_refused);
    add_test("/vfio-user-pci/fault-dma-big-write", NEEDS_FAULT,
             test_fault_dma_big_write);
    add_test("/vfio-user-pci/disconnect", NEEDS_REMOTE, test_disconnect);
    add_test("/vfio-user-pci/unplug-hung", NEEDS_FAULT, test_unplug_hung);
    add_test("/vfio-user-pci/fault-burst", NEEDS_FAULT, test_fault_burst);
    add_test("/vfio-user-pci/help", 0, test_help);
    add_test("/vfio-user-pci/reconnect/gpio", NEEDS_SAMPLES,
             test_reconnect_gpio);
    add_test("/vfio-user-pci/reconnect/edu", NEEDS_REMOTE, test_reconnect_edu);
    add_test("/vfio-user-pci/reconnect/keep-state", NEEDS_FAULT,
             test_reconnect_keep_state);
    add_test("/vfio-user-pci/reconnect/wrong-device",
             NEEDS_REMOTE | NEEDS_SAMPLES,
             test_reconnect_wrong_device);
    add_test("/vfio-user-pci/reconnect/fd", NEEDS_SAMPLES, test_reconnect_fd);
    add_test("/vfio-user-pci/reconnect/unplug", NEEDS_SAMPLES,
             test_reconnect_unplug);
    add_test("/vfio-user-pci/hotplug", NEEDS_SAMPLES, test_hotplug);
    add_data_test("/vfio-user-pci/ioeventfd/shadow", NEEDS_PEER,
                  test_ioeventfd, NULL);
    add_data_test("/vfio-user-pci/ioeventfd/plain", NEEDS_PEER,
                  test_ioeventfd, "plain");
    add_test("/vfio-user-pci/ioeventfd/bad", NEEDS_FAULT, test_ioeventfd_bad);
    add_test("/vfio-user-pci/migration/server", NEEDS_PEER,
             test_migrate_server);
    add_test("/vfio-user-pci/migration/server-fallback", NEEDS_PEER,
             test_migrate_server_fallback);
    add_test("/vfio-user-pci/migration/server-untracked", NEEDS_PEER,
             test_migrate_server_untracked);
    add_test("/vfio-user-pci/migration/blocked", NEEDS_REMOTE | NEEDS_SAMPLES,
             test_migrate_blocked);
    add_test("/vfio-user-pci/migration/cancel", NEEDS_PEER,
             test_migrate_cancel);
    add_test("/vfio-user-pci/migration/refused", NEEDS_FAULT,
             test_migrate_refused);
    add_test("/vfio-user-pci/migration/source-died", NEEDS_FAULT,
             test_migrate_source_died);
    add_test("/vfio-user-pci/migration/back-and-forth", NEEDS_PEER,
             test_migrate_back_and_forth);

    return g_test_run();
}
