/*
 * vfio-user-pci: region ioeventfds (VFIO_USER_DEVICE_GET_REGION_IO_FDS)
 *
 * A server may give, for a BAR, eventfds to signal instead of sending it
 * a REGION_WRITE: a doorbell written by the guest then reaches the server
 * without a message (with KVM, without leaving the kernel).  Plain
 * ioeventfds are registered with memory_region_add_eventfd() on the BAR;
 * "shadow" ioeventfds (the value goes to a shadow memory the server
 * mapped, then the eventfd is signalled: a KVM extension) are emulated
 * here, on the write path: pwrite() to the shadow memory's file (not a
 * mapping of ours, which a server shrinking the file would turn into
 * SIGBUS), then the signal.  ioregionfds are refused (not used).  Every
 * field of the reply is checked; what does not pass is not used, and
 * the device works with messages as before.
 *
 * Ordering: a doorbell signalled on an eventfd could overtake a write
 * still on its way in the socket, which PCI forbids; a device with
 * ioeventfds therefore has no posted writes (pci.c), so every earlier
 * write is done before the doorbell.  The other way round, an access
 * after a doorbell may be served before the server has read its eventfd,
 * as with KVM ioeventfds for any device: a server gives ioeventfds to
 * doorbells whose effect the guest does not read back at once.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>

#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "exec/memory.h"
#include "hw/vfio-user/proxy.h"
#include "ioeventfd.h"
#include "trace.h"

/* The payload of the request and the reply, before the entries */
#define IOFD_HDR        (sizeof(VFIOUserRegionIOFds) - sizeof(VFIOUserHdr))

struct VFIOUserIOEventFD {
    QLIST_ENTRY(VFIOUserIOEventFD) next;
    unsigned int region;
    uint64_t offset;
    uint32_t size;
    bool match;
    uint64_t data;
    EventNotifier notifier;
    /* Registered with memory_region_add_eventfd() (plain ones) */
    MemoryRegion *mr;
    /* The shadow memory's file and where the value goes, or -1 */
    int shadow_fd;
    uint64_t shadow_offset;
};

static bool vfio_user_is_eventfd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    char link[64] = "";

    return readlink(path, link, sizeof(link) - 1) > 0 &&
           !strcmp(link, "anon_inode:[eventfd]");
}

static void vfio_user_ioeventfd_free(VFIOUserIOEventFD *e)
{
    if (e->mr) {
        memory_region_del_eventfd(e->mr, e->offset, e->size, e->match,
                                  e->data, &e->notifier);
    }
    if (e->shadow_fd >= 0) {
        close(e->shadow_fd);
    }
    event_notifier_cleanup(&e->notifier);
    g_free(e);
}

void vfio_user_pci_ioeventfds_exit(VFIOUserPCIDevice *udev)
{
    VFIOUserIOEventFD *e, *tmp;

    QLIST_FOREACH_SAFE(e, &udev->ioeventfds, next, tmp) {
        QLIST_REMOVE(e, next);
        vfio_user_ioeventfd_free(e);
    }
}

/* Can the value of an access of @len bytes go at @offset of @fd? */
static bool vfio_user_shadow_ok(int fd, uint64_t offset, uint32_t len)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
           offset + len >= offset && offset + len <= st.st_size;
}

/* Does [@offset, @offset + @size) of region @index meet an ioeventfd? */
static bool vfio_user_ioeventfd_overlaps(VFIOUserPCIDevice *udev,
                                         unsigned int index, uint64_t offset,
                                         uint32_t size, bool match,
                                         uint64_t data)
{
    VFIOUserIOEventFD *e;

    QLIST_FOREACH(e, &udev->ioeventfds, next) {
        if (e->region != index || offset >= e->offset + e->size ||
            e->offset >= offset + size) {
            continue;
        }
        /* Only the same access with different data matches may share */
        if (!match || !e->match || e->offset != offset || e->size != size ||
            e->data == data) {
            return true;
        }
    }
    return false;
}

/*
 * Check one entry of region @index's reply (@size bytes of region) against
 * the region, the device's other ioeventfds and the descriptors @fds it
 * names (entries may share them).  Returns why it cannot be used, or
 * NULL.
 */
static const char *vfio_user_ioeventfd_check(
    VFIOUserPCIDevice *udev, unsigned int index, uint64_t region_size,
    const VFIOUserSubRegionIOFdShadow *e, bool shadow_fmt, int *fds,
    unsigned int nfds)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    bool match = e->flags & VFIO_USER_IO_FD_FLAG_DATAMATCH;

    if (e->type == VFIO_USER_IO_FD_TYPE_IOREGIONFD) {
        return "an ioregionfd (not supported)";
    }
    if (e->type != VFIO_USER_IO_FD_TYPE_IOEVENTFD &&
        (e->type != VFIO_USER_IO_FD_TYPE_IOEVENTFD_SHADOW || !shadow_fmt)) {
        return "unknown type";
    }
    if (e->flags & ~VFIO_USER_IO_FD_FLAG_DATAMATCH) {
        return "unknown flags";
    }
    if (e->size != 1 && e->size != 2 && e->size != 4 && e->size != 8) {
        return "size not 1, 2, 4 or 8";
    }
    if (e->offset >= region_size || e->size > region_size - e->offset ||
        (e->offset & (e->size - 1))) {
        return "outside the region, or unaligned";
    }
    if (!vdev->bars[index].region.mem || vdev->bars[index].ioport) {
        return "not a memory BAR";
    }
    if (e->fd_index >= nfds || fds[e->fd_index] < 0 ||
        !vfio_user_is_eventfd(fds[e->fd_index])) {
        return "no eventfd at its fd_index";
    }
    if (e->type == VFIO_USER_IO_FD_TYPE_IOEVENTFD_SHADOW &&
        (e->shadow_mem_fd_index >= nfds ||
         fds[e->shadow_mem_fd_index] < 0 ||
         e->shadow_mem_fd_index == e->fd_index ||
         !vfio_user_shadow_ok(fds[e->shadow_mem_fd_index], e->shadow_offset,
                              e->size))) {
        return "no shadow memory large enough at its fd_index";
    }
    if (vfio_user_ioeventfd_overlaps(udev, index, e->offset, e->size, match,
                                     e->datamatch)) {
        /* KVM refuses a second one (and QEMU aborts then) */
        return "it overlaps another";
    }
    return NULL;
}

/*
 * Use a checked entry of region @index's reply, with copies of the
 * descriptors it names in @fds.  Returns why it is not used, or NULL.
 */
static const char *vfio_user_ioeventfd_add(
    VFIOUserPCIDevice *udev, unsigned int index,
    const VFIOUserSubRegionIOFdShadow *ent, int *fds)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    bool shadow = ent->type == VFIO_USER_IO_FD_TYPE_IOEVENTFD_SHADOW;
    VFIOUserIOEventFD *e;
    int fd, sfd = -1;

    fd = qemu_dup(fds[ent->fd_index]);
    if (fd >= 0 && shadow) {
        sfd = qemu_dup(fds[ent->shadow_mem_fd_index]);
        if (sfd < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) {
        return "out of descriptors";
    }

    e = g_new0(VFIOUserIOEventFD, 1);
    e->region = index;
    e->offset = ent->offset;
    e->size = ent->size;
    e->match = ent->flags & VFIO_USER_IO_FD_FLAG_DATAMATCH;
    e->data = e->match ? ent->datamatch : 0;
    e->shadow_fd = sfd;
    e->shadow_offset = ent->shadow_offset;
    event_notifier_init_fd(&e->notifier, fd);
    if (sfd < 0) {
        e->mr = vdev->bars[index].region.mem;
        memory_region_add_eventfd(e->mr, e->offset, e->size, e->match,
                                  e->data, &e->notifier);
    }
    QLIST_INSERT_HEAD(&udev->ioeventfds, e, next);
    trace_vfio_user_ioeventfd(vdev->vbasedev.name, index, e->offset, e->size,
                              e->match, e->data, sfd >= 0);
    return NULL;
}

/* An entry @p of a reply, of the layout @shadow_fmt says, in host order */
static VFIOUserSubRegionIOFdShadow vfio_user_ioeventfd_entry(const void *p,
                                                             bool shadow_fmt)
{
    /* The fields before shadow_mem_fd_index are the same in both */
    const VFIOUserSubRegionIOFdShadow *w = p;
    VFIOUserSubRegionIOFdShadow e = {
        .offset = ldq_le_p(&w->offset),
        .size = ldq_le_p(&w->size),
        .fd_index = ldl_le_p(&w->fd_index),
        .type = ldl_le_p(&w->type),
        .flags = ldl_le_p(&w->flags),
        .shadow_mem_fd_index = UINT32_MAX,
    };

    if (shadow_fmt) {
        e.shadow_mem_fd_index = ldl_le_p(&w->shadow_mem_fd_index);
        e.shadow_offset = ldq_le_p(&w->shadow_offset);
        e.datamatch = ldq_le_p(&w->datamatch);
    } else {
        e.datamatch = ldq_le_p(&((const VFIOUserSubRegionIOFd *)p)->datamatch);
    }
    return e;
}

/*
 * The size of the entries of a reply of @len bytes (after the header)
 * that says @argsz and @count, or 0 with *@why set.
 */
static size_t vfio_user_ioeventfd_entry_size(uint32_t len, uint32_t argsz,
                                             uint32_t count, const char **why)
{
    if (count > VFIO_USER_MAX_IOEVENTFDS) {
        *why = "too many";
    } else if (!count) {
        return 0;
    } else if (argsz != len) {
        *why = "entries of an unknown size";
    } else if (len - IOFD_HDR == count * sizeof(VFIOUserSubRegionIOFdShadow)) {
        return sizeof(VFIOUserSubRegionIOFdShadow);
    } else if (len - IOFD_HDR == count * sizeof(VFIOUserSubRegionIOFd)) {
        return sizeof(VFIOUserSubRegionIOFd);
    } else {
        *why = "entries of an unknown size";
    }
    return 0;
}

/* Ask for region @index's io fds and use what passes the checks. */
static void vfio_user_region_ioeventfds(VFIOUserPCIDevice *udev,
                                        unsigned int index, uint64_t size)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    uint32_t room = IOFD_HDR + VFIO_USER_MAX_IOEVENTFDS *
                               sizeof(VFIOUserSubRegionIOFdShadow);
    g_autofree VFIOUserRegionIOFds *msg =
        g_malloc0(sizeof(VFIOUserHdr) + room);
    int fds[VFIO_USER_MAX_REGION_FDS];
    VFIOUserFDs vfds = { .recv = fds, .max_recv = ARRAY_SIZE(fds) };
    uint32_t count = 0, len, i;
    size_t ent = 0;
    Error *err = NULL;
    const char *why = NULL, *first_bad = NULL;
    unsigned int nbad = 0;
    int ret;

    vfio_user_msg_init(&msg->hdr, VFIO_USER_DEVICE_GET_REGION_IO_FDS,
                       sizeof(*msg));
    msg->argsz = cpu_to_le32(room);
    msg->index = cpu_to_le32(index);
    ret = vfio_user_send_recv(udev->proxy, &msg->hdr, &vfds,
                              sizeof(VFIOUserHdr) + room, 0, &err);
    if (ret < 0) {
        /* Servers without it, or without it for this region */
        trace_vfio_user_ioeventfd_none(vbasedev->name, index,
                                       error_get_pretty(err));
        error_free(err);
        return;
    }
    len = msg->hdr.size - sizeof(msg->hdr);
    if (len < IOFD_HDR || le32_to_cpu(msg->index) != index) {
        why = "malformed reply";
    } else {
        count = le32_to_cpu(msg->count);
        ent = vfio_user_ioeventfd_entry_size(len, le32_to_cpu(msg->argsz),
                                             count, &why);
    }
    for (i = 0; !why && i < count; i++) {
        bool shadow_fmt = ent == sizeof(VFIOUserSubRegionIOFdShadow);
        VFIOUserSubRegionIOFdShadow e =
            vfio_user_ioeventfd_entry((uint8_t *)(msg + 1) + i * ent,
                                      shadow_fmt);
        const char *bad = vfio_user_ioeventfd_check(udev, index, size, &e,
                                                    shadow_fmt, fds,
                                                    vfds.nrecv) ?:
                          vfio_user_ioeventfd_add(udev, index, &e, fds);

        if (bad && !nbad++) {
            first_bad = bad;
        }
    }
    if (nbad) {
        warn_report("vfio-user-pci %s: region %u: %u of %u ioeventfds not "
                    "used (the first: %s)", vbasedev->name, index, nbad,
                    count, first_bad);
    }
    if (why) {
        warn_report("vfio-user-pci %s: region %u io fds not used: %s",
                    vbasedev->name, index, why);
    }
    for (i = 0; i < vfds.nrecv; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

/*
 * Ask the server for the ioeventfds of every BAR QEMU does not map
 * (guest writes to a mapped area never reach us).  Returns whether the
 * device has any.
 */
bool vfio_user_pci_ioeventfds_setup(VFIOUserPCIDevice *udev)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    int i;

    for (i = 0; !udev->no_ioeventfds && i < PCI_ROM_SLOT; i++) {
        VFIORegion *region = &vdev->bars[i].region;

        if (region->size && region->mem && !region->nr_mmaps) {
            vfio_user_region_ioeventfds(udev, i, region->size);
        }
    }
    return !QLIST_EMPTY(&udev->ioeventfds);
}

/*
 * A write that a shadow ioeventfd takes: the value goes to the shadow
 * memory, then the eventfd is signalled.  Returns false for writes it
 * does not take.
 */
bool vfio_user_pci_ioeventfd_write(VFIOUserPCIDevice *udev,
                                   unsigned int index, uint64_t off,
                                   uint32_t size, const void *data)
{
    VFIOUserIOEventFD *e;

    QLIST_FOREACH(e, &udev->ioeventfds, next) {
        if (e->shadow_fd >= 0 && e->region == index && e->offset == off &&
            e->size == size &&
            (!e->match || ldn_le_p(data, size) == e->data)) {
            /* The value is in the shadow memory before the signal */
            if (pwrite(e->shadow_fd, data, size, e->shadow_offset) != size) {
                return false;   /* a message, then */
            }
            event_notifier_set(&e->notifier);
            return true;
        }
    }
    return false;
}
