/*
 * vfio-user IOMMU backend: guest memory as DMA_MAP/DMA_UNMAP messages
 *
 * Each vfio-user-pci device gets a container of its own (its server sees
 * only its own maps).  The vfio memory listener calls dma_map/dma_unmap
 * for the guest RAM sections; they become messages.  RAM backed by a
 * shareable fd is passed with that fd and its offset in the file, so the
 * server can mmap it; other RAM is announced without an fd and the server
 * reaches it with DMA_READ/DMA_WRITE, which vfio_user_container_dma_rw()
 * serves after checking them against the maps.
 *
 * The listener runs inside memory transactions, where no event loop may
 * run (bottom halves and coroutines of unrelated code would run in the
 * middle of the transaction): it never waits.  Each map or unmap becomes
 * a message sent at once by a coroutine of its own, at most
 * VFIO_USER_DMA_MAX_INFLIGHT at a time; the others queue and are sent,
 * in order, as replies come in.  Failures are reported when the last
 * reply is in.  Only realize and unrealize, outside any transaction,
 * wait for the replies (vfio_user_container_drain()), and so do the
 * device's own messages while maps are still queued, so that a device
 * access never overtakes a map made before it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>

#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/iova-tree.h"
#include "qemu/main-loop.h"
#include "qemu/coroutine.h"
#include "exec/address-spaces.h"
#include "exec/ramblock.h"
#include "system/dma.h"
#include "hw/vfio/vfio-common.h"
#include "hw/vfio/vfio-container-base.h"
#include "device.h"
#include "container.h"
#include "trace.h"

/* DMA map/unmap messages in flight at most, per device */
#define VFIO_USER_DMA_MAX_INFLIGHT      64

typedef struct VFIOUserDMAOp VFIOUserDMAOp;

/* A map, as the listener made it: what a new server gets again */
typedef struct VFIOUserMap {
    QLIST_ENTRY(VFIOUserMap) next;
    hwaddr iova;
    uint64_t size;
    void *vaddr;
    bool readonly;
    /* Sent with the RAM's fd: the server may write it without a message */
    bool with_fd;
    /* Tells this map from a later one of the same range */
    uint64_t seq;
    /* Sent to the current server (else a replay sends it) */
    bool on_server;
} VFIOUserMap;

struct VFIOUserContainer {
    VFIOContainerBase bcontainer;
    VFIOUserPCIDevice *udev;
    AddressSpace *as;
    /* What the server may access: the maps sent, by IOVA */
    IOVATree *maps;
    unsigned int nr_maps;
    /* The same maps, with what it takes to send them again */
    QLIST_HEAD(, VFIOUserMap) map_list;
    uint64_t next_seq;
    /* Coroutines sending messages and waiting for their replies */
    unsigned int inflight;
    /* Messages waiting for one of them, in order */
    QSIMPLEQ_HEAD(, VFIOUserDMAOp) pending;
    /* Inside a memory transaction (listener begin/commit) */
    bool in_transaction;
    /* Detaching: failures are printed, realize is over */
    bool detaching;
    /*
     * No server to send maps to (lost, or a new one not checked yet):
     * maps and unmaps only change the list; a replay sends it.
     */
    bool offline;
    /* The first failure since all replies were last in, and the count */
    Error *batch_err;
    unsigned int batch_failures;
};

OBJECT_DECLARE_SIMPLE_TYPE(VFIOUserContainer, VFIO_IOMMU_USER)

struct VFIOUserDMAOp {
    QSIMPLEQ_ENTRY(VFIOUserDMAOp) next;
    VFIOUserContainer *container;
    /*
     * The RAM whose fd goes with a DMA_MAP (a reference), or NULL; the
     * fd is duplicated when the message is sent (queued messages hold
     * no fd), and the duplicate is owned by the message.
     */
    MemoryRegion *mr;
    int fd;
    /* The map a DMA_MAP makes (VFIOUserMap.seq) */
    uint64_t seq;
    union {
        VFIOUserHdr hdr;
        VFIOUserDMAMap map;
        VFIOUserDMAUnmap unmap;
    } msg;
};

static VFIOProxy *container_proxy(const VFIOUserContainer *c)
{
    return c->udev->proxy;
}

static const char *container_name(const VFIOUserContainer *c)
{
    return c->udev->parent_obj.vbasedev.name;
}

/* Record a map; its sequence number, or 0 if it overlaps another. */
static uint64_t vfio_user_map_add(VFIOUserContainer *c, const DMAMap *window,
                                  void *vaddr)
{
    VFIOUserMap *m;

    if (iova_tree_insert(c->maps, window) != IOVA_OK) {
        return 0;
    }
    c->nr_maps++;
    m = g_new(VFIOUserMap, 1);
    *m = (VFIOUserMap) {
        .iova = window->iova, .size = window->size + 1, .vaddr = vaddr,
        .readonly = window->perm == IOMMU_RO, .seq = ++c->next_seq,
    };
    QLIST_INSERT_HEAD(&c->map_list, m, next);
    return m->seq;
}

static VFIOUserMap *vfio_user_map_find(VFIOUserContainer *c, hwaddr iova,
                                       uint64_t size)
{
    VFIOUserMap *m;

    QLIST_FOREACH(m, &c->map_list, next) {
        if (m->iova == iova && m->size == size) {
            return m;
        }
    }
    return NULL;
}

/*
 * Forget the map of exactly [@iova, @iova + @size), if there is one (and
 * it is map @seq, unless @seq is 0).
 */
static void vfio_user_map_remove(VFIOUserContainer *c, hwaddr iova,
                                 uint64_t size, uint64_t seq)
{
    VFIOUserMap *m = vfio_user_map_find(c, iova, size);
    DMAMap window = { .iova = iova, .size = size - 1 };

    if (m && (!seq || m->seq == seq)) {
        iova_tree_remove(c->maps, window);
        c->nr_maps--;
        QLIST_REMOVE(m, next);
        g_free(m);
    }
}

static void vfio_user_dma_failed(VFIOUserContainer *c, Error *err)
{
    c->batch_failures++;
    if (!c->batch_err) {
        c->batch_err = err;
    } else {
        error_free(err);
    }
}

/*
 * Report the failures collected since the replies were last all in: at
 * realize they fail it (vfio_user_attach_device() takes them), later
 * they are printed once per batch.
 */
static void vfio_user_dma_report(VFIOUserContainer *c)
{
    VFIOContainerBase *bcontainer = &c->bcontainer;
    Error *err = g_steal_pointer(&c->batch_err);

    if (!err) {
        return;
    }
    if (c->batch_failures > 1) {
        error_append_hint(&err, "%u DMA map/unmap messages failed\n",
                          c->batch_failures);
    }
    c->batch_failures = 0;
    error_prepend(&err, "vfio-user-pci %s: ", container_name(c));
    if (!bcontainer->initialized && !bcontainer->error && !c->detaching) {
        bcontainer->error = err;
    } else {
        error_report_err(err);
    }
}

static void vfio_user_dma_op_free(VFIOUserDMAOp *op)
{
    if (op->fd >= 0) {
        close(op->fd);
    }
    if (op->mr) {
        memory_region_unref(op->mr);
    }
    g_free(op);
}

/*
 * The fd that goes with @op, duplicated now that it is sent; false if
 * that fails.
 */
static bool vfio_user_dma_op_get_fd(VFIOUserDMAOp *op, Error **errp)
{
    if (op->mr && op->fd < 0) {
        op->fd = qemu_dup(memory_region_get_fd(op->mr));
        if (op->fd < 0) {
            error_setg_errno(errp, errno, "cannot duplicate the file "
                             "descriptor of its RAM");
            return false;
        }
    }
    return true;
}

/* Send @op and wait for its reply. */
static void coroutine_fn vfio_user_dma_co_one(VFIOUserContainer *c,
                                              VFIOUserDMAOp *op)
{
    VFIOUserFDs fds = { .send = &op->fd, .nsend = 1 };
    bool is_map = op->msg.hdr.command == VFIO_USER_DMA_MAP;
    uint64_t iova = le64_to_cpu(is_map ? op->msg.map.address :
                                op->msg.unmap.address);
    uint64_t size = le64_to_cpu(is_map ? op->msg.map.size :
                                op->msg.unmap.size);
    Error *err = NULL;
    int ret = -EIO;

    if (vfio_user_dma_op_get_fd(op, &err)) {
        ret = vfio_user_co_send_recv(container_proxy(c), &op->msg.hdr,
                                     op->fd >= 0 ? &fds : NULL,
                                     sizeof(op->msg), 0, &err);
    }
    trace_vfio_user_dma(container_name(c), is_map ? "map" : "unmap", iova,
                        size, op->fd, ret);
    if (ret < 0 &&
        vfio_user_proxy_state(container_proxy(c)) != VFIO_PROXY_CONNECTED) {
        /* The server is lost (reported once, by the device): no maps */
        error_free(err);
    } else if (ret < 0) {
        error_prepend(&err, "DMA_%s of 0x%" PRIx64 "+0x%" PRIx64 ": ",
                      is_map ? "MAP" : "UNMAP", iova, size);
        vfio_user_dma_failed(c, err);
        if (is_map) {
            /*
             * The server did not take it: it must not be used.  Unless it
             * is already gone (unmapped while this message was in
             * flight): then there is nothing to remove, and nothing of
             * another map's (a later one of the same range) to remove.
             */
            vfio_user_map_remove(c, iova, size, op->seq);
        }
    }
}

/* A sender: its message, then the queued ones, in order. */
static void coroutine_fn vfio_user_dma_co(void *opaque)
{
    VFIOUserDMAOp *op = opaque;
    VFIOUserContainer *c = op->container;

    while (op) {
        vfio_user_dma_co_one(c, op);
        vfio_user_dma_op_free(op);
        op = QSIMPLEQ_FIRST(&c->pending);
        if (op) {
            QSIMPLEQ_REMOVE_HEAD(&c->pending, next);
        }
    }
    if (--c->inflight == 0) {
        vfio_user_dma_report(c);
    }
    aio_wait_kick();
}

static void vfio_user_drain_timeout(void *opaque)
{
    bool *expired = opaque;

    *expired = true;
    aio_wait_kick();
}

/*
 * Wait until every map and unmap message has its reply, for one reply
 * timeout at most, however many are queued: then the server is lost
 * (the queue then fails fast).  Runs an event loop: never call it from
 * a memory listener or a coroutine.
 */
void vfio_user_container_drain(VFIOUserContainer *c)
{
    VFIOProxy *proxy = container_proxy(c);
    uint32_t timeout_ms = vfio_user_proxy_timeout(proxy);
    bool expired = false;
    QEMUTimer timer;

    assert(!qemu_in_coroutine());
    if (!c->inflight) {
        return;
    }
    /* A timer of the AioContext AIO_WAIT_WHILE() polls */
    aio_timer_init(qemu_get_aio_context(), &timer, QEMU_CLOCK_REALTIME,
                   SCALE_MS, vfio_user_drain_timeout, &expired);
    if (timeout_ms) {
        timer_mod(&timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                  timeout_ms);
    }
    AIO_WAIT_WHILE(NULL, c->inflight > 0 && !expired);
    if (c->inflight) {
        Error *err = NULL;

        error_setg(&err, "vfio-user server %s: %u DMA map messages not "
                   "answered in %u ms", vfio_user_proxy_name(proxy),
                   c->inflight, timeout_ms);
        vfio_user_proxy_lost(proxy, err);
        AIO_WAIT_WHILE(NULL, c->inflight > 0);
    }
    timer_del(&timer);
}

bool vfio_user_container_queued(VFIOUserContainer *c)
{
    return !QSIMPLEQ_EMPTY(&c->pending);
}

/* Have the message of @op sent: now, or after those queued before it. */
static int vfio_user_dma_send(VFIOUserContainer *c, VFIOUserDMAOp *op)
{
    if (c->offline ||
        vfio_user_proxy_state(container_proxy(c)) != VFIO_PROXY_CONNECTED) {
        /* A lost server has no maps left to change. */
        vfio_user_dma_op_free(op);
        return 0;
    }
    op->container = c;
    if (c->inflight >= VFIO_USER_DMA_MAX_INFLIGHT) {
        /* Bound the coroutines (and message ids) maps use at once */
        QSIMPLEQ_INSERT_TAIL(&c->pending, op, next);
        return 0;
    }
    c->inflight++;
    aio_co_enter(qemu_get_aio_context(),
                 qemu_coroutine_create(vfio_user_dma_co, op));
    return 0;
}

/*
 * Refuse a map: a failure reported with those of the messages in flight.
 * Outside a memory transaction the caller learns it too (virtio-mem's
 * plug rolls back when the map fails); inside one, hw/vfio could only
 * abort on it.
 */
static int vfio_user_dma_refuse(VFIOUserContainer *c, hwaddr iova,
                                ram_addr_t size, const char *why)
{
    Error *err = NULL;

    error_setg(&err, "DMA_MAP of 0x%" HWADDR_PRIx "+0x%" PRIx64
               " refused: %s", iova, (uint64_t)size, why);
    vfio_user_dma_failed(c, err);
    if (!c->inflight) {
        vfio_user_dma_report(c);
    }
    return c->in_transaction ? 0 : -EINVAL;
}

/*
 * The DMA_MAP message of [@iova, @iova + @size) at host address @vaddr,
 * with its RAM (a reference: the RAMBlock and its fd must not go before
 * the message leaves, nor the fd number be reused) when the RAM is
 * shareable.
 */
static VFIOUserDMAOp *vfio_user_dma_map_op(hwaddr iova, uint64_t size,
                                           void *vaddr, bool readonly)
{
    VFIOUserDMAOp *op = g_new0(VFIOUserDMAOp, 1);
    MemoryRegion *mr;
    off_t offset = 0;
    int fd = -1;

    mr = vfio_container_dma_map_source(vaddr, &fd, &offset);
    if (!mr || !mr->ram_block || !qemu_ram_is_shared(mr->ram_block) ||
        fd < 0) {
        /* Not shareable: the server gets the window without an fd. */
        offset = 0;
    } else {
        memory_region_ref(mr);
        op->mr = mr;
    }
    op->fd = -1;
    vfio_user_msg_init(&op->msg.hdr, VFIO_USER_DMA_MAP, sizeof(op->msg.map));
    op->msg.map.argsz = cpu_to_le32(sizeof(op->msg.map) -
                                    sizeof(op->msg.hdr));
    op->msg.map.flags = cpu_to_le32(VFIO_USER_DMA_MAP_READ |
                                    (readonly ? 0 : VFIO_USER_DMA_MAP_WRITE));
    op->msg.map.offset = cpu_to_le64(offset);
    op->msg.map.address = cpu_to_le64(iova);
    op->msg.map.size = cpu_to_le64(size);
    return op;
}

static int vfio_user_dma_map(const VFIOContainerBase *bcontainer,
                             hwaddr iova, ram_addr_t size, void *vaddr,
                             bool readonly)
{
    VFIOUserContainer *c = VFIO_IOMMU_USER(bcontainer);
    const VFIOUserCaps *caps = vfio_user_proxy_caps(container_proxy(c));
    uint64_t pgmask = (1ULL << ctz64(caps->pgsizes)) - 1;
    DMAMap window = {
        .iova = iova, .size = size - 1,
        .perm = readonly ? IOMMU_RO : IOMMU_RW,
    };
    VFIOUserDMAOp *op;
    uint64_t seq;

    if (!size || (iova & pgmask) || (size & pgmask)) {
        return vfio_user_dma_refuse(c, iova, size, "not aligned to the "
                                    "server's smallest DMA page size "
                                    "(pgsizes)");
    }
    if (c->nr_maps >= caps->max_dma_maps) {
        return vfio_user_dma_refuse(c, iova, size,
                                    "the server's max_dma_maps is reached");
    }
    seq = vfio_user_map_add(c, &window, vaddr);
    if (!seq) {
        return vfio_user_dma_refuse(c, iova, size,
                                    "it overlaps an existing map");
    }
    op = vfio_user_dma_map_op(iova, size, vaddr, readonly);
    op->seq = seq;
    QLIST_FIRST(&c->map_list)->on_server = !c->offline;
    QLIST_FIRST(&c->map_list)->with_fd = op->mr != NULL;
    return vfio_user_dma_send(c, op);
}

bool vfio_user_container_direct_write(VFIOUserContainer *c, hwaddr iova,
                                      uint64_t size)
{
    VFIOUserMap *m;

    QLIST_FOREACH(m, &c->map_list, next) {
        if (m->with_fd && !m->readonly && iova < m->iova + m->size &&
            m->iova < iova + size) {
            return true;
        }
    }
    return false;
}

void vfio_user_container_set_offline(VFIOUserContainer *c)
{
    VFIOUserMap *m;

    c->offline = true;
    QLIST_FOREACH(m, &c->map_list, next) {
        m->on_server = false;
    }
}

/*
 * Send the server every map it does not have, one at a time, in the
 * calling coroutine, until there is none left: maps the listener adds
 * meanwhile are sent by the listener itself (the container is online),
 * maps it removes before they were sent are not sent at all.
 */
int coroutine_fn vfio_user_container_co_replay(VFIOUserContainer *c,
                                               Error **errp)
{
    c->offline = false;
    for (;;) {
        VFIOUserMap *m;
        VFIOUserDMAOp *op;
        VFIOUserFDs fds;
        hwaddr iova;
        uint64_t size;
        int ret = -EIO;

        QLIST_FOREACH(m, &c->map_list, next) {
            if (!m->on_server) {
                break;
            }
        }
        if (!m) {
            return 0;
        }
        m->on_server = true;
        iova = m->iova;
        size = m->size;
        op = vfio_user_dma_map_op(iova, size, m->vaddr, m->readonly);
        fds = (VFIOUserFDs) { .send = &op->fd, .nsend = 1 };
        if (vfio_user_dma_op_get_fd(op, errp)) {
            ret = vfio_user_co_send_recv(container_proxy(c), &op->msg.hdr,
                                         op->fd >= 0 ? &fds : NULL,
                                         sizeof(op->msg), 0, errp);
        }
        trace_vfio_user_dma(container_name(c), "replay map", iova, size,
                            op->fd, ret);
        vfio_user_dma_op_free(op);
        if (ret < 0) {
            error_prepend(errp, "DMA_MAP of 0x%" HWADDR_PRIx "+0x%" PRIx64
                          ": ", iova, size);
            return ret;
        }
    }
}

static int vfio_user_dma_unmap(const VFIOContainerBase *bcontainer,
                               hwaddr iova, ram_addr_t size,
                               IOMMUTLBEntry *iotlb)
{
    VFIOUserContainer *c = VFIO_IOMMU_USER(bcontainer);
    DMAMap window = { .iova = iova, .size = size - 1 };
    const DMAMap *m;
    int ret = 0;

    /*
     * Unmap each map the range touches, whole: servers take an unmap only
     * for exactly a range they were given (libvfio-user does), and a
     * single unmap can cover several maps (virtio-mem maps by granule).
     * Nothing of the range mapped (we or the server refused the map):
     * nothing to send.  From now on the server's requests for these
     * ranges are refused.
     */
    while ((m = iova_tree_find(c->maps, &window))) {
        DMAMap old = *m;
        VFIOUserMap *rec = vfio_user_map_find(c, old.iova, old.size + 1);
        bool on_server = rec && rec->on_server;
        VFIOUserDMAOp *op;

        vfio_user_map_remove(c, old.iova, old.size + 1, 0);
        if (!on_server) {
            /* The server never had it (offline): nothing to send */
            continue;
        }

        op = g_new0(VFIOUserDMAOp, 1);
        op->fd = -1;
        vfio_user_msg_init(&op->msg.hdr, VFIO_USER_DMA_UNMAP,
                           sizeof(op->msg.unmap));
        op->msg.unmap.argsz = cpu_to_le32(sizeof(op->msg.unmap) -
                                          sizeof(op->msg.hdr));
        op->msg.unmap.address = cpu_to_le64(old.iova);
        op->msg.unmap.size = cpu_to_le64(old.size + 1);
        ret = vfio_user_dma_send(c, op) ?: ret;
    }
    return ret;
}


/*
 * A server's DMA_READ (@is_write false) or DMA_WRITE: allowed only inside
 * the maps sent, with their permission.  The whole range is checked before
 * any of it is accessed, so a refused request has no effect (a write that
 * runs off the end of its map must not write its first part); the maps
 * it spans are then plain guest RAM of the device's address space.
 */
int vfio_user_container_dma_rw(VFIOUserContainer *c, uint64_t addr,
                               void *buf, uint64_t len, bool is_write)
{
    uint64_t last = addr + len - 1;
    uint64_t pos = addr;
    const char *why = NULL;
    int ret = 0;

    if (!len || last < addr) {
        return -EINVAL;
    }
    for (;;) {
        DMAMap want = { .iova = pos, .size = 0 };
        const DMAMap *m = iova_tree_find(c->maps, &want);

        if (!m) {
            why = "outside every map";
            ret = -EFAULT;
            break;
        }
        if (!(m->perm & (is_write ? IOMMU_WO : IOMMU_RO))) {
            why = is_write ? "write to a read-only map" :
                             "read of a write-only map";
            ret = -EPERM;
            break;
        }
        /* m->iova + m->size is the map's last byte: no overflow here */
        if (m->iova + m->size >= last) {
            break;
        }
        pos = m->iova + m->size + 1;
    }
    if (!ret && address_space_rw(c->as, addr, MEMTXATTRS_UNSPECIFIED, buf,
                                 len, is_write) != MEMTX_OK) {
        why = "guest memory access failed";
        ret = -EFAULT;
    }
    if (ret) {
        trace_vfio_user_dma_refused(container_name(c), addr, len, why);
    }
    return ret;
}

static bool vfio_user_attach_device(const char *name, VFIODevice *vbasedev,
                                    AddressSpace *as, Error **errp)
{
    VFIOUserPCIDevice *udev = vfio_user_pci_from_vbasedev(vbasedev);
    const VFIOUserCaps *caps = vfio_user_proxy_caps(udev->proxy);
    VFIOContainerBase *bcontainer;
    VFIOUserContainer *c;
    VFIOAddressSpace *space;

    if (as != &address_space_memory) {
        error_setg(errp, "a guest vIOMMU is not supported by vfio-user-pci "
                   "yet; attach it to a bus without one");
        return false;
    }
    space = vfio_get_address_space(as);
    c = VFIO_IOMMU_USER(object_new(TYPE_VFIO_IOMMU_USER));
    c->udev = udev;
    c->as = as;
    c->maps = iova_tree_new();
    QLIST_INIT(&c->map_list);
    QSIMPLEQ_INIT(&c->pending);
    bcontainer = &c->bcontainer;
    bcontainer->pgsizes = caps->pgsizes;
    bcontainer->dma_max_mappings = MIN(caps->max_dma_maps, UINT_MAX);
    /* Coarse: see vfio_user_query_dirty_bitmap() */
    bcontainer->dirty_pages_supported = true;
    vfio_address_space_insert(space, bcontainer);

    vbasedev->bcontainer = bcontainer;
    QLIST_INSERT_HEAD(&bcontainer->device_list, vbasedev, container_next);
    udev->container = c;

    bcontainer->listener = vfio_memory_listener;
    memory_listener_register(&bcontainer->listener, as);
    vfio_user_container_drain(c);
    if (bcontainer->error) {
        error_propagate_prepend(errp, g_steal_pointer(&bcontainer->error),
                                "DMA maps failed: ");
        vfio_user_detach_device_common(vbasedev);
        return false;
    }
    bcontainer->initialized = true;
    return true;
}

/* Unmap everything (the listener's region_del) and drop the container. */
void vfio_user_detach_device_common(VFIODevice *vbasedev)
{
    VFIOContainerBase *bcontainer = vbasedev->bcontainer;
    VFIOUserContainer *c;
    VFIOAddressSpace *space;

    if (!bcontainer) {
        return;
    }
    c = VFIO_IOMMU_USER(bcontainer);
    space = bcontainer->space;
    c->detaching = true;
    memory_listener_unregister(&bcontainer->listener);
    vfio_user_container_drain(c);
    assert(QSIMPLEQ_EMPTY(&c->pending));
    vfio_user_dma_report(c);
    QLIST_REMOVE(vbasedev, container_next);
    vbasedev->bcontainer = NULL;
    c->udev->container = NULL;
    while (!QLIST_EMPTY(&c->map_list)) {
        VFIOUserMap *m = QLIST_FIRST(&c->map_list);

        vfio_user_map_remove(c, m->iova, m->size, 0);
    }
    iova_tree_destroy(c->maps);
    object_unref(OBJECT(c));
    vfio_put_address_space(space);
}

static void vfio_user_listener_begin(VFIOContainerBase *bcontainer)
{
    VFIO_IOMMU_USER(bcontainer)->in_transaction = true;
}

static void vfio_user_listener_commit(VFIOContainerBase *bcontainer)
{
    VFIO_IOMMU_USER(bcontainer)->in_transaction = false;
}

static void vfio_user_detach_device(VFIODevice *vbasedev)
{
    vfio_user_detach_device_common(vbasedev);
}

/*
 * Dirty tracking for a server without DMA logging: the server may have
 * written to any guest memory it has mapped, without our knowledge, so
 * all of it counts as dirty.  hw/vfio asks only in stop-and-copy for such
 * a device (pre_copy_dirty_page_tracking is off), so the memory is sent
 * again once, during the downtime.  A server with DMA logging is asked
 * for its log instead (the device's dirty tracking), not this.
 */
static int vfio_user_set_dirty_page_tracking(const VFIOContainerBase *bc,
                                             bool start, Error **errp)
{
    return 0;
}

static int vfio_user_query_dirty_bitmap(const VFIOContainerBase *bcontainer,
                                        VFIOBitmap *vbmap, hwaddr iova,
                                        hwaddr size, Error **errp)
{
    const VFIOUserContainer *c = container_of(bcontainer, VFIOUserContainer,
                                              bcontainer);

    if (!c->udev->no_dirty_tracking) {
        bitmap_set(vbmap->bitmap, 0, vbmap->pages);
        trace_vfio_user_dirty_all(iova, size);
    }
    return 0;
}

static void vfio_iommu_user_class_init(ObjectClass *klass, void *data)
{
    VFIOIOMMUClass *vioc = VFIO_IOMMU_CLASS(klass);

    vioc->dma_map = vfio_user_dma_map;
    vioc->dma_unmap = vfio_user_dma_unmap;
    vioc->attach_device = vfio_user_attach_device;
    vioc->detach_device = vfio_user_detach_device;
    vioc->listener_begin = vfio_user_listener_begin;
    vioc->listener_commit = vfio_user_listener_commit;
    vioc->set_dirty_page_tracking = vfio_user_set_dirty_page_tracking;
    vioc->query_dirty_bitmap = vfio_user_query_dirty_bitmap;
}

static const TypeInfo vfio_iommu_user_info = {
    .name = TYPE_VFIO_IOMMU_USER,
    .parent = TYPE_VFIO_IOMMU,
    .instance_size = sizeof(VFIOUserContainer),
    .class_init = vfio_iommu_user_class_init,
};

static void vfio_iommu_user_register_types(void)
{
    type_register_static(&vfio_iommu_user_info);
}

type_init(vfio_iommu_user_register_types)
