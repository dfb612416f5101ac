/*
 * vfio-user-pci: a PCI device emulated by another process
 *
 * The device is the vfio-pci base (config space, BARs, MSI/MSI-X/INTx,
 * ROM, quirks) with vfio-user I/O ops (hw/vfio-user/device.c) over a
 * VFIOProxy connected to the server's socket.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>
#include <sys/stat.h>

#include "qapi/error.h"
#include "qapi/qapi-visit-sockets.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "hw/pci/pci.h"
#include "hw/vfio-user/pci.h"
#include "hw/pci/pcie.h"
#include "hw/qdev-properties.h"
#include "migration/blocker.h"
#include "device.h"
#include "container.h"
#include "ioeventfd.h"
#include "reconnect.h"
#include "trace.h"

static const char *vfio_user_pci_socket_name(VFIOUserPCIDevice *udev)
{
    return vfio_user_proxy_name(udev->proxy);
}

/*
 * The proxy lost its server.  The device stays, reading all ones and
 * dropping writes, until it reconnects or is unplugged; QEMU goes on.
 */
static void vfio_user_pci_proxy_failed(void *opaque, const Error *err)
{
    VFIOUserPCIDevice *udev = opaque;
    DeviceState *dev = DEVICE(udev);
    VFIOUserContainer *container =
        vfio_user_container_get(&udev->parent_obj.vbasedev);

    /* Reported already; an attempt sees its own failure */
    if (vfio_user_pci_lost(udev)) {
        return;
    }
    if (container) {
        vfio_user_container_set_offline(container);
    }
    /* During realize the failure is realize's error */
    if (udev->conn == VFIO_USER_PCI_REALIZING) {
        return;
    }
    if (udev->conn == VFIO_USER_PCI_CONNECTED) {
        vfio_user_pci_set_conn(udev, VFIO_USER_PCI_LOST);
    }
    if (vfio_user_pci_will_reconnect(udev)) {
        error_report("vfio-user-pci %s: lost the server: %s; the device "
                     "reads all ones and ignores writes until it is "
                     "connected again (trying every %u ms)",
                     dev->id ?: "(no id)", error_get_pretty(err),
                     udev->reconnect_ms);
    } else {
        error_report("vfio-user-pci %s: lost the server: %s; the device "
                     "reads all ones and ignores writes until it is "
                     "unplugged (or x-vfio-user-reconnect)",
                     dev->id ?: "(no id)", error_get_pretty(err));
    }
    vfio_user_pci_disconnected(udev, err);
}

/* The server's DMA_READ and DMA_WRITE, checked against the DMA maps. */
static int coroutine_fn vfio_user_pci_dma_rw(void *opaque, uint64_t addr,
                                             void *buf, uint64_t len,
                                             bool is_write)
{
    VFIOUserPCIDevice *udev = opaque;
    VFIOUserContainer *container =
        vfio_user_container_get(&udev->parent_obj.vbasedev);

    if (!container) {
        return -EFAULT;
    }
    if (vfio_user_pci_lost(udev)) {
        /* A new server is not checked yet: it gets no guest memory */
        return -ENODEV;
    }
    return vfio_user_container_dma_rw(container, addr, buf, len, is_write);
}

static const VFIOUserProxyOps vfio_user_pci_proxy_ops = {
    .dma_rw = vfio_user_pci_dma_rw,
    .failed = vfio_user_pci_proxy_failed,
};

/* Get the device's shape from the server (what vfio_attach_device does). */
static bool vfio_user_pci_get_info(VFIOUserPCIDevice *udev, Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    g_autofree struct vfio_device_info *info = vfio_get_device_info(vbasedev);

    if (!info) {
        error_setg_errno(errp, errno, "DEVICE_GET_INFO failed");
        return false;
    }
    if (!(info->flags & VFIO_DEVICE_FLAGS_PCI)) {
        error_setg(errp, "the server's device is not a PCI device "
                   "(flags 0x%x)", info->flags);
        return false;
    }
    vbasedev->num_regions = info->num_regions;
    vbasedev->num_irqs = info->num_irqs;
    vbasedev->flags = info->flags;
    vbasedev->reset_works = !!(info->flags & VFIO_DEVICE_FLAGS_RESET);
    return true;
}

/*
 * Walk the capability list starting at @pos, whose entries must lie in
 * [@lo, @hi), 4-byte aligned, each once (@seen, shared by both lists).
 */
static bool vfio_user_pci_check_cap_list(const uint8_t *config, uint32_t pos,
                                         uint32_t lo, uint32_t hi, bool ext,
                                         unsigned long *seen, Error **errp)
{
    while (pos) {
        if (pos < lo || (pos & 3) || pos > hi - 4 || test_bit(pos / 4, seen)) {
            error_setg(errp, "invalid %scapability list in config space "
                       "(at 0x%x)", ext ? "extended " : "", pos);
            return false;
        }
        set_bit(pos / 4, seen);
        pos = ext ? PCI_EXT_CAP_NEXT(pci_get_long(config + pos)) :
                    config[pos + PCI_CAP_LIST_NEXT];
    }
    return true;
}

/*
 * The config space comes from the server: check its header type (an
 * endpoint's: hw/vfio registers six BARs) and its capability lists before
 * anything walks them (pci_find_capability() and the vfio-pci base follow
 * them without bounds, trusting a kernel that checks them).  An entry
 * seen twice is a loop, so the walks end.
 */
static bool vfio_user_pci_check_caps(VFIOUserPCIDevice *udev, Error **errp)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    const uint8_t *config = vdev->pdev.config;
    DECLARE_BITMAP(seen, PCIE_CONFIG_SPACE_SIZE / 4) = { 0 };
    uint8_t type = config[PCI_HEADER_TYPE] & ~PCI_HEADER_TYPE_MULTI_FUNCTION;
    uint32_t header;

    /* A bridge's header has two BARs, PCI's code asserts it */
    if (type != PCI_HEADER_TYPE_NORMAL) {
        error_setg(errp, "the device's header type is %u: only type 0 "
                   "(an endpoint, not a bridge) can be used", type);
        return false;
    }
    if ((pci_get_word(config + PCI_STATUS) & PCI_STATUS_CAP_LIST) &&
        !vfio_user_pci_check_cap_list(config, config[PCI_CAPABILITY_LIST],
                                      PCI_CONFIG_HEADER_SIZE,
                                      PCI_CONFIG_SPACE_SIZE, false, seen,
                                      errp)) {
        return false;
    }
    if (vdev->config_size <= PCI_CONFIG_SPACE_SIZE) {
        return true;
    }
    header = pci_get_long(config + PCI_CONFIG_SPACE_SIZE);
    if (!header || header == 0xffffffff) {
        return true;
    }
    return vfio_user_pci_check_cap_list(config, PCI_CONFIG_SPACE_SIZE,
                                        PCI_CONFIG_SPACE_SIZE,
                                        PCIE_CONFIG_SPACE_SIZE, true, seen,
                                        errp);
}

static void vfio_user_pci_override_class(VFIOUserPCIDevice *udev)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;

    if (udev->class_code == PCI_ANY_ID) {
        return;
    }
    /* Class code: the three bytes from PCI_CLASS_PROG, emulated. */
    pci_set_byte(vdev->pdev.config + PCI_CLASS_PROG, udev->class_code);
    pci_set_word(vdev->pdev.config + PCI_CLASS_DEVICE,
                 udev->class_code >> 8);
    memset(vdev->emulated_config_bits + PCI_CLASS_PROG, 0xff, 3);
    trace_vfio_user_pci_class_override(vdev->vbasedev.name, udev->class_code);
}

static bool vfio_user_pci_connect(VFIOUserPCIDevice *udev, Error **errp)
{
    SocketAddress *addr = udev->socket;
    struct stat st;

    if (addr->type == SOCKET_ADDRESS_TYPE_UNIX) {
        const char *path = addr->u.q_unix.path;

        if (stat(path, &st) < 0) {
            error_setg_errno(errp, errno, "vfio-user server socket %s", path);
            if (errno == ENOENT && strchr(path, ':') && !strchr(path, '/')) {
                error_append_hint(errp, "vfio-user needs a UNIX socket (a "
                                  "path, unix:PATH or fd:NAME); network "
                                  "addresses are not supported\n");
            }
            return false;
        }
        if (!S_ISSOCK(st.st_mode)) {
            error_setg(errp, "vfio-user server socket %s: not a socket",
                       path);
            return false;
        }
    }
    udev->proxy = vfio_user_proxy_new(NULL, &vfio_user_pci_proxy_ops, udev);
    vfio_user_proxy_set_timeout(udev->proxy, udev->msg_timeout);
    vfio_user_proxy_set_poll_max_ns(udev->proxy, udev->poll_max_ns);
    return vfio_user_proxy_connect(udev->proxy, addr, errp) == 0;
}

/* A migration blocker naming the device and why it cannot migrate */
static bool vfio_user_pci_block_migration(VFIOUserPCIDevice *udev,
                                          const char *why, Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;

    if (udev->enable_migration == ON_OFF_AUTO_ON) {
        error_setg(errp, "enable-migration=on: %s", why);
        return false;
    }
    error_setg(&vbasedev->migration_blocker, "vfio-user-pci %s: %s",
               vbasedev->name, why);
    return migrate_add_blocker_normal(&vbasedev->migration_blocker,
                                      errp) >= 0;
}

/*
 * Migration goes through hw/vfio's (the kernel's VFIO migration v2 state
 * machine), carried by DEVICE_FEATURE and MIG_DATA_READ/WRITE.  Dirty
 * tracking: the server's DMA logging when it has it, else the container
 * counts all guest memory the server has mapped as dirty at the end
 * (hw/vfio-user/container.c).
 */
static bool vfio_user_pci_migration_setup(VFIOUserPCIDevice *udev,
                                          Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    uint64_t buf[2] = { };
    struct vfio_device_feature *feature = (void *)buf;
    const char *mode;
    int ret;

    if (udev->enable_migration == ON_OFF_AUTO_OFF) {
        return vfio_user_pci_block_migration(udev,
                   "migration is disabled (enable-migration=off)", errp);
    }
    if (!vfio_user_proxy_caps(udev->proxy)->migration) {
        return vfio_user_pci_block_migration(udev,
                   "the server does not support migration (no \"migration\" "
                   "capability in its VERSION reply)", errp);
    }
    udev->migratable = true;
    feature->argsz = sizeof(buf);
    feature->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
    ret = vfio_user_device_io_ops.device_feature(vbasedev, feature);
    if (ret) {
        g_autofree char *why = g_strdup_printf("the server offers migration "
            "but does not answer DEVICE_FEATURE (%s): it predates "
            "migration v2", strerror(-ret));

        udev->migratable = false;
        return vfio_user_pci_block_migration(udev, why, errp);
    }

    vbasedev->enable_migration = udev->enable_migration;
    /* Device state moves on the main loop's proxy, not multifd threads */
    if (vbasedev->migration_multifd_transfer == ON_OFF_AUTO_ON) {
        error_setg(errp, "x-migration-multifd-transfer=on is not supported");
        return false;
    }
    vbasedev->migration_multifd_transfer = ON_OFF_AUTO_OFF;
    /*
     * Without DMA logging the container reports all mapped memory dirty:
     * once, in stop-and-copy, rather than at every pre-copy pass.
     */
    vbasedev->iommu_dirty_tracking = true;
    if (!vfio_migration_realize(vbasedev, errp)) {
        return false;
    }
    if (!vbasedev->migration) {
        return true;        /* hw/vfio added a blocker that says why */
    }
    if (udev->no_dirty_tracking) {
        mode = "none (x-no-dirty-tracking: DEBUG, loses DMA writes)";
        vbasedev->device_dirty_page_tracking = ON_OFF_AUTO_OFF;
    } else if (vbasedev->dirty_pages_supported &&
               vbasedev->device_dirty_page_tracking != ON_OFF_AUTO_OFF) {
        mode = "device (DMA logging)";
    } else {
        mode = "all mapped memory dirty in stop-and-copy";
        vbasedev->pre_copy_dirty_page_tracking = ON_OFF_AUTO_OFF;
    }
    trace_vfio_user_migration_mode(vbasedev->name, mode);
    return true;
}

/*
 * Set up the vfio-pci base's VFIODevice for the connected server: its
 * shape, a container for its DMA maps, its regions, and what identifies
 * it (for a reconnect to compare).
 */
static bool vfio_user_pci_attach(VFIOUserPCIDevice *udev, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(udev);
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;

    vbasedev->name = g_strdup(vfio_user_pci_socket_name(udev));
    vbasedev->io_ops = &vfio_user_device_io_ops;
    vbasedev->fd = -1;
    vbasedev->no_invalid_irq_fd = true;
    /* No kernel VFIO group to cooperate with on RAM discard. */
    vbasedev->ram_block_discard_allowed = true;

    if (!vfio_user_pci_get_info(udev, errp)) {
        return false;
    }
    if (!vfio_user_container_attach(vbasedev, udev->proxy,
                                    pci_device_iommu_address_space(pdev),
                                    !udev->no_dirty_tracking, errp)) {
        return false;
    }
    if (!vfio_pci_populate_device(&udev->parent_obj, errp)) {
        return false;
    }
    if (vfio_user_pci_read_ids(udev, udev->ids) < 0) {
        error_setg(errp, "cannot read the config space");
        return false;
    }
    vfio_user_pci_read_irq_counts(udev, udev->irq_counts);
    return true;
}

static void vfio_user_pci_realize(PCIDevice *pdev, Error **errp)
{
    ERRP_GUARD();
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(pdev);
    VFIOPCIDevice *vdev = &udev->parent_obj;
    VFIODevice *vbasedev = &vdev->vbasedev;

    udev->conn = VFIO_USER_PCI_REALIZING;
    if (!udev->socket) {
        error_setg(errp, "vfio-user-pci: the socket property is required");
        error_append_hint(errp, "Use -device vfio-user-pci,socket=PATH or "
                          "socket=fd:NAME\n");
        return;
    }
    if (!vfio_user_pci_connect(udev, errp)) {
        error_prepend(errp, "vfio-user-pci: ");
        goto error;
    }
    if (!vfio_user_pci_attach(udev, errp) ||
        !vfio_pci_config_setup(vdev, errp) ||
        !vfio_user_pci_check_caps(udev, errp)) {
        goto error_named;
    }
    vfio_user_pci_override_class(udev);
    if (!vfio_pci_bars_prepare(vdev, errp) ||
        !vfio_pci_msix_early_setup(vdev, errp)) {
        goto error_named;
    }
    vfio_pci_bars_register(vdev);
    vfio_user_pci_ioeventfds_setup(udev);
    vfio_user_pci_setup_posted_writes(udev);
    if (!vfio_pci_add_capabilities(vdev, errp)) {
        goto out_teardown;
    }
    if (!vfio_pci_interrupt_setup(vdev, errp)) {
        goto out_deregister;
    }
    if (!vfio_user_pci_migration_setup(udev, errp)) {
        goto out_migration;
    }
    if (vfio_user_proxy_state(udev->proxy) != VFIO_PROXY_CONNECTED) {
        error_setg(errp, "the server went away during realize");
        goto out_migration;
    }
    vfio_pci_notifiers_register(vdev);
    vfio_user_pci_set_conn(udev, VFIO_USER_PCI_CONNECTED);
    return;

out_migration:
    vfio_migration_exit(vbasedev);
out_deregister:
    vfio_pci_interrupt_teardown(vdev);
out_teardown:
    vfio_pci_teardown_msi(vdev);
    vfio_user_pci_ioeventfds_exit(udev);
    vfio_pci_bars_exit(vdev);
error_named:
    /* Connect errors name the server already */
    error_prepend(errp, "vfio-user-pci: server %s: ",
                  vfio_user_pci_socket_name(udev));
error:
    vfio_user_intx_exit(udev);
    vfio_user_detach_device_common(vbasedev);
    vfio_user_proxy_free(udev->proxy);
    udev->proxy = NULL;
}

static void vfio_user_pci_exit(PCIDevice *pdev)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(pdev);
    PCIDeviceClass *base = PCI_DEVICE_CLASS(
        object_class_by_name(TYPE_VFIO_PCI_BASE));

    vfio_user_pci_cancel_reconnect(udev, true);
    /* A loss from now on (the teardown below) is not reconnected */
    vfio_user_pci_set_conn(udev, VFIO_USER_PCI_UNPLUGGING);
    /* A hung server holds unplug up for one reply timeout, not more */
    vfio_user_proxy_begin_teardown(udev->proxy);
    vfio_user_pci_ioeventfds_exit(udev);
    base->exit(pdev);
    vfio_user_intx_exit(udev);
    /* Unmap guest memory while the server can still hear it. */
    vfio_user_detach_device_common(&udev->parent_obj.vbasedev);
    vfio_user_proxy_free(udev->proxy);
    udev->proxy = NULL;
}

/* Reset: the vfio-pci base around the server's DEVICE_RESET. */
static void vfio_user_pci_do_reset(VFIOUserPCIDevice *udev)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    VFIODevice *vbasedev = &vdev->vbasedev;
    int ret;

    trace_vfio_user_pci_reset(vbasedev->name);
    /* The guest's driver starts the device afresh: nothing to tell it */
    udev->state_lost = false;
    if (udev->reconnect_co) {
        /* Restore after the reset, from the state the reset leaves */
        udev->reconnect_cancelled = true;
        vfio_user_proxy_abort(udev->proxy);
    }
    /* A hung server holds reset up for one reply timeout, not more */
    vfio_user_proxy_begin_teardown(udev->proxy);
    vfio_pci_pre_reset(vdev);
    if (vbasedev->reset_works && !vfio_user_pci_lost(udev)) {
        ret = vbasedev->io_ops->device_reset(vbasedev);
        if (ret < 0 && !vfio_user_pci_lost(udev)) {
            warn_report("vfio-user-pci %s: DEVICE_RESET failed: %s",
                        vbasedev->name, strerror(-ret));
        }
    }
    vfio_pci_post_reset(vdev);
    vfio_user_proxy_end_teardown(udev->proxy);
}

static void vfio_user_pci_reset(DeviceState *dev)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(dev);

    if (udev->proxy) {
        vfio_user_pci_do_reset(udev);
    }
}

/*
 * The guest's function level reset (PCIe device control, BCR_FLR) is a
 * device reset: the vfio-pci base forwards config writes to the server,
 * which may not act on the bit, so reset the device the way system reset
 * does.
 */
static void vfio_user_pci_write_config(PCIDevice *pdev, uint32_t addr,
                                       uint32_t val, int len)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(pdev);
    uint32_t devctl = pdev->exp.exp_cap + PCI_EXP_DEVCTL;
    bool flr = false;

    if (pdev->exp.exp_cap && udev->parent_obj.vbasedev.reset_works &&
        ranges_overlap(addr, len, devctl, 2)) {
        uint32_t v = val << (8 * (addr - MIN(addr, devctl)));

        v >>= 8 * (devctl - MIN(addr, devctl));
        flr = v & PCI_EXP_DEVCTL_BCR_FLR;
    }
    if (pdev->exp.exp_cap && ranges_overlap(addr, len, devctl, 2)) {
        /*
         * Not emulated: keep what the guest writes, for a reconnect to
         * restore (without the FLR bit, which only triggers).
         */
        uint8_t buf[4];

        pci_set_word(buf, udev->devctl_written ? udev->devctl :
                     pci_get_word(pdev->config + devctl));
        for (uint32_t i = 0; i < len; i++) {
            if (addr + i >= devctl && addr + i < devctl + 2) {
                buf[addr + i - devctl] = val >> (8 * i);
            }
        }
        udev->devctl = pci_get_word(buf) & ~PCI_EXP_DEVCTL_BCR_FLR;
        udev->devctl_written = true;
    }
    vfio_pci_write_config(pdev, addr, val, len);
    if (flr) {
        vfio_user_pci_do_reset(udev);
    }
}

/*
 * socket: a string (a UNIX socket path, "unix:PATH" or "fd:NAME") or a
 * SocketAddress object ({"type": "unix", "path": ...} or {"type": "fd",
 * "str": ...}), so that -device vfio-user-pci,socket=PATH, JSON -device
 * and device_add all work.
 */
static SocketAddress *vfio_user_parse_socket(const char *str, Error **errp)
{
    static const char *const other[] = {
        "tcp:", "inet:", "udp:", "vsock:", "telnet:", "websocket:",
    };
    SocketAddress *addr;
    int i;

    if (g_str_has_prefix(str, "unix:") || g_str_has_prefix(str, "fd:")) {
        return socket_parse(str, errp);
    }
    for (i = 0; i < ARRAY_SIZE(other); i++) {
        if (g_str_has_prefix(str, other[i])) {
            error_setg(errp, "socket '%s': a %.*s address; vfio-user needs "
                       "a UNIX socket (a path, unix:PATH or fd:NAME)", str,
                       (int)strlen(other[i]) - 1, other[i]);
            return NULL;
        }
    }
    if (!*str) {
        error_setg(errp, "empty socket path");
        return NULL;
    }
    addr = g_new0(SocketAddress, 1);
    addr->type = SOCKET_ADDRESS_TYPE_UNIX;
    addr->u.q_unix.path = g_strdup(str);
    return addr;
}

VFIODevice *vfio_user_pci_vbasedev(DeviceState *dev)
{
    VFIOUserPCIDevice *udev = (VFIOUserPCIDevice *)
        object_dynamic_cast(OBJECT(dev), TYPE_VFIO_USER_PCI);

    return udev ? &udev->parent_obj.vbasedev : NULL;
}

static void vfio_user_pci_get_socket(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(obj);
    g_autofree char *str = NULL;

    if (udev->socket) {
        visit_type_SocketAddress(v, name, &udev->socket, errp);
        return;
    }
    str = g_strdup("");
    visit_type_str(v, name, &str, errp);
}

static void vfio_user_pci_set_socket(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(obj);
    g_autoptr(SocketAddress) addr = NULL;
    g_autofree GenericAlternate *alt = NULL;
    g_autofree char *str = NULL;
    bool ok = false;

    if (DEVICE(obj)->realized) {
        error_setg(errp, "socket cannot be changed on a realized device");
        return;
    }
    if (!visit_start_alternate(v, name, &alt, sizeof(*alt), errp)) {
        return;
    }
    switch (alt->type) {
    case QTYPE_QSTRING:
        if (visit_type_str(v, name, &str, errp)) {
            addr = vfio_user_parse_socket(str, errp);
            ok = addr != NULL;
        }
        break;
    case QTYPE_QDICT:
        ok = visit_type_SocketAddress(v, name, &addr, errp);
        break;
    default:
        error_setg(errp, "socket: expected a path or a SocketAddress object");
        break;
    }
    visit_end_alternate(v, (void **)&alt);
    if (!ok) {
        return;
    }
    if (!vfio_user_pci_socket_usable(addr, errp)) {
        return;
    }
    qapi_free_SocketAddress(udev->socket);
    udev->socket = g_steal_pointer(&addr);
}

static void vfio_user_pci_instance_init(Object *obj)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(obj);

    udev->class_code = PCI_ANY_ID;
    udev->intx_resample_fd = -1;
}

static void vfio_user_pci_finalize(Object *obj)
{
    VFIOUserPCIDevice *udev = VFIO_USER_PCI(obj);

    vfio_user_proxy_free(udev->proxy);
    udev->proxy = NULL;
    qapi_free_SocketAddress(udev->socket);
    g_clear_pointer(&udev->reconnect_timer, timer_free);
    g_clear_pointer(&udev->attempt_timer, timer_free);
}

static const Property vfio_user_pci_properties[] = {
    DEFINE_PROP_UINT32("x-msg-timeout", VFIOUserPCIDevice, msg_timeout,
                       VFIO_USER_DEFAULT_TIMEOUT_MS),
    /* QEMU 10.1's name of the opposite of x-no-posted-writes */
    DEFINE_PROP_BOOL("x-send-queued", VFIOUserPCIDevice, send_queued, true),
    DEFINE_PROP_BOOL("x-no-posted-writes", VFIOUserPCIDevice,
                     no_posted_writes, false),
    DEFINE_PROP_UINT32("x-pci-class-code", VFIOUserPCIDevice, class_code,
                       PCI_ANY_ID),
    DEFINE_PROP_UINT32("reconnect-ms", VFIOUserPCIDevice, reconnect_ms, 0),
    DEFINE_PROP_UINT64("x-poll-max-ns", VFIOUserPCIDevice, poll_max_ns,
                       VFIO_USER_DEFAULT_POLL_MAX_NS),
    DEFINE_PROP_ON_OFF_AUTO("enable-migration", VFIOUserPCIDevice,
                            enable_migration, ON_OFF_AUTO_AUTO),
    DEFINE_PROP_BOOL("x-no-dirty-tracking", VFIOUserPCIDevice,
                     no_dirty_tracking, false),
    DEFINE_PROP_BOOL("x-no-ioeventfds", VFIOUserPCIDevice, no_ioeventfds,
                     false),
};

static void vfio_user_pci_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *pdc = PCI_DEVICE_CLASS(klass);

    device_class_set_legacy_reset(dc, vfio_user_pci_reset);
    device_class_set_props(dc, vfio_user_pci_properties);
    object_class_property_add(klass, "socket", "SocketAddress",
                              vfio_user_pci_get_socket,
                              vfio_user_pci_set_socket, NULL, NULL);
    object_class_property_set_description(klass, "socket",
        "The vfio-user server's socket: a UNIX socket path, unix:PATH, "
        "fd:NAME (a socket passed with getfd), or a SocketAddress object "
        "(type unix with path, or type fd with str)");
    object_class_property_set_description(klass, "x-msg-timeout",
        "Milliseconds to wait for each reply of the server; 0 waits "
        "forever. A server that lets two requests time out in a row is "
        "declared lost");
    object_class_property_set_description(klass, "x-no-posted-writes",
        "Wait for the server to complete each MMIO write (DEBUG)");
    object_class_property_set_description(klass, "x-pci-class-code",
        "Override the PCI class code (24 bits) with this value");
    object_class_property_set_description(klass, "x-poll-max-ns",
        "Longest time, in ns, a vCPU waiting for a reply busy-polls the "
        "socket before it sleeps (adaptive; 0 never polls)");
    object_class_property_set_description(klass, "enable-migration",
        "auto (the default): the device migrates if its server supports "
        "migration, else it blocks migration; on: fail if the server does "
        "not; off: block migration");
    object_class_property_set_description(klass, "x-no-ioeventfds",
        "Do not use the server's region ioeventfds: every MMIO write is a "
        "message (DEBUG, benchmarks)");
    object_class_property_set_description(klass, "x-no-dirty-tracking",
        "Do not track what the server writes to guest memory during "
        "migration: it is lost (DEBUG, tests only)");
    object_class_property_set_description(klass, "reconnect-ms",
        "When the server is lost, try to connect to the socket path again "
        "every this many milliseconds; 0 (the default) never reconnects");
    dc->desc = "vfio-user PCI device: a PCI device emulated by another "
               "process, reached over a vfio-user socket";
    pdc->realize = vfio_user_pci_realize;
    pdc->exit = vfio_user_pci_exit;
    pdc->config_write = vfio_user_pci_write_config;
}

static const TypeInfo vfio_user_pci_info = {
    .name = TYPE_VFIO_USER_PCI,
    .parent = TYPE_VFIO_PCI_BASE,
    .instance_size = sizeof(VFIOUserPCIDevice),
    .class_init = vfio_user_pci_class_init,
    .instance_init = vfio_user_pci_instance_init,
    .instance_finalize = vfio_user_pci_finalize,
};

static void vfio_user_pci_register_types(void)
{
    type_register_static(&vfio_user_pci_info);
}

type_init(vfio_user_pci_register_types)
