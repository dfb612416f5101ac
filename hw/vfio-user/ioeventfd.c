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
#include "device.h"
#include "trace.h"

/* The entries of the reply: the spec's (40 bytes) or with shadow (48) */
#define IOFD_ENTRY_SPEC         40
#define IOFD_ENTRY_SHADOW       48
#define IOFD_HDR                16
#define IOFD_TYPE_IOEVENTFD     0
#define IOFD_TYPE_IOREGIONFD    1
#define IOFD_TYPE_SHADOW        2
/* KVM_IOEVENTFD_FLAG_DATAMATCH; PIO and the others are not for BARs */
#define IOFD_FLAG_DATAMATCH     (1u << 0)

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
 * Check one entry of region @index's reply (@size bytes of region); use
 * it, with copies of the descriptors it names from @fds (entries may
 * share them).  Returns why it is not used, or NULL.
 */
static const char *vfio_user_ioeventfd_add(VFIOUserPCIDevice *udev,
                                           unsigned int index,
                                           uint64_t region_size,
                                           const uint8_t *ent, bool shadow_fmt,
                                           int *fds, unsigned int nfds)
{
    VFIOPCIDevice *vdev = &udev->parent_obj;
    uint64_t offset = ldq_le_p(ent);
    uint64_t size = ldq_le_p(ent + 8);
    uint32_t fd_index = ldl_le_p(ent + 16);
    uint32_t type = ldl_le_p(ent + 20);
    uint32_t flags = ldl_le_p(ent + 24);
    uint32_t shadow_index = shadow_fmt ? ldl_le_p(ent + 28) : UINT32_MAX;
    uint64_t shadow_offset = shadow_fmt ? ldq_le_p(ent + 32) : 0;
    uint64_t data = ldq_le_p(ent + (shadow_fmt ? 40 : 32));
    VFIOUserIOEventFD *e;
    bool match = flags & IOFD_FLAG_DATAMATCH;
    int fd, sfd = -1;

    if (type == IOFD_TYPE_IOREGIONFD) {
        return "an ioregionfd (not supported)";
    }
    if (type != IOFD_TYPE_IOEVENTFD &&
        (type != IOFD_TYPE_SHADOW || !shadow_fmt)) {
        return "unknown type";
    }
    if (flags & ~IOFD_FLAG_DATAMATCH) {
        return "unknown flags";
    }
    if (size != 1 && size != 2 && size != 4 && size != 8) {
        return "size not 1, 2, 4 or 8";
    }
    if (offset >= region_size || size > region_size - offset ||
        (offset & (size - 1))) {
        return "outside the region, or unaligned";
    }
    if (!vdev->bars[index].region.mem || vdev->bars[index].ioport) {
        return "not a memory BAR";
    }
    if (fd_index >= nfds || fds[fd_index] < 0 ||
        !vfio_user_is_eventfd(fds[fd_index])) {
        return "no eventfd at its fd_index";
    }
    if (type == IOFD_TYPE_SHADOW &&
        (shadow_index >= nfds || fds[shadow_index] < 0 ||
         shadow_index == fd_index ||
         !vfio_user_shadow_ok(fds[shadow_index], shadow_offset, size))) {
        return "no shadow memory large enough at its fd_index";
    }
    if (vfio_user_ioeventfd_overlaps(udev, index, offset, size, match,
                                     data)) {
        /* KVM refuses a second one (and QEMU aborts then) */
        return "it overlaps another";
    }
    fd = qemu_dup(fds[fd_index]);
    if (fd >= 0 && type == IOFD_TYPE_SHADOW) {
        sfd = qemu_dup(fds[shadow_index]);
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
    e->offset = offset;
    e->size = size;
    e->match = match;
    e->data = match ? data : 0;
    e->shadow_fd = sfd;
    e->shadow_offset = shadow_offset;
    event_notifier_init_fd(&e->notifier, fd);
    if (sfd < 0) {
        e->mr = vdev->bars[index].region.mem;
        memory_region_add_eventfd(e->mr, offset, size, e->match, e->data,
                                  &e->notifier);
    }
    QLIST_INSERT_HEAD(&udev->ioeventfds, e, next);
    trace_vfio_user_ioeventfd(vdev->vbasedev.name, index, offset, size,
                              e->match, e->data, sfd >= 0);
    return NULL;
}

/* Ask for region @index's io fds and use what passes the checks. */
static void vfio_user_region_ioeventfds(VFIOUserPCIDevice *udev,
                                        unsigned int index, uint64_t size)
{
    VFIODevice *vbasedev = &udev->parent_obj.vbasedev;
    uint32_t room = IOFD_HDR + VFIO_USER_MAX_IOEVENTFDS * IOFD_ENTRY_SHADOW;
    g_autofree uint8_t *buf = g_malloc0(sizeof(VFIOUserHdr) + room);
    VFIOUserHdr *msg = (VFIOUserHdr *)buf;
    uint8_t *p = buf + sizeof(*msg);
    int fds[VFIO_USER_MAX_REGION_FDS];
    VFIOUserFDs vfds = { .recv = fds, .max_recv = ARRAY_SIZE(fds) };
    uint32_t argsz, count, len, ent, i;
    Error *err = NULL;
    const char *why = NULL, *first_bad = NULL;
    unsigned int nbad = 0;
    int ret;

    vfio_user_msg_init(msg, VFIO_USER_DEVICE_GET_REGION_IO_FDS,
                       sizeof(*msg) + IOFD_HDR);
    stl_le_p(p, room);
    stl_le_p(p + 8, index);
    ret = vfio_user_send_recv(udev->proxy, msg, &vfds, sizeof(*msg) + room,
                              0, &err);
    if (ret < 0) {
        /* Servers without it, or without it for this region */
        trace_vfio_user_ioeventfd_none(vbasedev->name, index,
                                       error_get_pretty(err));
        error_free(err);
        return;
    }
    len = msg->size - sizeof(*msg);
    argsz = len >= IOFD_HDR ? ldl_le_p(p) : 0;
    count = len >= IOFD_HDR ? ldl_le_p(p + 12) : 0;
    if (len < IOFD_HDR || ldl_le_p(p + 8) != index) {
        why = "malformed reply";
    } else if (count > VFIO_USER_MAX_IOEVENTFDS) {
        why = "too many";
    } else if (count && len - IOFD_HDR == count * IOFD_ENTRY_SHADOW &&
               argsz == len) {
        ent = IOFD_ENTRY_SHADOW;
    } else if (count && len - IOFD_HDR == count * IOFD_ENTRY_SPEC &&
               argsz == len) {
        ent = IOFD_ENTRY_SPEC;
    } else if (count) {
        why = "entries of an unknown size";
    }
    for (i = 0; !why && i < count; i++) {
        const char *bad = vfio_user_ioeventfd_add(udev, index, size,
                                                  p + IOFD_HDR + i * ent,
                                                  ent == IOFD_ENTRY_SHADOW,
                                                  fds, vfds.nrecv);
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
