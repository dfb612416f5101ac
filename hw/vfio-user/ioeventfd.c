/*
 * vfio-user-pci: region ioeventfds (VFIO_USER_DEVICE_GET_REGION_IO_FDS)
 *
 * A server may give, for a BAR, eventfds to signal instead of sending it
 * a REGION_WRITE: a doorbell written by the guest then reaches the server
 * without a message (with KVM, without leaving the kernel).  Plain
 * ioeventfds are registered with memory_region_add_eventfd() on the BAR;
 * "shadow" ioeventfds (the value goes to a shadow memory the server
 * mapped, then the eventfd is signalled: a KVM extension) are emulated
 * here, on the write path.  ioregionfds are refused (not used).  Every
 * field of the reply is checked; what does not pass is not used, and
 * the device works with messages as before.
 *
 * Ordering: a doorbell signalled on an eventfd could overtake a write
 * still on its way in the socket, which PCI forbids; a device with
 * ioeventfds therefore has no posted writes (pci.c), so every earlier
 * write is done before the guest's next access.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>
#include <sys/mman.h>

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
    /* Shadow memory (mapped) and where the value goes, or NULL */
    void *shadow_map;
    size_t shadow_len;
    uint8_t *shadow;
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
    if (e->shadow_map) {
        munmap(e->shadow_map, e->shadow_len);
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

/* Map the @len bytes at @offset of @fd, writable, or NULL. */
static uint8_t *vfio_user_map_shadow(VFIOUserIOEventFD *e, int fd,
                                     uint64_t offset, uint32_t len)
{
    uint64_t page = qemu_real_host_page_size();
    uint64_t start = QEMU_ALIGN_DOWN(offset, page);
    struct stat st;
    void *p;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        offset + len < offset || offset + len > st.st_size) {
        return NULL;
    }
    e->shadow_len = QEMU_ALIGN_UP(offset + len, page) - start;
    p = mmap(NULL, e->shadow_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
             start);
    if (p == MAP_FAILED) {
        return NULL;
    }
    e->shadow_map = p;
    return (uint8_t *)p + (offset - start);
}

/*
 * Check one entry of region @index's reply (@size bytes of region); use
 * it, taking the descriptors it names from @fds (set to -1 when taken).
 * Returns why it is not used, or NULL.
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
    int fd;

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
         shadow_index == fd_index)) {
        return "no shadow memory at its fd_index";
    }

    e = g_new0(VFIOUserIOEventFD, 1);
    e->region = index;
    e->offset = offset;
    e->size = size;
    e->match = flags & IOFD_FLAG_DATAMATCH;
    e->data = e->match ? data : 0;
    if (type == IOFD_TYPE_SHADOW) {
        e->shadow = vfio_user_map_shadow(e, fds[shadow_index], shadow_offset,
                                         size);
        if (!e->shadow) {
            g_free(e);
            return "shadow memory that cannot be mapped";
        }
        close(fds[shadow_index]);
        fds[shadow_index] = -1;
    }
    fd = fds[fd_index];
    fds[fd_index] = -1;
    event_notifier_init_fd(&e->notifier, fd);
    if (!e->shadow) {
        e->mr = vdev->bars[index].region.mem;
        memory_region_add_eventfd(e->mr, offset, size, e->match, e->data,
                                  &e->notifier);
    }
    QLIST_INSERT_HEAD(&udev->ioeventfds, e, next);
    trace_vfio_user_ioeventfd(vdev->vbasedev.name, index, offset, size,
                              e->match, e->data, !!e->shadow);
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
        if (e->shadow && e->region == index && e->offset == off &&
            e->size == size &&
            (!e->match || ldn_le_p(data, size) == e->data)) {
            memcpy(e->shadow, data, size);
            /* The value is in memory before the server hears of it */
            smp_wmb();
            event_notifier_set(&e->notifier);
            return true;
        }
    }
    return false;
}
