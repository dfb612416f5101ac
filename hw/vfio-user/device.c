/*
 * vfio-user device I/O: VFIODeviceIOOps carried by vfio-user messages
 *
 * Every access hw/vfio makes to a device becomes a message to the server
 * through the device's VFIOProxy.  Replies are checked field by field
 * before anything of them reaches hw/vfio: a server is not trusted.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>
#include <sys/stat.h>

#include "qapi/error.h"
#include "block/aio-wait.h"
#include "qemu/error-report.h"
#include "hw/pci/pci.h"
#include "hw/vfio-user/proxy.h"
#include "device.h"
#include "container.h"
#include "ioeventfd.h"
#include "trace.h"

/* Small transfers (MMIO registers) use a message on the stack. */
#define VFIO_USER_SMALL_XFER            64

static VFIOProxy *vbd_proxy(VFIODevice *vbasedev)
{
    return vfio_user_pci_from_vbasedev(vbasedev)->proxy;
}

static const char *const vfio_user_pci_conn_names[] = {
    [VFIO_USER_PCI_REALIZING] = "realizing",
    [VFIO_USER_PCI_CONNECTED] = "connected",
    [VFIO_USER_PCI_LOST] = "lost",
    [VFIO_USER_PCI_RECONNECTING] = "reconnecting",
    [VFIO_USER_PCI_UNPLUGGING] = "unplugging",
};

/* The transitions VFIOUserPCIConn documents */
static bool vfio_user_pci_conn_valid(VFIOUserPCIConn from, VFIOUserPCIConn to)
{
    switch (to) {
    case VFIO_USER_PCI_CONNECTED:
        return from == VFIO_USER_PCI_REALIZING ||
               from == VFIO_USER_PCI_RECONNECTING;
    case VFIO_USER_PCI_LOST:
        return from == VFIO_USER_PCI_CONNECTED ||
               from == VFIO_USER_PCI_RECONNECTING;
    case VFIO_USER_PCI_RECONNECTING:
        return from == VFIO_USER_PCI_LOST;
    case VFIO_USER_PCI_UNPLUGGING:
        return from == VFIO_USER_PCI_CONNECTED || from == VFIO_USER_PCI_LOST;
    default:
        return false;
    }
}

void vfio_user_pci_set_conn(VFIOUserPCIDevice *udev, VFIOUserPCIConn conn)
{
    assert(vfio_user_pci_conn_valid(udev->conn, conn));
    trace_vfio_user_pci_conn(udev->parent_obj.vbasedev.name,
                             vfio_user_pci_conn_names[udev->conn],
                             vfio_user_pci_conn_names[conn]);
    udev->conn = conn;
}

VFIORegion *vfio_user_pci_mapped_bar(VFIOUserPCIDevice *udev, int index)
{
    VFIORegion *region;
    int j;

    if (index >= PCI_ROM_SLOT) {
        return NULL;
    }
    region = &udev->parent_obj.bars[index].region;
    for (j = 0; j < region->nr_mmaps; j++) {
        if (region->mmaps[j].mmap) {
            return region;
        }
    }
    return NULL;
}

/*
 * Writes to memory BARs are posted (sent without waiting for a reply)
 * unless x-no-posted-writes or x-send-queued=off; config space and
 * I/O-port BARs wait.  The server handles messages in order, so a later
 * read by message sees them.  PCI orders a function's posted writes
 * before its later reads, whatever BAR each one targets; a read of an
 * mmap-ed area does not go through the socket and could overtake them.
 * So the rule is per device: a device with mmap-ed areas posts no
 * writes, any other posts them to all its memory BARs.  A doorbell on
 * an eventfd must not overtake a write in the socket either.
 */
void vfio_user_pci_setup_posted_writes(VFIOUserPCIDevice *udev)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    bool post = udev->send_queued && !udev->no_posted_writes &&
                QLIST_EMPTY(&udev->ioeventfds);
    int i;

    for (i = 0; i < PCI_ROM_SLOT; i++) {
        post = post && !vfio_user_pci_mapped_bar(udev, i);
    }
    for (i = 0; i < PCI_ROM_SLOT; i++) {
        vdev->bars[i].region.post_writes = post && !vdev->bars[i].ioport;
    }
    trace_vfio_user_pci_posted_writes(vdev->vbasedev.name, post);
}

/*
 * Send @msg and wait for the reply.  Errors are traced, not reported:
 * the callers in hw/vfio report them with their context, and a lost
 * server is reported once by the proxy's failure callback.
 */
static int vfio_user_call(VFIODevice *vbasedev, VFIOUserHdr *msg,
                          VFIOUserFDs *fds, uint32_t reply_max,
                          unsigned int flags)
{
    VFIOUserContainer *container = vfio_user_container_get(vbasedev);
    Error *local_err = NULL;
    int ret;

    /*
     * DMA maps queued behind the in-flight limit go first: an access must
     * not overtake a map the guest made before it (rare: only a memory
     * transaction of more than 64 maps queues any).
     */
    if (bql_locked() && !qemu_in_coroutine() && container &&
        vfio_user_container_queued(container)) {
        vfio_user_container_drain(container);
    }

    ret = vfio_user_send_recv(vbd_proxy(vbasedev), msg, fds, reply_max,
                              flags, &local_err);
    if (ret < 0) {
        trace_vfio_user_device_error(vbasedev->name, msg->command, ret,
                                     error_get_pretty(local_err));
        error_free(local_err);
    }
    return ret;
}

/*
 * When the server is gone, reads return all ones and writes are
 * dropped, like a PCI device that fell off the bus; the proxy reported
 * the loss once.
 */
static bool vfio_user_server_lost(VFIODevice *vbasedev)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);

    switch (udev->conn) {
    case VFIO_USER_PCI_REALIZING:
        /* A lost server is an error: realize fails */
        return false;
    case VFIO_USER_PCI_LOST:
        return true;
    case VFIO_USER_PCI_RECONNECTING:
        /* The attempt restores the device with these ops */
        return qemu_coroutine_self() != udev->reconnect_co;
    default:
        /* The proxy's state (lost before the failure callback ran) */
        return vfio_user_proxy_state(udev->proxy) != VFIO_PROXY_CONNECTED;
    }
}

/* The payload of a reply, after the header. */
static uint32_t reply_len(VFIOUserHdr *msg)
{
    return msg->size - sizeof(VFIOUserHdr);
}

static int vfio_user_get_device_info(VFIODevice *vbasedev,
                                     struct vfio_device_info *info)
{
    VFIOUserDeviceInfo msg = { };
    int ret;

    vfio_user_msg_init(&msg.hdr, VFIO_USER_DEVICE_GET_INFO, sizeof(msg));
    msg.argsz = cpu_to_le32(sizeof(msg) - sizeof(msg.hdr));
    ret = vfio_user_call(vbasedev, &msg.hdr, NULL, sizeof(msg), 0);
    if (ret < 0) {
        return ret;
    }
    if (reply_len(&msg.hdr) < sizeof(msg) - sizeof(msg.hdr)) {
        return -EINVAL;
    }
    info->flags = le32_to_cpu(msg.flags);
    info->num_regions = le32_to_cpu(msg.num_regions);
    info->num_irqs = le32_to_cpu(msg.num_irqs);
    /* vfio-user has no device info capabilities: never ask for more. */
    info->cap_offset = 0;
    trace_vfio_user_device_info(vbasedev->name, info->flags,
                                info->num_regions, info->num_irqs);
    if (info->num_regions > VFIO_USER_MAX_REGIONS ||
        info->num_irqs > VFIO_USER_MAX_IRQS) {
        return -E2BIG;
    }
    return 0;
}

/*
 * Check the capability chain of a region info of @len bytes and convert
 * it to host byte order in place (hw/vfio parses it as it parses the
 * kernel's): every header inside the reply and 8-byte aligned, each one
 * after the previous (so the chain ends), the capabilities hw/vfio
 * parses complete.  Whether the sparse mmap areas can be mapped is
 * vfio_user_region_mmap_check()'s business.
 */
static bool vfio_user_region_caps_check(struct vfio_region_info *info,
                                        uint32_t len)
{
    uint32_t off = info->cap_offset;
    /* Where the previous capability ends: capabilities do not overlap */
    uint64_t prev_end = sizeof(*info);

    while (off) {
        struct vfio_info_cap_header *hdr;
        uint32_t i, n;

        if (off < prev_end || off > len || (off & 7) ||
            len - off < sizeof(*hdr)) {
            return false;
        }
        prev_end = off + sizeof(*hdr);
        hdr = (void *)info + off;
        hdr->id = le16_to_cpu(hdr->id);
        hdr->version = le16_to_cpu(hdr->version);
        hdr->next = le32_to_cpu(hdr->next);
        switch (hdr->id) {
        case VFIO_REGION_INFO_CAP_SPARSE_MMAP: {
            struct vfio_region_info_cap_sparse_mmap *sparse = (void *)hdr;

            if (len - off < sizeof(*sparse)) {
                return false;
            }
            n = sparse->nr_areas = le32_to_cpu(sparse->nr_areas);
            if (len - off - sizeof(*sparse) <
                (uint64_t)n * sizeof(sparse->areas[0])) {
                return false;
            }
            prev_end = off + sizeof(*sparse) +
                       (uint64_t)n * sizeof(sparse->areas[0]);
            for (i = 0; i < n; i++) {
                sparse->areas[i].offset = le64_to_cpu(sparse->areas[i].offset);
                sparse->areas[i].size = le64_to_cpu(sparse->areas[i].size);
            }
            break;
        }
        case VFIO_REGION_INFO_CAP_TYPE: {
            struct vfio_region_info_cap_type *type = (void *)hdr;

            if (len - off < sizeof(*type)) {
                return false;
            }
            type->type = le32_to_cpu(type->type);
            type->subtype = le32_to_cpu(type->subtype);
            prev_end = off + sizeof(*type);
            break;
        }
        }
        off = hdr->next;
    }
    return true;
}

/*
 * The fds of a region info reply: the spec sends one, libvfio-user one
 * per sparse mmap area, all of the same file.  Keep the first; refuse
 * replies whose fds are different files (each area would need its own).
 */
static int vfio_user_region_fd(int *fds, unsigned int nfds)
{
    struct stat st0, st;
    unsigned int i;
    int ret = 0;

    if (!nfds) {
        return -1;
    }
    if (fstat(fds[0], &st0) < 0) {
        ret = -errno;
    }
    for (i = 1; i < nfds; i++) {
        if (!ret && (fstat(fds[i], &st) < 0 || st.st_dev != st0.st_dev ||
                     st.st_ino != st0.st_ino)) {
            ret = -EINVAL;
        }
        close(fds[i]);
    }
    if (ret) {
        close(fds[0]);
        return ret;
    }
    return fds[0];
}

/*
 * Sizes hw/vfio relies on: config space is a PCI or PCIe config space, a
 * ROM holds at least a ROM header and stays loadable, BARs stay below
 * what a guest can map.
 */
static bool vfio_user_region_size_valid(uint32_t index, uint64_t size)
{
    switch (index) {
    case VFIO_PCI_CONFIG_REGION_INDEX:
        return size == PCI_CONFIG_SPACE_SIZE ||
               size == PCIE_CONFIG_SPACE_SIZE;
    case VFIO_PCI_ROM_REGION_INDEX:
        return !size || (size >= 0x1c && size <= VFIO_USER_MAX_ROM_SIZE);
    default:
        return size <= VFIO_USER_MAX_REGION_SIZE;
    }
}

/*
 * Can [@start, @start + @size) of a region at @info->offset in a file of
 * @file_size bytes be mmap-ed?  It must lie inside the region and inside
 * the file (an access past its end would raise SIGBUS in QEMU), at an
 * offset and size aligned to the host page (what mmap() takes).  Only
 * the areas must lie in the file, not the whole region: SPDK's BAR0 file
 * ends with its doorbells, before the end of the BAR.
 */
static bool vfio_user_area_mappable(struct vfio_region_info *info,
                                    uint64_t file_size, uint64_t start,
                                    uint64_t size)
{
    uint64_t pgmask = qemu_real_host_page_size() - 1;

    return !((info->offset | start | size) & pgmask) &&
           start <= info->size && size <= info->size - start &&
           info->offset <= file_size && start <= file_size - info->offset &&
           size <= file_size - info->offset - start;
}

/*
 * Keep the mmap areas of region @index (its sparse areas, or the whole
 * region) that can be mapped from @fd; an area that cannot is reached by
 * messages, as vfio-pci does with an area it fails to map, with a
 * warning (once: not again on a reconnect, which rereads the region).
 * A server that shrinks its file later can still make QEMU fault: only a
 * sealed memfd would prevent it, and servers pass plain files too.
 */
static void vfio_user_region_mmap_check(VFIODevice *vbasedev, int fd,
                                        struct vfio_region_info *info)
{
    bool quiet = vfio_user_pci_lost(vfio_user_pci_from_vbasedev(vbasedev));
    struct vfio_region_info_cap_sparse_mmap *sparse = NULL;
    struct vfio_info_cap_header *hdr;
    uint64_t file_size;
    struct stat st;
    uint32_t i, left = 0;

    if (!(info->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
        return;
    }
    /* A file of another type has no size to check the areas against */
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        file_size = 0;
    } else {
        file_size = st.st_size;
    }
    hdr = vfio_get_region_info_cap(info, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    if (!hdr) {
        if (!vfio_user_area_mappable(info, file_size, 0, info->size)) {
            info->flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
            if (!quiet) {
                warn_report("vfio-user-pci %s: region %u cannot be mapped "
                            "from the server's file (offset 0x%" PRIx64
                            ", size 0x%" PRIx64 "): it is reached by "
                            "messages", vbasedev->name, info->index,
                            (uint64_t)info->offset, (uint64_t)info->size);
            }
        }
        return;
    }
    sparse = container_of(hdr, struct vfio_region_info_cap_sparse_mmap,
                          header);
    for (i = 0; i < sparse->nr_areas; i++) {
        struct vfio_region_sparse_mmap_area *area = &sparse->areas[i];

        if (!area->size) {
            continue;
        }
        if (vfio_user_area_mappable(info, file_size, area->offset,
                                    area->size)) {
            left++;
            continue;
        }
        if (!quiet) {
            warn_report("vfio-user-pci %s: region %u: its mmap area 0x%"
                        PRIx64 "+0x%" PRIx64 " cannot be mapped from the "
                        "server's file: it is reached by messages",
                        vbasedev->name, info->index, (uint64_t)area->offset,
                        (uint64_t)area->size);
        }
        area->size = 0;
    }
    if (!left) {
        info->flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
    }
}

/*
 * Check the reply @msg to a region info request for region @index with
 * @argsz bytes of room, and convert it into @info (host byte order).
 * Returns 0, 1 when the caller is to ask again with info->argsz bytes,
 * or a negative errno.  @has_fd: the reply came with the region's file.
 */
static int vfio_user_region_info_parse(struct vfio_region_info *info,
                                       VFIOUserRegionInfo *msg,
                                       uint32_t index, uint32_t argsz,
                                       bool has_fd)
{
    uint32_t len = reply_len(&msg->hdr);

    if (len < sizeof(*info) || len > argsz) {
        return -EINVAL;
    }
    memcpy(info, &msg->argsz, len);
    info->argsz = le32_to_cpu(info->argsz);
    info->flags = le32_to_cpu(info->flags);
    info->index = le32_to_cpu(info->index);
    info->cap_offset = le32_to_cpu(info->cap_offset);
    info->size = le64_to_cpu(info->size);
    info->offset = le64_to_cpu(info->offset);

    if (info->index != index || info->size > INT64_MAX ||
        info->offset > INT64_MAX || info->argsz < sizeof(*info)) {
        return -EINVAL;
    }
    if (info->argsz > argsz) {
        info->flags &= ~VFIO_REGION_INFO_FLAG_CAPS;
        info->cap_offset = 0;
        return info->argsz > VFIO_USER_MAX_REGION_INFO ? -E2BIG : 1;
    }
    /* hw/vfio keeps info->argsz bytes: the capabilities must lie there */
    len = MIN(len, info->argsz);
    if (!vfio_user_region_size_valid(index, info->size)) {
        return -EINVAL;
    }
    if (!(info->flags & VFIO_REGION_INFO_FLAG_CAPS)) {
        info->cap_offset = 0;
    } else if (!vfio_user_region_caps_check(info, len)) {
        return -EINVAL;
    }
    if (has_fd && info->offset > INT64_MAX - info->size) {
        return -EINVAL;
    }
    return 0;
}

static int vfio_user_get_region_info(VFIODevice *vbasedev,
                                     struct vfio_region_info *info, int *fd)
{
    uint32_t index = info->index;
    uint32_t argsz = MIN(info->argsz, VFIO_USER_MAX_REGION_INFO);
    uint32_t size = sizeof(VFIOUserHdr) + argsz;
    g_autofree VFIOUserRegionInfo *msg = g_malloc0(size);
    int rfds[VFIO_USER_MAX_REGION_FDS];
    VFIOUserFDs fds = { .recv = rfds, .max_recv = ARRAY_SIZE(rfds) };
    int rfd;
    int ret;

    *fd = -1;
    if (argsz < sizeof(*info)) {
        return -EINVAL;
    }
    vfio_user_msg_init(&msg->hdr, VFIO_USER_DEVICE_GET_REGION_INFO,
                       sizeof(*msg));
    msg->argsz = cpu_to_le32(argsz);
    msg->index = cpu_to_le32(index);
    ret = vfio_user_call(vbasedev, &msg->hdr, &fds, size, 0);
    if (ret < 0) {
        return ret;
    }
    rfd = vfio_user_region_fd(rfds, fds.nrecv);
    if (rfd < -1) {
        trace_vfio_user_bad_reply(vbasedev->name, "region info fds", index);
        return rfd;
    }
    ret = vfio_user_region_info_parse(info, msg, index, argsz, rfd >= 0);
    if (ret) {
        if (rfd >= 0) {
            close(rfd);
        }
        if (ret < 0) {
            trace_vfio_user_bad_reply(vbasedev->name, "region info", index);
        }
        /* 1: the caller asks again with a buffer of info->argsz bytes */
        return MIN(ret, 0);
    }
    if (rfd >= 0) {
        vfio_user_region_mmap_check(vbasedev, rfd, info);
    } else {
        /* Nothing to map from: the region is reached by messages. */
        info->flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
    }
    trace_vfio_user_region_info(vbasedev->name, index, info->flags,
                                info->size, info->offset, rfd);
    *fd = rfd;
    return 0;
}

static int vfio_user_get_irq_info(VFIODevice *vbasedev,
                                  struct vfio_irq_info *info)
{
    VFIOUserIRQInfo msg = { };
    int ret;

    vfio_user_msg_init(&msg.hdr, VFIO_USER_DEVICE_GET_IRQ_INFO, sizeof(msg));
    msg.argsz = cpu_to_le32(sizeof(msg) - sizeof(msg.hdr));
    msg.index = cpu_to_le32(info->index);
    ret = vfio_user_call(vbasedev, &msg.hdr, NULL, sizeof(msg), 0);
    if (ret < 0) {
        return ret;
    }
    if (reply_len(&msg.hdr) < sizeof(msg) - sizeof(msg.hdr) ||
        le32_to_cpu(msg.index) != info->index ||
        le32_to_cpu(msg.count) > VFIO_USER_MAX_IRQ_COUNT) {
        trace_vfio_user_bad_reply(vbasedev->name, "irq info", info->index);
        return -EINVAL;
    }
    info->flags = le32_to_cpu(msg.flags);
    info->count = le32_to_cpu(msg.count);
    trace_vfio_user_irq_info(vbasedev->name, info->index, info->flags,
                             info->count);
    return 0;
}

/* One VFIO_USER_DEVICE_SET_IRQS message, with @nfds eventfds or @data. */
static int vfio_user_set_irqs_one(VFIODevice *vbasedev, uint32_t flags,
                                  uint32_t index, uint32_t start,
                                  uint32_t count, const int *fds,
                                  unsigned int nfds, const void *data,
                                  size_t data_len)
{
    size_t size = sizeof(VFIOUserIRQSet) + data_len;
    g_autofree VFIOUserIRQSet *msg = g_malloc0(size);
    VFIOUserFDs sfds = { .send = fds, .nsend = nfds };

    vfio_user_msg_init(&msg->hdr, VFIO_USER_DEVICE_SET_IRQS, size);
    msg->argsz = cpu_to_le32(size - sizeof(msg->hdr));
    msg->flags = cpu_to_le32(flags);
    msg->index = cpu_to_le32(index);
    msg->start = cpu_to_le32(start);
    msg->count = cpu_to_le32(count);
    if (data_len) {
        memcpy(msg + 1, data, data_len);
    }
    trace_vfio_user_set_irqs(vbasedev->name, flags, index, start, count,
                             nfds);
    return vfio_user_call(vbasedev, &msg->hdr, nfds ? &sfds : NULL,
                          sizeof(VFIOUserHdr), 0);
}

/*
 * MSI and MSI-X vectors have a mask bit in the server's device model
 * too, while the guest's mask bits live in the table the vfio-pci base
 * emulates here: a vector the base gives an eventfd is one the guest
 * unmasked.  Tell the server, which otherwise keeps the vector masked and
 * only sets its pending bit (QEMU's x-vfio-user-server does).  Servers
 * without mask state accept or refuse it; either way it is only a hint.
 */
static void vfio_user_set_msi_mask(VFIODevice *vbasedev,
                                   struct vfio_irq_set *set, uint32_t start,
                                   uint32_t count, bool mask)
{
    uint32_t action = mask ? VFIO_IRQ_SET_ACTION_MASK :
                             VFIO_IRQ_SET_ACTION_UNMASK;

    if ((set->index != VFIO_PCI_MSI_IRQ_INDEX &&
         set->index != VFIO_PCI_MSIX_IRQ_INDEX) ||
        (set->flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) !=
        VFIO_IRQ_SET_ACTION_TRIGGER) {
        return;
    }
    vfio_user_set_irqs_one(vbasedev, VFIO_IRQ_SET_DATA_NONE | action,
                           set->index, start, count, NULL, 0, NULL, 0);
}

/*
 * VFIO_DEVICE_SET_IRQS as messages.  An eventfd array is sent in runs:
 * valid fds in messages of at most max_msg_fds fds each, and a run of -1
 * (no eventfd for those vectors) as DATA_EVENTFD without fds, which
 * servers take as "disable these vectors".  No -1 ever reaches a server.
 */
static int vfio_user_set_irqs_msgs(VFIODevice *vbasedev,
                                   struct vfio_irq_set *set)
{
    const VFIOUserCaps *caps = vfio_user_proxy_caps(vbd_proxy(vbasedev));
    uint32_t data_type = set->flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    const int *fds = (const int *)set->data;
    uint32_t i, n;
    int ret;

    switch (data_type) {
    case VFIO_IRQ_SET_DATA_NONE:
        return vfio_user_set_irqs_one(vbasedev, set->flags, set->index,
                                      set->start, set->count, NULL, 0,
                                      NULL, 0);
    case VFIO_IRQ_SET_DATA_BOOL:
        return vfio_user_set_irqs_one(vbasedev, set->flags, set->index,
                                      set->start, set->count, NULL, 0,
                                      set->data, set->count);
    case VFIO_IRQ_SET_DATA_EVENTFD:
        break;
    default:
        return -EINVAL;
    }

    if (!set->count) {
        return vfio_user_set_irqs_one(vbasedev, set->flags, set->index,
                                      set->start, 0, NULL, 0, NULL, 0);
    }
    for (i = 0; i < set->count; i += n) {
        bool valid = fds[i] >= 0;

        for (n = 1; i + n < set->count && (fds[i + n] >= 0) == valid; n++) {
            if (valid && n == caps->max_send_fds) {
                break;
            }
        }
        if (!valid) {
            vfio_user_set_msi_mask(vbasedev, set, set->start + i, n, true);
        }
        ret = vfio_user_set_irqs_one(vbasedev, set->flags, set->index,
                                     set->start + i, n,
                                     valid ? &fds[i] : NULL, valid ? n : 0,
                                     NULL, 0);
        if (ret < 0) {
            return ret;
        }
        if (valid) {
            vfio_user_set_msi_mask(vbasedev, set, set->start + i, n, false);
        }
    }
    return 0;
}

/* Transfers are split at the server's max_data_xfer_size. */
static uint32_t vfio_user_xfer_max(VFIODevice *vbasedev)
{
    uint64_t max = vfio_user_proxy_caps(vbd_proxy(vbasedev))->max_xfer;

    return MIN(max, 1024 * 1024 * 1024);
}

/*
 * A REGION_READ/REGION_WRITE message with room for @count bytes of data:
 * @small (on the caller's stack: MMIO registers) when it fits, else
 * allocated in *@big.
 */
static VFIOUserRegionRW *vfio_user_rw_msg(uint8_t *small, size_t small_size,
                                          uint32_t count, uint8_t **big)
{
    size_t size = sizeof(VFIOUserRegionRW) + count;

    if (size <= small_size) {
        return (VFIOUserRegionRW *)small;
    }
    *big = g_malloc(size);
    return (VFIOUserRegionRW *)*big;
}

static int vfio_user_region_read(VFIODevice *vbasedev, unsigned int index,
                                 off_t off, uint32_t size, void *data)
{
    uint32_t max = vfio_user_xfer_max(vbasedev);
    uint8_t small[sizeof(VFIOUserRegionRW) + VFIO_USER_SMALL_XFER];
    g_autofree uint8_t *big = NULL;
    VFIOUserRegionRW *msg;
    uint32_t done, count;
    int ret;

    if (vfio_user_server_lost(vbasedev)) {
        memset(data, 0xff, size);
        return size;
    }
    msg = vfio_user_rw_msg(small, sizeof(small), MIN(size, max), &big);
    for (done = 0; done < size; done += count) {
        count = MIN(size - done, max);
        vfio_user_msg_init(&msg->hdr, VFIO_USER_REGION_READ, sizeof(*msg));
        msg->offset = cpu_to_le64(off + done);
        msg->region = cpu_to_le32(index);
        msg->count = cpu_to_le32(count);
        ret = vfio_user_call(vbasedev, &msg->hdr, NULL, sizeof(*msg) + count,
                             0);
        if (ret < 0) {
            if (vfio_user_server_lost(vbasedev)) {
                memset(data, 0xff, size);
                return size;
            }
            return ret;
        }
        if (reply_len(&msg->hdr) != sizeof(*msg) - sizeof(msg->hdr) + count ||
            le64_to_cpu(msg->offset) != off + done ||
            le32_to_cpu(msg->region) != index ||
            le32_to_cpu(msg->count) != count) {
            trace_vfio_user_bad_reply(vbasedev->name, "region read", index);
            return -EINVAL;
        }
        memcpy(data + done, msg->data, count);
    }
    return size;
}

static int vfio_user_region_write(VFIODevice *vbasedev, unsigned int index,
                                  off_t off, uint32_t size, const void *data,
                                  bool post)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    uint32_t max = vfio_user_xfer_max(vbasedev);
    uint8_t small[sizeof(VFIOUserRegionRW) + VFIO_USER_SMALL_XFER];
    g_autofree uint8_t *big = NULL;
    unsigned int flags = 0;
    VFIOUserRegionRW *msg;
    uint32_t done, count;
    int ret;

    if (vfio_user_server_lost(vbasedev)) {
        if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
            /* An attempt restoring config space must do it again */
            udev->reconnect_dirty = true;
        }
        return size;
    }
    if (!QLIST_EMPTY(&udev->ioeventfds) &&
        vfio_user_pci_ioeventfd_write(udev, index, off, size, data)) {
        return size;
    }
    if (post && !udev->no_posted_writes) {
        flags |= VFIO_USER_SEND_NO_REPLY;
    }
    msg = vfio_user_rw_msg(small, sizeof(small), MIN(size, max), &big);
    for (done = 0; done < size; done += count) {
        count = MIN(size - done, max);
        vfio_user_msg_init(&msg->hdr, VFIO_USER_REGION_WRITE,
                           sizeof(*msg) + count);
        msg->offset = cpu_to_le64(off + done);
        msg->region = cpu_to_le32(index);
        msg->count = cpu_to_le32(count);
        memcpy(msg->data, data + done, count);
        ret = vfio_user_call(vbasedev, &msg->hdr, NULL, sizeof(*msg), flags);
        if (ret < 0) {
            return vfio_user_server_lost(vbasedev) ? size : ret;
        }
        if (!(flags & VFIO_USER_SEND_NO_REPLY) &&
            (reply_len(&msg->hdr) < sizeof(*msg) - sizeof(msg->hdr) ||
             le32_to_cpu(msg->count) != count)) {
            trace_vfio_user_bad_reply(vbasedev->name, "region write", index);
            return -EINVAL;
        }
    }
    return size;
}

/*
 * Unmask INTx and check that its line went down.  A server signals the
 * eventfd when its line goes up, so a line that stayed up (the device
 * raised it again before the guest was done) would never be signalled
 * again: x-vfio-user-server signals it again at the unmask (the patch
 * "vfio-user-obj: signal INTx again when it is unmasked while still
 * asserted"); for servers that do not, read the device's interrupt
 * status after the unmask, and if it is still set, signal the eventfd
 * ourselves (the vfio-pci base, or KVM's irqfd, asserts the pin again,
 * as for a fresh interrupt).
 *
 * In a coroutine of the main loop's AioContext (entered at once: the
 * first message leaves from the caller's thread), which nobody waits
 * for, one round at a time: unmasks asked for meanwhile make one more
 * round.  A server that reads its socket once a millisecond (SPDK's
 * target when it polls) would otherwise pace the guest's interrupts:
 * messages sent per interrupt fill the socket faster than it empties
 * it, and the vCPU waits for room.
 */
static void coroutine_fn vfio_user_intx_unmask_co(void *opaque)
{
    VFIOUserPCIDevice *udev = opaque;
    VFIOPCIDevice *vdev = &udev->parent_obj;
    uint64_t buf[DIV_ROUND_UP(sizeof(VFIOUserRegionRW) + 2, 8)];
    VFIOUserRegionRW *msg = (VFIOUserRegionRW *)buf;
    VFIOUserIRQSet unmask = { };
    Error *err = NULL;
    uint16_t status;
    int ret;

    while (udev->intx_unmask_again && vdev->interrupt == VFIO_INT_INTx &&
           !vfio_user_server_lost(&vdev->vbasedev)) {
        udev->intx_unmask_again = false;
        vfio_user_msg_init(&unmask.hdr, VFIO_USER_DEVICE_SET_IRQS,
                           sizeof(unmask));
        unmask.argsz = cpu_to_le32(sizeof(unmask) - sizeof(unmask.hdr));
        unmask.flags = cpu_to_le32(VFIO_IRQ_SET_DATA_NONE |
                                   VFIO_IRQ_SET_ACTION_UNMASK);
        unmask.index = cpu_to_le32(VFIO_PCI_INTX_IRQ_INDEX);
        unmask.count = cpu_to_le32(1);
        ret = vfio_user_co_send_recv(udev->proxy, &unmask.hdr, NULL,
                                     sizeof(unmask.hdr), 0, &err);
        if (ret < 0) {
            trace_vfio_user_device_error(vdev->vbasedev.name,
                                         VFIO_USER_DEVICE_SET_IRQS, ret,
                                         error_get_pretty(err));
            g_clear_pointer(&err, error_free);
            continue;
        }
        vfio_user_msg_init(&msg->hdr, VFIO_USER_REGION_READ, sizeof(*msg));
        msg->offset = cpu_to_le64(PCI_STATUS);
        msg->region = cpu_to_le32(VFIO_PCI_CONFIG_REGION_INDEX);
        msg->count = cpu_to_le32(sizeof(status));
        ret = vfio_user_co_send_recv(udev->proxy, &msg->hdr, NULL,
                                     sizeof(buf), 0, &err);
        if (ret < 0) {
            trace_vfio_user_device_error(vdev->vbasedev.name,
                                         VFIO_USER_REGION_READ, ret,
                                         error_get_pretty(err));
            g_clear_pointer(&err, error_free);
            continue;
        }
        if (reply_len(&msg->hdr) != sizeof(*msg) - sizeof(msg->hdr) +
                                    sizeof(status) ||
            le64_to_cpu(msg->offset) != PCI_STATUS ||
            le32_to_cpu(msg->region) != VFIO_PCI_CONFIG_REGION_INDEX ||
            le32_to_cpu(msg->count) != sizeof(status)) {
            trace_vfio_user_bad_reply(vdev->vbasedev.name, "region read",
                                      VFIO_PCI_CONFIG_REGION_INDEX);
            continue;
        }
        status = lduw_le_p(msg->data);
        if ((status & PCI_STATUS_INTERRUPT) && status != 0xffff &&
            vdev->interrupt == VFIO_INT_INTx && !vdev->intx.pending) {
            trace_vfio_user_intx_recheck(vdev->vbasedev.name);
            event_notifier_set(&vdev->intx.interrupt);
        }
    }
    udev->intx_unmask_again = false;
    udev->intx_unmask_co = NULL;
    aio_wait_kick();
}

static int vfio_user_intx_unmask(VFIODevice *vbasedev)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);

    udev->intx_unmask_again = true;
    if (!udev->intx_unmask_co) {
        udev->intx_unmask_co = qemu_coroutine_create(vfio_user_intx_unmask_co,
                                                     udev);
        aio_co_enter(qemu_get_aio_context(), udev->intx_unmask_co);
    }
    return 0;
}

/* Listen to @fd (-1: to nothing) as KVM's resample eventfd. */
static void vfio_user_intx_set_resample(VFIOUserPCIDevice *udev, int fd);

void vfio_user_intx_exit(VFIOUserPCIDevice *udev)
{
    AIO_WAIT_WHILE(NULL, udev->intx_unmask_co);
    vfio_user_intx_set_resample(udev, -1);
}

/*
 * KVM's resample eventfd: KVM lowered INTx at the guest's EOI and
 * signals it for the device to be unmasked.  A kernel device takes it
 * as its unmask eventfd; a vfio-user server is not asked to (libvfio-
 * user accepts one and never reads it), QEMU reads it and unmasks.
 */
static void vfio_user_intx_resample(void *opaque)
{
    VFIOUserPCIDevice *udev = opaque;
    uint64_t v;

    if (read(udev->intx_resample_fd, &v, sizeof(v)) == sizeof(v)) {
        vfio_user_intx_unmask(&udev->parent_obj.vbasedev);
    }
}

static void vfio_user_intx_set_resample(VFIOUserPCIDevice *udev, int fd)
{
    if (udev->intx_resample_fd >= 0) {
        qemu_set_fd_handler(udev->intx_resample_fd, NULL, NULL, NULL);
        close(udev->intx_resample_fd);
        udev->intx_resample_fd = -1;
    }
    if (fd >= 0) {
        udev->intx_resample_fd = qemu_dup(fd);
        if (udev->intx_resample_fd >= 0) {
            qemu_set_fd_handler(udev->intx_resample_fd,
                                vfio_user_intx_resample, NULL, udev);
        }
    }
}

/*
 * INTx's unmask, and KVM's resample eventfd for it, stay in QEMU; its
 * mask also drops the resample eventfd (hw/vfio masks INTx before it
 * closes it).  Returns 1 if @set is not one of those.
 */
static int vfio_user_intx_set_irqs(VFIOUserPCIDevice *udev,
                                   struct vfio_irq_set *set)
{
    uint32_t action = set->flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    uint32_t data = set->flags & VFIO_IRQ_SET_DATA_TYPE_MASK;

    if (set->index != VFIO_PCI_INTX_IRQ_INDEX) {
        return 1;
    }
    if (action == VFIO_IRQ_SET_ACTION_UNMASK &&
        data == VFIO_IRQ_SET_DATA_EVENTFD && set->count == 1) {
        vfio_user_intx_set_resample(udev, *(int32_t *)set->data);
        return 0;
    }
    if (action == VFIO_IRQ_SET_ACTION_UNMASK &&
        data == VFIO_IRQ_SET_DATA_NONE) {
        return vfio_user_intx_unmask(&udev->parent_obj.vbasedev);
    }
    if (action == VFIO_IRQ_SET_ACTION_MASK ||
        action == VFIO_IRQ_SET_ACTION_TRIGGER) {
        vfio_user_intx_set_resample(udev, -1);
    }
    return 1;
}

/*
 * A server lost on the way (now or in the middle) has nothing left to set
 * up or tear down: not an error of its own (the loss is reported once).
 */
static int vfio_user_set_irqs(VFIODevice *vbasedev, struct vfio_irq_set *set)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    int ret;

    ret = vfio_user_intx_set_irqs(udev, set);
    if (ret <= 0) {
        return ret;
    }
    if (vfio_user_server_lost(vbasedev)) {
        /* An attempt restoring them must do it again */
        udev->reconnect_dirty = true;
        return 0;
    }
    ret = vfio_user_set_irqs_msgs(vbasedev, set);
    return ret < 0 && vfio_user_server_lost(vbasedev) ? 0 : ret;
}

/*
 * A device that cannot be reset is of no use: its server counts as lost
 * (reported once; reconnect-ms gets a fresh one).  hw/vfio's migration
 * aborts QEMU when a reset after a failed state change fails, so this
 * never fails but during realize.
 */
static int vfio_user_device_reset(VFIODevice *vbasedev)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    Error *err = NULL;
    VFIOUserHdr msg;
    int ret;

    if (vfio_user_server_lost(vbasedev)) {
        /* A device off the bus: a reconnect restores it from scratch */
        return 0;
    }
    vfio_user_msg_init(&msg, VFIO_USER_DEVICE_RESET, sizeof(msg));
    ret = vfio_user_call(vbasedev, &msg, NULL, sizeof(msg), 0);
    if (ret < 0 && udev->conn != VFIO_USER_PCI_REALIZING && bql_locked() &&
        !vfio_user_server_lost(vbasedev)) {
        error_setg(&err, "vfio-user server %s: DEVICE_RESET failed: %s",
                   vfio_user_proxy_name(udev->proxy), strerror(-ret));
        vfio_user_proxy_lost(udev->proxy, err);
    }
    return udev->conn == VFIO_USER_PCI_REALIZING ? ret : 0;
}

/* The argsz and flags in front of a DEVICE_FEATURE's data */
#define FEATURE_HDR     (sizeof(VFIOUserDeviceFeature) - sizeof(VFIOUserHdr))

/*
 * DEVICE_FEATURE @flags with @in_len bytes of data @in; the reply's first
 * @out_len bytes of data go to @out.  A SET or PROBE reply repeats the
 * request, a GET reply carries the feature's data.
 */
static int vfio_user_feature_msg(VFIODevice *vbasedev, uint32_t flags,
                                 const void *in, uint32_t in_len,
                                 void *out, uint32_t out_len)
{
    uint32_t room = MAX(in_len, out_len);
    size_t size = sizeof(VFIOUserDeviceFeature) + room;
    g_autofree VFIOUserDeviceFeature *msg = g_malloc0(size);
    int ret;

    vfio_user_msg_init(&msg->hdr, VFIO_USER_DEVICE_FEATURE,
                       sizeof(*msg) + in_len);
    msg->argsz = cpu_to_le32(FEATURE_HDR + room);
    msg->flags = cpu_to_le32(flags);
    if (in_len) {
        memcpy(msg->data, in, in_len);
    }
    ret = vfio_user_call(vbasedev, &msg->hdr, NULL, size, 0);
    if (ret < 0) {
        return ret;
    }
    if (reply_len(&msg->hdr) < FEATURE_HDR + out_len) {
        trace_vfio_user_bad_reply(vbasedev->name, "device feature",
                                  flags & VFIO_DEVICE_FEATURE_MASK);
        return -EINVAL;
    }
    if (out_len) {
        memcpy(out, msg->data, out_len);
    }
    return 0;
}

/*
 * VFIO_DEVICE_FEATURE_DMA_LOGGING_START: the kernel's control passes its
 * ranges by address, the message carries them.
 */
static int vfio_user_dma_logging_start(VFIODevice *vbasedev, uint32_t flags,
                                       struct vfio_device_feature *feature)
{
    struct vfio_device_feature_dma_logging_control *ctl = (void *)feature->data;
    struct vfio_device_feature_dma_logging_range *ranges =
        (void *)(uintptr_t)ctl->ranges;
    g_autofree VFIOUserDMALoggingControl *msg = NULL;
    uint32_t i, len;

    if (feature->argsz < sizeof(*feature) + sizeof(*ctl) ||
        ctl->num_ranges > 64) {
        return -EINVAL;
    }
    len = sizeof(*msg) + ctl->num_ranges * sizeof(msg->ranges[0]);
    msg = g_malloc0(len);
    msg->page_size = cpu_to_le64(ctl->page_size);
    msg->num_ranges = cpu_to_le32(ctl->num_ranges);
    for (i = 0; i < ctl->num_ranges; i++) {
        msg->ranges[i].iova = cpu_to_le64(ranges[i].iova);
        msg->ranges[i].length = cpu_to_le64(ranges[i].length);
    }
    return vfio_user_feature_msg(vbasedev, flags, msg, len, NULL, 0);
}

/*
 * VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: the kernel writes the bitmap
 * at an address, the reply carries it.  One message per section, however
 * large (max_data_xfer_size bounds data transfers, not this; libvfio-user
 * reports only a range that is exactly one of its DMA regions): the
 * bitmap of 2 TiB is 64 MiB.
 */
static int vfio_user_dma_logging_report(VFIODevice *vbasedev, uint32_t flags,
                                        struct vfio_device_feature *feature)
{
    VFIOUserContainer *container = vfio_user_container_get(vbasedev);
    struct vfio_device_feature_dma_logging_report *rep = (void *)feature->data;
    uint8_t *bitmap = (void *)(uintptr_t)rep->bitmap;
    uint64_t pgsize = rep->page_size, pages, bytes;
    g_autofree uint8_t *reply = NULL;
    VFIOUserDMALoggingReport req, *out;
    int ret;

    if (feature->argsz < sizeof(*feature) + sizeof(*rep) || !pgsize ||
        !is_power_of_2(pgsize) || !rep->length ||
        rep->length % pgsize || !bitmap) {
        return -EINVAL;
    }
    pages = rep->length / pgsize;
    bytes = DIV_ROUND_UP(pages, 64) * 8;
    if (bytes > VFIO_USER_MAX_DIRTY_BITMAP) {
        return -E2BIG;
    }
    if (!container ||
        !vfio_user_container_direct_write(container, rep->iova,
                                          rep->length)) {
        /* Memory the server cannot write but by messages: none dirty */
        memset(bitmap, 0, bytes);
        return 0;
    }
    reply = g_malloc(sizeof(*out) + bytes);
    out = (VFIOUserDMALoggingReport *)reply;
    req.iova = cpu_to_le64(rep->iova);
    req.length = cpu_to_le64(rep->length);
    req.page_size = cpu_to_le64(pgsize);
    ret = vfio_user_feature_msg(vbasedev, flags, &req, sizeof(req), out,
                                sizeof(*out) + bytes);
    if (ret < 0) {
        return ret;
    }
    if (le64_to_cpu(out->iova) != rep->iova ||
        le64_to_cpu(out->length) != rep->length ||
        le64_to_cpu(out->page_size) != pgsize) {
        trace_vfio_user_bad_reply(vbasedev->name, "DMA logging report", 0);
        return -EINVAL;
    }
    memcpy(bitmap, out->bitmap, bytes);
    trace_vfio_user_dma_logging_report(vbasedev->name, rep->iova,
                                       rep->length);
    return 0;
}

/* VFIO_DEVICE_FEATURE_MIGRATION: the migration flags the server has */
static int vfio_user_feature_migration(VFIODevice *vbasedev, uint32_t flags,
                                       struct vfio_device_feature *feature)
{
    uint64_t val;
    int ret;

    ret = vfio_user_feature_msg(vbasedev, flags, NULL, 0, &val, sizeof(val));
    if (!ret) {
        *(uint64_t *)feature->data = le64_to_cpu(val);
    }
    return ret;
}

/*
 * VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: the data moves by
 * MIG_DATA_READ/WRITE, never by an fd.
 */
static int vfio_user_feature_mig_state(VFIODevice *vbasedev, uint32_t flags,
                                       struct vfio_device_feature *feature)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    struct vfio_device_feature_mig_state *state = (void *)feature->data;
    uint32_t st[2];
    int ret;

    if (flags & VFIO_DEVICE_FEATURE_SET) {
        st[0] = cpu_to_le32(state->device_state);
        st[1] = cpu_to_le32(UINT32_MAX);
        ret = vfio_user_feature_msg(vbasedev, flags, st, sizeof(st), NULL, 0);
        if (!ret) {
            state->data_fd = -1;
            udev->mig_data_read = 0;
            trace_vfio_user_mig_state(vbasedev->name, state->device_state);
        }
        return ret;
    }
    ret = vfio_user_feature_msg(vbasedev, flags, NULL, 0, st, sizeof(st));
    if (!ret) {
        state->device_state = le32_to_cpu(st[0]);
        state->data_fd = -1;
    }
    return ret;
}

/*
 * VFIO_DEVICE_FEATURE_MIG_DATA_SIZE.  Servers without it (libvfio-user):
 * the data read in this phase so far is the best guess of what
 * stop-and-copy sends, with a floor that keeps hw/vfio's read buffer
 * useful.
 */
static int vfio_user_feature_mig_data_size(VFIODevice *vbasedev,
                                           uint32_t flags,
                                           struct vfio_device_feature *feature)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    struct vfio_device_feature_mig_data_size *dsize = (void *)feature->data;
    uint64_t val;
    int ret;

    ret = vfio_user_feature_msg(vbasedev, flags, NULL, 0, &val, sizeof(val));
    if (ret == -ENOTCONN || ret == -ETIMEDOUT) {
        return ret;
    }
    val = ret ? udev->mig_data_read : le64_to_cpu(val);
    /* A server's 0 would fail hw/vfio's buffer, a huge one overflow */
    dsize->stop_copy_length = MIN(MAX(val, VFIO_USER_MIG_DATA_MIN_ESTIMATE),
                                  VFIO_USER_MIG_DATA_MAX_ESTIMATE);
    return 0;
}

static int vfio_user_feature_logging_start(VFIODevice *vbasedev,
                                           uint32_t flags,
                                           struct vfio_device_feature *feature)
{
    int ret = vfio_user_dma_logging_start(vbasedev, flags, feature);

    trace_vfio_user_dma_logging(vbasedev->name, true, ret);
    return ret;
}

static int vfio_user_feature_logging_stop(VFIODevice *vbasedev,
                                          uint32_t flags,
                                          struct vfio_device_feature *feature)
{
    int ret = vfio_user_feature_msg(vbasedev, flags, NULL, 0, NULL, 0);

    trace_vfio_user_dma_logging(vbasedev->name, false, ret);
    return ret;
}

/*
 * The features of the kernel's uAPI that vfio-user carries: the
 * operations each takes (GET or SET, PROBE always), the size of its data
 * in the kernel's struct, and what a lost server does to it.
 */
typedef struct VFIOUserFeature {
    uint32_t ops;
    size_t data_len;
    /* When the server is lost: passes (0), or fails with -ENOTCONN */
    bool passes_when_lost;
    int (*handle)(VFIODevice *vbasedev, uint32_t flags,
                  struct vfio_device_feature *feature);
} VFIOUserFeature;

static const VFIOUserFeature vfio_user_features[] = {
    [VFIO_DEVICE_FEATURE_MIGRATION] = {
        VFIO_DEVICE_FEATURE_GET, sizeof(uint64_t), false,
        vfio_user_feature_migration,
    },
    /*
     * Like a write to a device off the bus, a state change passes (the
     * source goes back to RUNNING after a failed migration); whatever
     * needs the device's data fails.
     */
    [VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE] = {
        VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET,
        sizeof(struct vfio_device_feature_mig_state), true,
        vfio_user_feature_mig_state,
    },
    [VFIO_DEVICE_FEATURE_MIG_DATA_SIZE] = {
        VFIO_DEVICE_FEATURE_GET,
        sizeof(struct vfio_device_feature_mig_data_size), false,
        vfio_user_feature_mig_data_size,
    },
    [VFIO_DEVICE_FEATURE_DMA_LOGGING_START] = {
        VFIO_DEVICE_FEATURE_SET, 0, false, vfio_user_feature_logging_start,
    },
    [VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP] = {
        VFIO_DEVICE_FEATURE_SET, 0, true, vfio_user_feature_logging_stop,
    },
    [VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT] = {
        VFIO_DEVICE_FEATURE_GET, 0, false, vfio_user_dma_logging_report,
    },
};

/*
 * VFIO_DEVICE_FEATURE as DEVICE_FEATURE messages, for hw/vfio's migration
 * and dirty tracking.  The features of vfio_user_features[] are
 * translated; others are not passed (-ENOTTY).
 */
static int vfio_user_device_feature(VFIODevice *vbasedev,
                                    struct vfio_device_feature *feature)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    uint32_t flags = feature->flags;
    uint32_t index = flags & VFIO_DEVICE_FEATURE_MASK;
    uint32_t op = flags & ~VFIO_DEVICE_FEATURE_MASK;
    uint32_t data_len = feature->argsz - MIN(feature->argsz, sizeof(*feature));
    const VFIOUserFeature *f = index < ARRAY_SIZE(vfio_user_features) ?
                               &vfio_user_features[index] : NULL;

    /* Without "migration" in the server's VERSION, none passes */
    if (!udev->migratable || !f || !f->handle) {
        return -ENOTTY;
    }
    if (!(op & VFIO_DEVICE_FEATURE_PROBE) && data_len < f->data_len) {
        return -EINVAL;
    }
    if (vfio_user_server_lost(vbasedev)) {
        if (op != VFIO_DEVICE_FEATURE_SET || !f->passes_when_lost) {
            return -ENOTCONN;
        }
        if (index == VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE) {
            ((struct vfio_device_feature_mig_state *)feature->data)->data_fd =
                -1;
        }
        return 0;
    }
    if (op & VFIO_DEVICE_FEATURE_PROBE) {
        return vfio_user_feature_msg(vbasedev, flags, NULL, 0, NULL, 0);
    }
    if (op != (op & f->ops) || !is_power_of_2(op)) {
        return -EINVAL;
    }
    return f->handle(vbasedev, flags, feature);
}

/*
 * MIG_DATA_READ: at most one transfer's worth; a reply shorter than asked
 * means the device has no more data for now (the caller reads again in
 * the next phase or iteration).
 */
static ssize_t vfio_user_mig_data_read(VFIODevice *vbasedev, void *buf,
                                       size_t size)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    uint32_t count = MIN(size, vfio_user_xfer_max(vbasedev));
    g_autofree VFIOUserMigData *msg = g_malloc0(sizeof(*msg) + count);
    uint32_t got;
    int ret;

    if (vfio_user_server_lost(vbasedev)) {
        return -ENOTCONN;
    }
    vfio_user_msg_init(&msg->hdr, VFIO_USER_MIG_DATA_READ, sizeof(*msg));
    msg->argsz = cpu_to_le32(sizeof(*msg) - sizeof(msg->hdr) + count);
    msg->size = cpu_to_le32(count);
    ret = vfio_user_call(vbasedev, &msg->hdr, NULL, sizeof(*msg) + count, 0);
    if (ret < 0) {
        return ret;
    }
    /* libvfio-user pads its reply to the size asked for */
    got = le32_to_cpu(msg->size);
    if (got > count ||
        reply_len(&msg->hdr) < sizeof(*msg) - sizeof(msg->hdr) + got) {
        trace_vfio_user_bad_reply(vbasedev->name, "migration data read", 0);
        return -EINVAL;
    }
    memcpy(buf, msg->data, got);
    udev->mig_data_read += got;
    trace_vfio_user_mig_data(vbasedev->name, false, count, got);
    return got;
}

/* MIG_DATA_WRITE: all of @buf, in transfers of at most max_data_xfer_size */
static ssize_t vfio_user_mig_data_write(VFIODevice *vbasedev, const void *buf,
                                        size_t size)
{
    uint32_t max = vfio_user_xfer_max(vbasedev);
    g_autofree VFIOUserMigData *msg = g_malloc0(sizeof(*msg) +
                                                MIN(size, max));
    size_t done;
    uint32_t count;
    int ret;

    if (vfio_user_server_lost(vbasedev)) {
        return -ENOTCONN;
    }
    for (done = 0; done < size; done += count) {
        count = MIN(size - done, max);
        vfio_user_msg_init(&msg->hdr, VFIO_USER_MIG_DATA_WRITE,
                           sizeof(*msg) + count);
        msg->argsz = cpu_to_le32(sizeof(*msg) - sizeof(msg->hdr) + count);
        msg->size = cpu_to_le32(count);
        memcpy(msg->data, (const uint8_t *)buf + done, count);
        ret = vfio_user_call(vbasedev, &msg->hdr, NULL, sizeof(*msg), 0);
        if (ret < 0) {
            return done ? done : ret;
        }
        trace_vfio_user_mig_data(vbasedev->name, true, count, count);
    }
    return size;
}

const VFIODeviceIOOps vfio_user_device_io_ops = {
    .get_device_info = vfio_user_get_device_info,
    .get_region_info = vfio_user_get_region_info,
    .get_irq_info = vfio_user_get_irq_info,
    .set_irqs = vfio_user_set_irqs,
    .region_read = vfio_user_region_read,
    .region_write = vfio_user_region_write,
    .device_reset = vfio_user_device_reset,
    .device_feature = vfio_user_device_feature,
    .mig_data_read = vfio_user_mig_data_read,
    .mig_data_write = vfio_user_mig_data_write,
};
