/*
 * vfio-user-pci: reconnecting to a restarted server
 *
 * When the server is lost and reconnect-ms is set, the device stays in
 * the guest, disconnected (reads return all ones, writes are dropped),
 * and a timer starts an attempt every reconnect-ms milliseconds.  An
 * attempt is a coroutine in the main loop: it connects without
 * blocking, negotiates the version, checks that the server serves the
 * same device, and restores what QEMU and the guest had set up; only
 * then is the device connected again.  QMP's x-vfio-user-reconnect runs
 * one attempt at once, on a socket management gives.
 * See docs/devel/vfio-user.rst, "Reconnecting".
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>

#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-vfio.h"
#include "qapi/qapi-events-vfio.h"
#include "qapi/qapi-visit-sockets.h"
#include "block/aio-wait.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "migration/misc.h"
#include "hw/pci/pci.h"
#include "hw/pci/msi.h"
#include "hw/pci/pci_bridge.h"
#include "hw/pci/pcie_aer.h"
#include "hw/pci/pcie.h"
#include "hw/qdev-core.h"
#include "hw/sysbus.h"
#include "device.h"
#include "container.h"
#include "ioeventfd.h"
#include "reconnect.h"
#include "trace.h"

/* What identifies the device the server serves, in its config space */
static const struct {
    const char *what;
    uint8_t offset, len;
} vfio_user_ids[] = {
    { "vendor ID", PCI_VENDOR_ID, 2 },
    { "device ID", PCI_DEVICE_ID, 2 },
    { "class code", PCI_CLASS_PROG, 3 },
    { "subsystem vendor ID", PCI_SUBSYSTEM_VENDOR_ID, 2 },
    { "subsystem ID", PCI_SUBSYSTEM_ID, 2 },
};

/* What a device fresh out of reset has not enabled */
#define VFIO_USER_CMD_ENABLES \
    (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)

static const char *vfio_user_pci_id(VFIOUserPCIDevice *udev)
{
    return DEVICE(udev)->id ?: "(no id)";
}

static char *vfio_user_pci_qom_path(VFIOUserPCIDevice *udev)
{
    return object_get_canonical_path(OBJECT(udev));
}

/* Read the server's config header (IDs), as the server has it. */
int vfio_user_pci_read_ids(VFIOUserPCIDevice *udev, uint8_t *ids)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    int ret;

    ret = vbasedev->io_ops->region_read(vbasedev, VFIO_PCI_CONFIG_REGION_INDEX,
                                        0, VFIO_USER_ID_BYTES, ids);
    return ret < 0 ? ret : 0;
}

/* The count of each interrupt index the server reports, or -1. */
void vfio_user_pci_read_irq_counts(VFIOUserPCIDevice *udev, int64_t *counts)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    int i;

    for (i = 0; i < VFIO_USER_MAX_IRQS; i++) {
        struct vfio_irq_info info = { .argsz = sizeof(info), .index = i };

        counts[i] = -1;
        if (i < vbasedev->num_irqs &&
            vbasedev->io_ops->get_irq_info(vbasedev, &info) == 0) {
            counts[i] = info.count;
        }
    }
}

/*
 * Can a new server's @info map every area @region has mmap-ed?  Each must
 * lie in one of its mmap areas (those the file covers: the sparse areas
 * of non-zero size, else the whole region), as the old server's did
 * (hw/vfio may have cut them, around an MSI-X table).  They are to be
 * mapped where the old ones are.
 */
static bool vfio_user_pci_mmaps_covered(VFIORegion *region,
                                        struct vfio_region_info *info)
{
    struct vfio_region_info_cap_sparse_mmap *sparse = NULL;
    struct vfio_info_cap_header *hdr;
    uint32_t i;
    int j;

    if (!(info->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
        return false;
    }
    hdr = vfio_get_region_info_cap(info, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    if (hdr) {
        sparse = container_of(hdr, struct vfio_region_info_cap_sparse_mmap,
                              header);
    }
    for (j = 0; j < region->nr_mmaps; j++) {
        uint64_t start = region->mmaps[j].offset;
        uint64_t end = start + region->mmaps[j].size;
        bool inside = !sparse && end <= info->size;

        for (i = 0; sparse && i < sparse->nr_areas && !inside; i++) {
            inside = sparse->areas[i].size &&
                     start >= sparse->areas[i].offset &&
                     end - sparse->areas[i].offset <= sparse->areas[i].size;
        }
        if (!inside) {
            return false;
        }
    }
    return true;
}

/* A new server's file for a BAR the guest reaches mmap-ed */
typedef struct VFIOUserBarFile {
    int fd;
    off_t offset;
} VFIOUserBarFile;

/* Does the server's device have the shape the device had? */
static bool coroutine_fn vfio_user_pci_co_same_info(VFIOUserPCIDevice *udev,
                                                    Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    struct vfio_device_info info = { .argsz = sizeof(info) };
    int ret;

    ret = vbasedev->io_ops->get_device_info(vbasedev, &info);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "DEVICE_GET_INFO failed");
        return false;
    }
    if (info.flags != vbasedev->flags ||
        info.num_regions != vbasedev->num_regions ||
        info.num_irqs != vbasedev->num_irqs) {
        error_setg(errp, "a different device: flags 0x%x, %u regions, %u "
                   "interrupt indexes instead of 0x%x, %u, %u", info.flags,
                   info.num_regions, info.num_irqs, vbasedev->flags,
                   vbasedev->num_regions, vbasedev->num_irqs);
        return false;
    }
    return true;
}

/*
 * Is the server's region @index the one the device had (with the same
 * mmap areas, when the guest reaches it mmap-ed: *@file gets the new
 * server's file of it, which the caller closes)?
 */
static bool coroutine_fn vfio_user_pci_co_same_region(VFIOUserPCIDevice *udev,
                                                      int index,
                                                      VFIOUserBarFile *file,
                                                      Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    struct vfio_region_info *old = vbasedev->reginfo[index];
    VFIORegion *mapped = vfio_user_pci_mapped_bar(udev, index);
    g_autofree struct vfio_region_info *new = g_malloc0(old->argsz);
    int fd = -1, ret;

    new->argsz = old->argsz;
    new->index = index;
    ret = vbasedev->io_ops->get_region_info(vbasedev, new, &fd);
    if (mapped) {
        *file = (VFIOUserBarFile) { fd, new->offset };
    } else if (fd >= 0) {
        close(fd);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "region %d info failed", index);
        return false;
    }
    if (new->size != old->size || new->flags != old->flags) {
        error_setg(errp, "a different device: region %d has size "
                   "0x%" PRIx64 " flags 0x%x instead of 0x%" PRIx64
                   " 0x%x", index, (uint64_t)new->size, new->flags,
                   (uint64_t)old->size, old->flags);
        return false;
    }
    if (mapped && (fd < 0 || !vfio_user_pci_mmaps_covered(mapped, new))) {
        error_setg(errp, "region %d: the server's file does not cover "
                   "the areas the guest reaches mmap-ed", index);
        return false;
    }
    return true;
}

/* Does the server's device have the interrupts and IDs the device had? */
static bool vfio_user_pci_same_ids(VFIOUserPCIDevice *udev,
                                   const uint8_t *ids, Error **errp)
{
    int64_t counts[VFIO_USER_MAX_IRQS];
    int i;

    vfio_user_pci_read_irq_counts(udev, counts);
    for (i = 0; i < VFIO_USER_MAX_IRQS; i++) {
        if (counts[i] != udev->irq_counts[i]) {
            error_setg(errp, "a different device: interrupt index %d has "
                       "%" PRId64 " vectors instead of %" PRId64, i,
                       counts[i], udev->irq_counts[i]);
            return false;
        }
    }
    for (i = 0; i < ARRAY_SIZE(vfio_user_ids); i++) {
        uint8_t off = vfio_user_ids[i].offset, len = vfio_user_ids[i].len;
        uint32_t was = 0, is = 0;

        if (memcmp(ids + off, udev->ids + off, len)) {
            memcpy(&was, udev->ids + off, len);
            memcpy(&is, ids + off, len);
            error_setg(errp, "a different device: %s 0x%x instead of 0x%x",
                       vfio_user_ids[i].what, le32_to_cpu(is),
                       le32_to_cpu(was));
            return false;
        }
    }
    return true;
}

/*
 * Is the server's device the one the guest has?  Its device info, every
 * region the device had (@files gets the new server's file of each
 * mapped BAR, to be mapped in place of the old one), its interrupts and
 * its IDs must be the same.  *@fresh says whether the server's device
 * lost the state the guest gave it: it decodes nothing and does no DMA,
 * where the guest had enabled that (a restarted server's device comes
 * out of reset; one that only lost the connection kept it).
 */
static bool coroutine_fn vfio_user_pci_co_same_device(VFIOUserPCIDevice *udev,
                                                      VFIOUserBarFile *files,
                                                      bool *fresh,
                                                      Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    uint8_t ids[VFIO_USER_ID_BYTES];
    int i;

    if (!vfio_user_pci_co_same_info(udev, errp)) {
        return false;
    }
    for (i = 0; vbasedev->reginfo && i < vbasedev->num_regions; i++) {
        if (vbasedev->reginfo[i] &&
            !vfio_user_pci_co_same_region(udev, i,
                                          i < PCI_ROM_SLOT ? &files[i] : NULL,
                                          errp)) {
            return false;
        }
    }
    if (udev->migratable && !vfio_user_proxy_caps(udev->proxy)->migration) {
        error_setg(errp, "the server does not support migration, which the "
                   "device had");
        return false;
    }
    if (vfio_user_pci_read_ids(udev, ids) < 0) {
        error_setg(errp, "cannot read the config space");
        return false;
    }
    if (!vfio_user_pci_same_ids(udev, ids, errp)) {
        return false;
    }
    *fresh = (pci_get_word(PCI_DEVICE(udev)->config + PCI_COMMAND) &
              VFIO_USER_CMD_ENABLES) &&
             !(pci_get_word(ids + PCI_COMMAND) & VFIO_USER_CMD_ENABLES);
    return true;
}

/* Write @len bytes of config space at @off to the server, from @data. */
static int coroutine_fn vfio_user_pci_co_put_config(VFIOUserPCIDevice *udev,
                                                    uint32_t off, uint32_t len,
                                                    const uint8_t *data)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    VFIODevice *vbasedev = &vdev->vbasedev;
    int ret;

    trace_vfio_user_pci_restore_config(vbasedev->name, off, len);
    ret = vbasedev->io_ops->region_write(vbasedev,
                                         VFIO_PCI_CONFIG_REGION_INDEX, off,
                                         len, data, false);
    return ret < 0 ? ret : 0;
}

/*
 * The config space state the guest programmed, which a restarted server
 * (its device fresh from reset) does not have, in this order: the BARs,
 * the power state (PM control, without the write-1-to-clear PME status),
 * PCIe device control (as the guest wrote it: the base does not emulate
 * it; without FLR), the MSI address, data and mask then its flags, the
 * MSI-X flags, and the command register last (decoding, bus mastering:
 * the device may only act once the rest is in place).  Other values are
 * what the guest wrote: the vfio-pci base forwards config writes to the
 * server and keeps the writable bits in pdev.config.
 */
static bool coroutine_fn vfio_user_pci_co_restore_config(
    VFIOUserPCIDevice *udev, Error **errp)
{
    PCIDevice *pdev = &udev->parent_obj.pdev;
    uint8_t *config = pdev->config;
    uint8_t pm[2], devctl[2];
    struct {
        uint32_t off, len;
        const uint8_t *data;
    } regs[8];
    int i, n = 0, ret;

    regs[n++] = (typeof(regs[0])) {
        PCI_BASE_ADDRESS_0, 24, config + PCI_BASE_ADDRESS_0
    };
    if (pdev->pm_cap) {
        pci_set_word(pm, pci_get_word(config + pdev->pm_cap + PCI_PM_CTRL) &
                     ~PCI_PM_CTRL_PME_STATUS);
        regs[n++] = (typeof(regs[0])) { pdev->pm_cap + PCI_PM_CTRL, 2, pm };
    }
    if (pci_is_express(pdev) && pdev->exp.exp_cap && udev->devctl_written) {
        pci_set_word(devctl, udev->devctl);
        regs[n++] = (typeof(regs[0])) {
            pdev->exp.exp_cap + PCI_EXP_DEVCTL, 2, devctl
        };
    }
    if (pdev->msi_cap) {
        /* Address and data, then the flags (enable) */
        regs[n++] = (typeof(regs[0])) {
            pdev->msi_cap + PCI_MSI_ADDRESS_LO,
            udev->parent_obj.msi_cap_size - PCI_MSI_ADDRESS_LO,
            config + pdev->msi_cap + PCI_MSI_ADDRESS_LO
        };
        regs[n++] = (typeof(regs[0])) {
            pdev->msi_cap + PCI_MSI_FLAGS, 2,
            config + pdev->msi_cap + PCI_MSI_FLAGS
        };
    }
    if (pdev->msix_cap) {
        regs[n++] = (typeof(regs[0])) {
            pdev->msix_cap + PCI_MSIX_FLAGS, 2,
            config + pdev->msix_cap + PCI_MSIX_FLAGS
        };
    }
    regs[n++] = (typeof(regs[0])) { PCI_COMMAND, 2, config + PCI_COMMAND };
    for (i = 0; i < n; i++) {
        ret = vfio_user_pci_co_put_config(udev, regs[i].off, regs[i].len,
                                          regs[i].data);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "config space write at 0x%x failed",
                             regs[i].off);
            return false;
        }
    }
    return true;
}

/*
 * Give the new server's device (RUNNING, as a fresh device is) the
 * migration state hw/vfio knows: a stopped VM's device is stopped.  A
 * migration in progress cannot go on (the new server has neither the old
 * one's data stream nor its DMA log): it is failed here, and hw/vfio
 * sets the device back to RUNNING as after any failed migration.
 */
static bool coroutine_fn vfio_user_pci_co_restore_migration(
    VFIOUserPCIDevice *udev, Error **errp)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    VFIOMigration *migration = vbasedev->migration;
    uint64_t buf[2] = { };
    struct vfio_device_feature *feature = (void *)buf;
    struct vfio_device_feature_mig_state *state = (void *)feature->data;
    Error *err = NULL;
    int ret;

    if (!migration || migration->device_state == VFIO_DEVICE_STATE_RUNNING) {
        return true;
    }
    if (migration->device_state != VFIO_DEVICE_STATE_STOP) {
        error_setg(&err, "vfio-user-pci %s: the server was lost during the "
                   "migration", vbasedev->name);
        migration_file_set_error(-ECONNRESET, err);
        return true;
    }
    feature->argsz = sizeof(buf);
    feature->flags = VFIO_DEVICE_FEATURE_SET |
                     VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
    state->device_state = VFIO_DEVICE_STATE_STOP;
    ret = vbasedev->io_ops->device_feature(vbasedev, feature);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot stop the device as the VM is");
        return false;
    }
    return true;
}

/*
 * Map the new server's files where the guest reaches the old ones: the
 * guest's addresses, and KVM's memory slots, stay valid.  Until now the
 * guest read and wrote the old server's memory, which nobody serves.
 * The files are the device's from now on.
 */
static bool vfio_user_pci_remap(VFIOUserPCIDevice *udev,
                                VFIOUserBarFile *files, Error **errp)
{
    int i, ret;

    for (i = 0; i < PCI_ROM_SLOT; i++) {
        if (files[i].fd < 0) {
            continue;
        }
        ret = vfio_region_remap(vfio_user_pci_mapped_bar(udev, i),
                                files[i].fd, files[i].offset);
        files[i].fd = -1;
        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot map BAR %d from the "
                             "server's file", i);
            return false;
        }
    }
    return true;
}

/*
 * Give a server what the guest and QEMU had set up, in this order: the
 * DMA maps (the device may do DMA as soon as bus mastering is back), the
 * interrupt eventfds and vector masks (so that an interrupt the device
 * raises once enabled is not lost), then the config space, and the
 * migration state.  The BARs' mmaps are already on the new server's
 * files (vfio_user_pci_remap()).
 */
static bool coroutine_fn vfio_user_pci_co_restore(VFIOUserPCIDevice *udev,
                                                  Error **errp)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    VFIOUserContainer *container = vfio_user_container_get(&vdev->vbasedev);
    int tries;

    if (container && vfio_user_container_co_replay(container, errp) < 0) {
        return false;
    }
    /*
     * The guest runs meanwhile: interrupt or config changes it makes are
     * dropped (the device is not connected yet), so when there were any,
     * restore them again from the state they left.
     */
    for (tries = 0; tries < 3; tries++) {
        udev->reconnect_dirty = false;
        if (vfio_pci_replay_irqs(vdev, errp) < 0) {
            error_prepend(errp, "interrupts: ");
            return false;
        }
        if (!vfio_user_pci_co_restore_config(udev, errp)) {
            return false;
        }
        if (!udev->reconnect_dirty) {
            /* The old server's eventfds reach nobody */
            vfio_user_pci_ioeventfds_exit(udev);
            vfio_user_pci_ioeventfds_setup(udev);
            vfio_user_pci_setup_posted_writes(udev);
            return vfio_user_pci_co_restore_migration(udev, errp);
        }
    }
    error_setg(errp, "the guest kept changing the device's interrupts");
    return false;
}

/*
 * An attempt whose server answers each message just in time would take
 * as long as it likes (and a QMP attempt holds the monitor): it gets four
 * reply timeouts in all, then it fails.
 */
static void vfio_user_pci_attempt_expired(void *opaque)
{
    VFIOUserPCIDevice *udev = opaque;

    if (udev->reconnect_co) {
        trace_vfio_user_pci_reconnect_failed(vfio_user_pci_id(udev),
                                             "attempt took too long");
        vfio_user_proxy_abort(udev->proxy);
    }
}

/* Fire *@timer (made on first use, with @cb) @ms milliseconds from now. */
static void vfio_user_pci_timer_in(VFIOUserPCIDevice *udev, QEMUTimer **timer,
                                   QEMUTimerCB *cb, int64_t ms)
{
    if (!*timer) {
        *timer = timer_new_ms(QEMU_CLOCK_REALTIME, cb, udev);
    }
    timer_mod(*timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + ms);
}

static void vfio_user_pci_arm_attempt_timer(VFIOUserPCIDevice *udev)
{
    uint32_t timeout_ms = vfio_user_proxy_timeout(udev->proxy);

    if (timeout_ms) {
        vfio_user_pci_timer_in(udev, &udev->attempt_timer,
                               vfio_user_pci_attempt_expired,
                               4LL * timeout_ms);
    }
}

/*
 * The steps of an attempt, which say why one failed (reported once per
 * step and error, not per attempt)
 */
typedef enum VFIOUserAttemptStep {
    VFIO_USER_ATTEMPT_NONE = 0,
    VFIO_USER_ATTEMPT_CONNECT,
    VFIO_USER_ATTEMPT_NEGOTIATE,
    VFIO_USER_ATTEMPT_CHECK,
    VFIO_USER_ATTEMPT_REMAP,
    VFIO_USER_ATTEMPT_RESTORE,
    /* Cancelled by a reset, or the server lost during the restore */
    VFIO_USER_ATTEMPT_FINISH,
} VFIOUserAttemptStep;

/*
 * Check the device on the newly attached server and restore it.  A server
 * found to have lost the device's state is remembered (state_lost) until
 * the guest is told: an attempt that fails after restoring the config
 * space leaves the next one a server that looks as if it had kept it.
 */
static bool coroutine_fn vfio_user_pci_co_check_restore(
    VFIOUserPCIDevice *udev, VFIOUserAttemptStep *step, Error **errp)
{
    VFIOUserBarFile files[PCI_ROM_SLOT];
    bool ok, fresh = false;
    int i;

    for (i = 0; i < PCI_ROM_SLOT; i++) {
        files[i].fd = -1;
    }
    *step = VFIO_USER_ATTEMPT_CHECK;
    ok = vfio_user_pci_co_same_device(udev, files, &fresh, errp);
    if (ok) {
        *step = VFIO_USER_ATTEMPT_REMAP;
        ok = vfio_user_pci_remap(udev, files, errp);
    }
    if (ok) {
        *step = VFIO_USER_ATTEMPT_RESTORE;
        ok = vfio_user_pci_co_restore(udev, errp);
    }
    udev->state_lost |= fresh;
    for (i = 0; i < PCI_ROM_SLOT; i++) {
        if (files[i].fd >= 0) {
            close(files[i].fd);
        }
    }
    if (ok && (udev->reconnect_cancelled ||
               vfio_user_proxy_state(udev->proxy) != VFIO_PROXY_CONNECTED)) {
        *step = VFIO_USER_ATTEMPT_FINISH;
        error_setg(errp, "%s", udev->reconnect_cancelled ?
                   "cancelled by a reset" : "lost during the restore");
        ok = false;
    }
    return ok;
}

/*
 * One attempt: connect to @addr (the device's socket if NULL), check the
 * device, restore it.  On success the device is connected again, and
 * @addr becomes its socket.  On failure *@step says where it failed.
 */
static int coroutine_fn vfio_user_pci_co_attempt(VFIOUserPCIDevice *udev,
                                                 SocketAddress *addr,
                                                 VFIOUserAttemptStep *step,
                                                 Error **errp)
{
    g_autoptr(QIOChannelSocket) sioc = NULL;
    g_autofree char *name = NULL;
    int ret;

    udev->reconnect_attempts++;
    trace_vfio_user_pci_reconnect_attempt(vfio_user_pci_id(udev),
                                          udev->reconnect_attempts);
    vfio_user_pci_arm_attempt_timer(udev);
    *step = VFIO_USER_ATTEMPT_CONNECT;
    sioc = vfio_user_proxy_open(udev->proxy, addr ?: udev->socket, true,
                                &name, errp);
    if (!sioc) {
        return -ECONNREFUSED;
    }
    *step = VFIO_USER_ATTEMPT_NEGOTIATE;
    ret = vfio_user_co_proxy_attach(udev->proxy, sioc, name, errp);
    if (ret < 0) {
        return ret;
    }
    if (!vfio_user_pci_co_check_restore(udev, step, errp)) {
        VFIOUserContainer *container =
            vfio_user_container_get(&udev->parent_obj.vbasedev);

        error_prepend(errp, "vfio-user server %s: ", name);
        vfio_user_proxy_abort(udev->proxy);
        if (container) {
            vfio_user_container_set_offline(container);
        }
        return -EIO;
    }
    if (addr) {
        qapi_free_SocketAddress(udev->socket);
        udev->socket = QAPI_CLONE(SocketAddress, addr);
    }
    return 0;
}

/*
 * A server that lost the device's state (restarted) also lost the
 * requests the guest had in flight: the guest's driver would wait for
 * them until its timeouts (Linux's NVMe driver: 30 s, an abort that
 * times out too, then a reset: a minute).  Tell the guest at once, as
 * hardware tells it that a device's link went down: the PCIe port above
 * the device reports a Surprise Down error (uncorrectable, fatal), from
 * which the guest's AER driver resets the link and the device's driver
 * the device (error_detected, slot_reset, resume).  Needs the device
 * behind a port with AER (pcie-root-port, a switch's downstream port)
 * and a guest that handles AER; else the guest's driver recovers by its
 * timeouts.
 */
static void vfio_user_pci_report_lost_state(VFIOUserPCIDevice *udev)
{
    PCIDevice *port = pci_bridge_get_device(pci_get_bus(PCI_DEVICE(udev)));
    PCIEAERErr err = { .status = PCI_ERR_UNC_SDN };
    int ret = -ENOSYS;

    /* A port with a link below it: a root port or a downstream port */
    if (port && pci_is_express(port) && port->exp.aer_cap &&
        (pcie_cap_get_type(port) == PCI_EXP_TYPE_ROOT_PORT ||
         pcie_cap_get_type(port) == PCI_EXP_TYPE_DOWNSTREAM)) {
        err.source_id = pci_requester_id(port);
        ret = pcie_aer_inject_error(port, &err);
    }
    trace_vfio_user_pci_report_lost_state(vfio_user_pci_id(udev),
                                          port ? port->name : "none", ret);
}

/* The device is connected again: tell the user and management. */
static void vfio_user_pci_connected(VFIOUserPCIDevice *udev)
{
    g_autofree char *path = vfio_user_pci_qom_path(udev);
    const char *name = vfio_user_proxy_name(udev->proxy);

    vfio_user_pci_set_conn(udev, VFIO_USER_PCI_CONNECTED);
    udev->refusal_step = VFIO_USER_ATTEMPT_NONE;
    if (udev->attempt_timer) {
        timer_del(udev->attempt_timer);
    }
    trace_vfio_user_pci_reconnected(vfio_user_pci_id(udev), name,
                                    udev->reconnect_attempts);
    info_report("vfio-user-pci %s: connected again to %s",
                vfio_user_pci_id(udev), name);
    qapi_event_send_vfio_user_connected(DEVICE(udev)->id ?: "", path, name);
    udev->reconnect_attempts = 0;
    if (udev->state_lost) {
        udev->state_lost = false;
        vfio_user_pci_report_lost_state(udev);
    }
}

/*
 * A failed attempt: say why, once per different reason (the step that
 * failed, and its error; a server that is not back yet is only traced).
 */
static void vfio_user_pci_refused(VFIOUserPCIDevice *udev,
                                  VFIOUserAttemptStep step, int ret,
                                  Error *err)
{
    const char *msg = error_get_pretty(err);

    trace_vfio_user_pci_reconnect_failed(vfio_user_pci_id(udev), msg);
    if (ret != -ECONNREFUSED && ret != -EBUSY && !udev->reconnect_cancelled &&
        (udev->refusal_step != step || udev->refusal_errno != ret)) {
        error_report("vfio-user-pci %s: cannot reconnect: %s",
                     vfio_user_pci_id(udev), msg);
        udev->refusal_step = step;
        udev->refusal_errno = ret;
    }
    error_free(err);
}

static void vfio_user_pci_schedule_reconnect(VFIOUserPCIDevice *udev);

/*
 * Run one attempt in the current coroutine, which messages of the
 * RECONNECTING device pass; the attempt ends CONNECTED or LOST.
 */
static int coroutine_fn vfio_user_pci_co_reconnect(VFIOUserPCIDevice *udev,
                                                   SocketAddress *addr,
                                                   Error **errp)
{
    VFIOUserAttemptStep step = VFIO_USER_ATTEMPT_NONE;
    Error *err = NULL;
    int ret;

    udev->reconnect_cancelled = false;
    udev->reconnect_co = qemu_coroutine_self();
    vfio_user_pci_set_conn(udev, VFIO_USER_PCI_RECONNECTING);
    ret = vfio_user_pci_co_attempt(udev, addr, &step, &err);
    if (!ret) {
        vfio_user_pci_connected(udev);
    } else {
        vfio_user_pci_set_conn(udev, VFIO_USER_PCI_LOST);
        if (addr) {
            /* QMP reports it */
            trace_vfio_user_pci_reconnect_failed(vfio_user_pci_id(udev),
                                                 error_get_pretty(err));
            error_propagate(errp, err);
        } else {
            vfio_user_pci_refused(udev, step, ret, err);
        }
        vfio_user_pci_schedule_reconnect(udev);
    }
    udev->reconnect_co = NULL;
    aio_wait_kick();
    return ret;
}

static void coroutine_fn vfio_user_pci_reconnect_co(void *opaque)
{
    vfio_user_pci_co_reconnect(opaque, NULL, NULL);
}

static void vfio_user_pci_reconnect_timer(void *opaque)
{
    VFIOUserPCIDevice *udev = opaque;
    Coroutine *co;

    if (udev->conn != VFIO_USER_PCI_LOST) {
        return;
    }
    co = qemu_coroutine_create(vfio_user_pci_reconnect_co, udev);
    aio_co_enter(qemu_get_aio_context(), co);
}

bool vfio_user_pci_will_reconnect(VFIOUserPCIDevice *udev)
{
    /* A passed fd cannot be opened again: management gives a new one */
    return udev->reconnect_ms && udev->conn != VFIO_USER_PCI_UNPLUGGING &&
           udev->socket->type == SOCKET_ADDRESS_TYPE_UNIX;
}

static void vfio_user_pci_schedule_reconnect(VFIOUserPCIDevice *udev)
{
    if (udev->attempt_timer) {
        timer_del(udev->attempt_timer);
    }
    if (vfio_user_pci_will_reconnect(udev)) {
        vfio_user_pci_timer_in(udev, &udev->reconnect_timer,
                               vfio_user_pci_reconnect_timer,
                               udev->reconnect_ms);
    }
}

void vfio_user_pci_disconnected(VFIOUserPCIDevice *udev, const Error *err)
{
    g_autofree char *path = vfio_user_pci_qom_path(udev);

    qapi_event_send_vfio_user_disconnected(DEVICE(udev)->id ?: "", path,
                                           vfio_user_proxy_name(udev->proxy),
                                           error_get_pretty(err));
    vfio_user_pci_schedule_reconnect(udev);
}

void vfio_user_pci_cancel_reconnect(VFIOUserPCIDevice *udev, bool wait)
{
    if (udev->reconnect_timer) {
        timer_del(udev->reconnect_timer);
    }
    if (udev->reconnect_co) {
        udev->reconnect_cancelled = true;
        vfio_user_proxy_abort(udev->proxy);
        if (wait) {
            AIO_WAIT_WHILE(NULL, udev->reconnect_co);
        }
    }
    if (wait) {
        g_clear_pointer(&udev->reconnect_timer, timer_free);
        g_clear_pointer(&udev->attempt_timer, timer_free);
    }
}

bool vfio_user_pci_socket_usable(SocketAddress *addr, Error **errp)
{
    if (addr->type != SOCKET_ADDRESS_TYPE_UNIX &&
        addr->type != SOCKET_ADDRESS_TYPE_FD) {
        error_setg(errp, "socket: vfio-user needs a UNIX socket (a path or "
                   "an fd), not type '%s'",
                   SocketAddressType_str(addr->type));
        return false;
    }
    return true;
}


void coroutine_fn qmp_x_vfio_user_reconnect(const char *id,
                                            SocketAddress *socket,
                                            Error **errp)
{
    DeviceState *dev = qdev_find_recursive(sysbus_get_default(), id);
    VFIOUserPCIDevice *udev;

    if (!dev) {
        Object *obj = object_resolve_path_type(id, TYPE_DEVICE, NULL);

        dev = obj ? DEVICE(obj) : NULL;
    }
    udev = dev ? (VFIOUserPCIDevice *)object_dynamic_cast(OBJECT(dev),
                                                          TYPE_VFIO_USER_PCI)
               : NULL;
    if (!udev || !dev->realized) {
        error_setg(errp, "no vfio-user-pci device '%s'", id);
        return;
    }
    if (udev->conn == VFIO_USER_PCI_RECONNECTING) {
        error_setg(errp, "vfio-user-pci %s: a reconnect is in progress; "
                   "try again", id);
        return;
    }
    if (udev->conn == VFIO_USER_PCI_UNPLUGGING) {
        error_setg(errp, "vfio-user-pci %s is being unplugged", id);
        return;
    }
    if (udev->conn != VFIO_USER_PCI_LOST) {
        error_setg(errp, "vfio-user-pci %s is connected to its server", id);
        return;
    }
    if (!vfio_user_pci_socket_usable(socket, errp)) {
        return;
    }
    if (udev->reconnect_timer) {
        timer_del(udev->reconnect_timer);
    }
    vfio_user_pci_co_reconnect(udev, socket, errp);
}
