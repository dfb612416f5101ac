/*
 * qtest for vfio-user-pci against real vfio-user servers
 *
 * Each test starts its own server on its own temporary socket: QEMU's
 * x-vfio-user-server (serving edu), the libvfio-user samples
 * (gpio-pci-idio-16, server), or our scripted fault server
 * (tests/vfio-user/fault-server.py).  Servers are killed when the test
 * ends, pass or fail.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/wait.h>

#include "libqtest.h"
#include "libqos/pci.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"

#define EDU_VENDOR          0x1234
#define EDU_DEVICE          0x11e8
#define GPIO_VENDOR         0x494f
#define GPIO_DEVICE         0x0dc8
#define SLOT                4

typedef struct Server {
    GPid pid;
    char *dir;
    char *sock;
    char *log;
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

static Server *server_spawn(char **argv, Server *s)
{
    g_autoptr(GError) err = NULL;
    int out = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

    g_assert(out >= 0);
    g_assert(g_spawn_async_with_fds(NULL, argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD |
                                    G_SPAWN_STDIN_FROM_DEV_NULL,
                                    NULL, NULL, &s->pid, -1, out, out,
                                    &err));
    close(out);
    server_wait_socket(s);
    return s;
}

static Server *server_new(const char *name)
{
    Server *s = g_new0(Server, 1);

    s->dir = g_dir_make_tmp("vfio-user-test-XXXXXX", NULL);
    g_assert(s->dir);
    s->sock = g_build_filename(s->dir, name, NULL);
    s->log = g_build_filename(s->dir, "server.log", NULL);
    return s;
}

/* QEMU's x-vfio-user-server serving @device (e.g. "edu"). */
static Server *remote_start(const char *device)
{
    Server *s = server_new("remote.sock");
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

/* tests/vfio-user/fault-server.py in @mode. */
static Server *fault_start(const char *mode)
{
    Server *s = server_new("fault.sock");
    g_autofree char *script = build_path("../tests/vfio-user/fault-server.py");
    char *argv[] = {
        (char *)"/usr/bin/python3", script, (char *)"--socket", s->sock,
        (char *)"--mode", (char *)mode, (char *)"--log", s->log, NULL
    };

    return server_spawn(argv, s);
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

static void server_free(Server *s)
{
    server_kill(s);
    unlink(s->sock);
    unlink(s->log);
    rmdir(s->dir);
    g_free(s->sock);
    g_free(s->log);
    g_free(s->dir);
    g_free(s);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Server, server_free)

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

static int count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", pid);
    GDir *dir = g_dir_open(path, 0, NULL);
    int n = 0;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
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

    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
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

    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
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
    QTestState *qts = client_start(s, NULL);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = find_dev(bus);
    uint64_t size;
    QPCIBar bar1 = qpci_iomap(dev, 1, &size);
    int i;

    /* 0x3000 rounded up to a power of two for the PCI BAR */
    g_assert_cmphex(size, ==, 0x4000);
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
    /* A write through messages lands in the same file: the sample
     * serves message reads from offset 0, so write there with a
     * message-sized access the mmap does not cover... page 1 then reads
     * back what page 0's mmap shows. */
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

    assert_alive(qts);
    rmdir(dir);
    qtest_quit(qts);
}

/* -- a server that dies -------------------------------------------------- */

static void test_disconnect(void)
{
    g_autoptr(Server) s = remote_start("edu");
    QTestState *qts = client_start(s, NULL);
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
            fds0 = count_fds(qtest_pid(qts));
        }
    }
    g_assert_cmpint(count_fds(qtest_pid(qts)), <=, fds0);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    qtest_add_func("/vfio-user-pci/edu/registers", test_edu_registers);
    qtest_add_func("/vfio-user-pci/edu/reset", test_edu_reset);
    qtest_add_func("/vfio-user-pci/socket-forms", test_socket_forms);
    qtest_add_func("/vfio-user-pci/gpio", test_gpio);
    qtest_add_func("/vfio-user-pci/server-sparse-bar", test_server_sparse_bar);
    qtest_add_func("/vfio-user-pci/bad-input", test_bad_input);
    qtest_add_func("/vfio-user-pci/disconnect", test_disconnect);
    qtest_add_func("/vfio-user-pci/hotplug", test_hotplug);

    return g_test_run();
}
