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
 * reply is in.  Realize and unrealize, outside any transaction, wait for
 * the replies (vfio_user_container_drain()), and so do the maps and
 * unmaps made outside a transaction (a vIOMMU's, virtio-mem's:
 * vfio_user_dma_settle()) and the device's own messages while maps are
 * still queued, so that a device access never overtakes a map made
 * before it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <linux/vfio.h>

#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/iova-tree.h"
#include "qemu/range.h"
#include "qemu/main-loop.h"
#include "qemu/coroutine.h"
#include "exec/address-spaces.h"
#include "exec/ramblock.h"
#include "system/dma.h"
#include "hw/vfio/vfio-common.h"
#include "hw/vfio/vfio-container-base.h"
#include "hw/vfio-user/proxy.h"
#include "container.h"
#include "trace.h"

/* DMA map/unmap messages in flight at most, per device */
#define VFIO_USER_DMA_MAX_INFLIGHT      64

typedef struct VFIOUserDMAOp VFIOUserDMAOp;

/* One map the listener or a vIOMMU made: a piece of a server map */
typedef struct VFIOUserPiece {
    hwaddr iova;
    uint64_t size;
} VFIOUserPiece;

/*
 * A map the server has (one DMA_MAP): one or more of the guest's maps
 * that follow each other in IOVA, in host memory and in their RAM's
 * file, with the same permission.  A vIOMMU maps a page at a time, and
 * libvfio-user keeps 16 or 64 maps and wants a queue in a single one.
 * It is what a new server gets again.
 */
typedef struct VFIOUserMap {
    QLIST_ENTRY(VFIOUserMap) next;
    hwaddr iova;
    uint64_t size;
    void *vaddr;
    bool readonly;
    /* Its RAM and offset in the RAM's file (NULL: sent without an fd) */
    MemoryRegion *mr;
    off_t offset;
    /* Sent with the RAM's fd: the server may write it without a message */
    bool with_fd;
    /* Tells this map from a later one of the same range */
    uint64_t seq;
    /* Sent to the current server (else a replay sends it) */
    bool on_server;
    /* The guest's maps it is made of, in IOVA order */
    GArray *pieces;
} VFIOUserMap;

struct VFIOUserContainer {
    VFIOContainerBase bcontainer;
    /* The device's connection to its server, and the device's name */
    VFIOProxy *proxy;
    const char *name;
    /* Count all memory the server has mapped as dirty (migration) */
    bool dirty_all;
    AddressSpace *as;
    /* What the server may access: the guest's maps, by IOVA */
    IOVATree *maps;
    /* The server's maps (made of those), and how many */
    QLIST_HEAD(, VFIOUserMap) map_list;
    unsigned int nr_maps;
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
    return c->proxy;
}

static const char *container_name(const VFIOUserContainer *c)
{
    return c->name;
}

/* The server map whose message is @seq, or NULL */
static VFIOUserMap *vfio_user_map_by_seq(VFIOUserContainer *c, uint64_t seq)
{
    VFIOUserMap *m;

    QLIST_FOREACH(m, &c->map_list, next) {
        if (m->seq == seq) {
            return m;
        }
    }
    return NULL;
}

/* A new server map of @piece at @vaddr, from @mr at @offset (or none) */
static VFIOUserMap *vfio_user_map_new(VFIOUserContainer *c,
                                      const VFIOUserPiece *piece, void *vaddr,
                                      bool readonly, MemoryRegion *mr,
                                      off_t offset)
{
    VFIOUserMap *m = g_new(VFIOUserMap, 1);

    *m = (VFIOUserMap) {
        .iova = piece->iova, .size = piece->size, .vaddr = vaddr,
        .readonly = readonly, .mr = mr, .offset = offset,
        .with_fd = mr != NULL,
        .pieces = g_array_new(false, false, sizeof(VFIOUserPiece)),
    };
    /*
     * The RAM stays while the server may have it mmap-ed: a vIOMMU map
     * into a pc-dimm outlives the DIMM's unplug until the guest unmaps it
     */
    if (mr) {
        memory_region_ref(mr);
    }
    g_array_append_val(m->pieces, *piece);
    QLIST_INSERT_HEAD(&c->map_list, m, next);
    c->nr_maps++;
    return m;
}

/* Forget server map @m; with @pieces, the guest's maps it holds too. */
static void vfio_user_map_free(VFIOUserContainer *c, VFIOUserMap *m,
                               bool pieces)
{
    guint i;

    for (i = 0; pieces && i < m->pieces->len; i++) {
        VFIOUserPiece *p = &g_array_index(m->pieces, VFIOUserPiece, i);

        iova_tree_remove(c->maps, (DMAMap) { .iova = p->iova,
                                             .size = p->size - 1 });
    }
    g_array_free(m->pieces, true);
    QLIST_REMOVE(m, next);
    c->nr_maps--;
    if (m->mr) {
        memory_region_unref(m->mr);
    }
    g_free(m);
}

/*
 * The server map @piece can extend at its end: one that ends where the
 * piece starts, in IOVA, in host memory and in the same RAM's file, with
 * the same permission.
 */
static VFIOUserMap *vfio_user_map_before(VFIOUserContainer *c,
                                         const VFIOUserPiece *piece,
                                         void *vaddr, bool readonly,
                                         MemoryRegion *mr, off_t offset)
{
    VFIOUserMap *m;

    QLIST_FOREACH(m, &c->map_list, next) {
        if (m->iova + m->size == piece->iova &&
            m->vaddr + m->size == vaddr && m->readonly == readonly &&
            m->mr == mr && (!mr || m->offset + m->size == offset)) {
            return m;
        }
    }
    return NULL;
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
 * realize they fail it (vfio_user_container_attach() takes them), later
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
             * The server did not take it: its guest maps must not be used.
             * Unless it is already gone (unmapped, or extended, while
             * this message was in flight): then there is nothing to
             * remove, and nothing of a later map's.
             */
            VFIOUserMap *m = vfio_user_map_by_seq(c, op->seq);

            if (m) {
                vfio_user_map_free(c, m, true);
            }
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
 * The RAM behind host address @vaddr, if the server can map it (it has
 * a shareable fd), and *@offset, @vaddr's offset in the RAM's file; NULL
 * when the server gets the window without an fd.
 */
static MemoryRegion *vfio_user_ram_source(void *vaddr, off_t *offset)
{
    MemoryRegion *mr;
    int fd = -1;

    mr = vfio_container_dma_map_source(vaddr, &fd, offset);
    if (!mr || !mr->ram_block || !qemu_ram_is_shared(mr->ram_block) ||
        fd < 0) {
        *offset = 0;
        return NULL;
    }
    return mr;
}

/*
 * The DMA_MAP message of server map @m, with its RAM (a reference: the
 * RAMBlock and its fd must not go before the message leaves, nor the fd
 * number be reused) when it is sent with an fd.
 */
static VFIOUserDMAOp *vfio_user_dma_map_op(VFIOUserMap *m)
{
    VFIOUserDMAOp *op = g_new0(VFIOUserDMAOp, 1);

    if (m->mr) {
        memory_region_ref(m->mr);
        op->mr = m->mr;
    }
    op->fd = -1;
    op->seq = m->seq;
    vfio_user_msg_init(&op->msg.hdr, VFIO_USER_DMA_MAP, sizeof(op->msg.map));
    op->msg.map.argsz = cpu_to_le32(sizeof(op->msg.map) -
                                    sizeof(op->msg.hdr));
    op->msg.map.flags = cpu_to_le32(VFIO_USER_DMA_MAP_READ |
                                    (m->readonly ? 0 :
                                     VFIO_USER_DMA_MAP_WRITE));
    op->msg.map.offset = cpu_to_le64(m->offset);
    op->msg.map.address = cpu_to_le64(m->iova);
    op->msg.map.size = cpu_to_le64(m->size);
    return op;
}

/* The DMA_UNMAP message of server map @m */
static VFIOUserDMAOp *vfio_user_dma_unmap_op(VFIOUserMap *m)
{
    VFIOUserDMAOp *op = g_new0(VFIOUserDMAOp, 1);

    op->fd = -1;
    vfio_user_msg_init(&op->msg.hdr, VFIO_USER_DMA_UNMAP,
                       sizeof(op->msg.unmap));
    op->msg.unmap.argsz = cpu_to_le32(sizeof(op->msg.unmap) -
                                      sizeof(op->msg.hdr));
    op->msg.unmap.address = cpu_to_le64(m->iova);
    op->msg.unmap.size = cpu_to_le64(m->size);
    return op;
}

/* Have server map @m (re)sent, as a new message: a new sequence number */
static void vfio_user_map_send(VFIOUserContainer *c, VFIOUserMap *m)
{
    m->seq = ++c->next_seq;
    m->on_server = !c->offline;
    vfio_user_dma_send(c, vfio_user_dma_map_op(m));
}

/*
 * Outside a memory transaction (a vIOMMU's map and unmap notifications,
 * virtio-mem's plug and unplug), wait for the replies before returning:
 * the guest goes on as if the map were done (it may ring a doorbell the
 * server reads from its mmap, not from the socket), and expects the
 * server to have let an unmapped range go (its memory may be reused).
 * For one reply timeout at most: a server that does not answer by then
 * is lost.  Inside a transaction nothing may wait: the listener's
 * commit and the device's next message order those maps.
 */
static bool vfio_user_dma_settle(VFIOUserContainer *c)
{
    if (c->in_transaction || !c->bcontainer.initialized || c->detaching ||
        qemu_in_coroutine()) {
        return false;
    }
    vfio_user_container_drain(c);
    return true;
}

/*
 * A guest map: recorded as it is (the server's requests are checked
 * against it), and made a server map of its own or added to the end of
 * the one it continues (an unmap and a bigger map).
 */
static int vfio_user_dma_map(const VFIOContainerBase *bcontainer,
                             hwaddr iova, ram_addr_t size, void *vaddr,
                             bool readonly)
{
    VFIOUserContainer *c = VFIO_IOMMU_USER(bcontainer);
    const VFIOUserCaps *caps = vfio_user_proxy_caps(container_proxy(c));
    uint64_t pgmask = (1ULL << ctz64(caps->pgsizes)) - 1;
    VFIOUserPiece piece = { .iova = iova, .size = size };
    DMAMap window = {
        .iova = iova, .size = size - 1,
        .translated_addr = (hwaddr)(uintptr_t)vaddr,
        .perm = readonly ? IOMMU_RO : IOMMU_RW,
    };
    MemoryRegion *mr;
    VFIOUserMap *m;
    off_t offset;

    if (!size || (iova & pgmask) || (size & pgmask)) {
        return vfio_user_dma_refuse(c, iova, size, "not aligned to the "
                                    "server's smallest DMA page size "
                                    "(pgsizes)");
    }
    mr = vfio_user_ram_source(vaddr, &offset);
    m = vfio_user_map_before(c, &piece, vaddr, readonly, mr, offset);
    if (!m && c->nr_maps >= caps->max_dma_maps) {
        return vfio_user_dma_refuse(c, iova, size,
                                    "the server's max_dma_maps is reached");
    }
    if (iova_tree_insert(c->maps, &window) != IOVA_OK) {
        return vfio_user_dma_refuse(c, iova, size,
                                    "it overlaps an existing map");
    }
    if (m) {
        if (m->on_server) {
            vfio_user_dma_send(c, vfio_user_dma_unmap_op(m));
        }
        m->size += size;
        g_array_append_val(m->pieces, piece);
    } else {
        m = vfio_user_map_new(c, &piece, vaddr, readonly, mr, offset);
    }
    vfio_user_map_send(c, m);
    if (vfio_user_dma_settle(c)) {
        /* The caller learns that the server refused it (virtio-mem) */
        DMAMap want = { .iova = iova, .size = size - 1 };
        const DMAMap *found = iova_tree_find(c->maps, &want);

        return found && found->iova == iova && found->size == size - 1 ?
               0 : -EIO;
    }
    return 0;
}

bool vfio_user_container_direct_write(VFIOUserContainer *c, hwaddr iova,
                                      uint64_t size)
{
    VFIOUserMap *m;

    QLIST_FOREACH(m, &c->map_list, next) {
        if (m->with_fd && !m->readonly &&
            ranges_overlap(m->iova, m->size, iova, size)) {
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
        op = vfio_user_dma_map_op(m);
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

/*
 * Server map @m loses the guest's maps [@iova, @iova + @size) touches
 * (whole: a guest map goes whole), and is unmapped: servers take an
 * unmap only for exactly a range they were given (libvfio-user does).
 * What is left of it is sent again as new server maps, one per run of
 * guest maps that still follow each other.
 */
static void vfio_user_map_cut(VFIOUserContainer *c, VFIOUserMap *m,
                              hwaddr iova, uint64_t size)
{
    VFIOUserMap *run = NULL;
    guint i;

    if (m->on_server) {
        vfio_user_dma_send(c, vfio_user_dma_unmap_op(m));
    }
    for (i = 0; i < m->pieces->len; i++) {
        VFIOUserPiece *p = &g_array_index(m->pieces, VFIOUserPiece, i);
        uint64_t delta = p->iova - m->iova;

        if (ranges_overlap(p->iova, p->size, iova, size)) {
            /* From now on the server's requests here are refused */
            iova_tree_remove(c->maps, (DMAMap) { .iova = p->iova,
                                                 .size = p->size - 1 });
            if (run) {
                vfio_user_map_send(c, run);
                run = NULL;
            }
        } else if (run) {
            run->size += p->size;
            g_array_append_val(run->pieces, *p);
        } else {
            run = vfio_user_map_new(c, p, m->vaddr + delta, m->readonly,
                                    m->mr, m->mr ? m->offset + delta : 0);
        }
    }
    if (run) {
        vfio_user_map_send(c, run);
    }
    vfio_user_map_free(c, m, false);
}

/*
 * Unmap [@iova, @iova + @size): every server map it touches is cut (a
 * single unmap can cover several maps: virtio-mem unmaps by granule).
 * Nothing of the range mapped (we or the server refused the map):
 * nothing to send.
 */
static int vfio_user_dma_unmap(const VFIOContainerBase *bcontainer,
                               hwaddr iova, ram_addr_t size,
                               IOMMUTLBEntry *iotlb)
{
    VFIOUserContainer *c = VFIO_IOMMU_USER(bcontainer);
    VFIOUserMap *m, *tmp;

    QLIST_FOREACH_SAFE(m, &c->map_list, next, tmp) {
        if (ranges_overlap(m->iova, m->size, iova, size)) {
            vfio_user_map_cut(c, m, iova, size);
        }
    }
    vfio_user_dma_settle(c);
    return 0;
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

static void vfio_user_probe_notify(IOMMUNotifier *n, IOMMUTLBEntry *iotlb)
{
}

/* The IOMMU region in @mr or one of its subregions (depth @depth), or NULL */
static IOMMUMemoryRegion *vfio_user_find_iommu(MemoryRegion *mr, int depth)
{
    MemoryRegion *sub;

    if (memory_region_is_iommu(mr)) {
        return IOMMU_MEMORY_REGION(mr);
    }
    QTAILQ_FOREACH(sub, &mr->subregions, subregions_link) {
        IOMMUMemoryRegion *iommu = depth ? vfio_user_find_iommu(sub,
                                                                depth - 1)
                                         : NULL;

        if (iommu) {
            return iommu;
        }
    }
    return NULL;
}

/*
 * Can the guest vIOMMU of @as tell us the guest's maps?  hw/vfio asks it
 * for map notifications only once the guest enables it, and aborts QEMU
 * if it refuses then (intel-iommu without caching-mode does): ask now, at
 * realize, where a refusal is the device's error.  vfio-pci relies on
 * intel-iommu checking vfio-pci devices at machine done, which knows
 * nothing of this device.
 */
static bool vfio_user_viommu_usable(AddressSpace *as, Error **errp)
{
    IOMMUMemoryRegion *iommu = vfio_user_find_iommu(as->root, 2);
    IOMMUNotifier n;

    if (!iommu) {
        return true;
    }
    iommu_notifier_init(&n, vfio_user_probe_notify,
                        IOMMU_NOTIFIER_IOTLB_EVENTS, 0, HWADDR_MAX,
                        memory_region_iommu_attrs_to_index(
                            iommu, MEMTXATTRS_UNSPECIFIED));
    if (memory_region_register_iommu_notifier(MEMORY_REGION(iommu), &n,
                                              errp)) {
        error_prepend(errp, "the guest vIOMMU cannot tell QEMU the guest's "
                      "DMA maps (intel-iommu needs caching-mode=on): ");
        return false;
    }
    memory_region_unregister_iommu_notifier(MEMORY_REGION(iommu), &n);
    return true;
}

/*
 * The container is given what it needs of the device (its proxy, its
 * dirty-tracking policy) rather than reaching into vfio-user-pci's state
 * from hw/vfio's attach_device hook, whose arguments do not carry them.
 */
VFIOUserContainer *vfio_user_container_attach(VFIODevice *vbasedev,
                                              VFIOProxy *proxy,
                                              AddressSpace *as,
                                              bool dirty_all, Error **errp)
{
    const VFIOUserCaps *caps = vfio_user_proxy_caps(proxy);
    VFIOContainerBase *bcontainer;
    VFIOUserContainer *c;
    VFIOAddressSpace *space;

    if (!vfio_user_viommu_usable(as, errp)) {
        return NULL;
    }
    space = vfio_get_address_space(as);
    c = VFIO_IOMMU_USER(object_new(TYPE_VFIO_IOMMU_USER));
    c->proxy = proxy;
    c->name = vbasedev->name;
    c->dirty_all = dirty_all;
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

    bcontainer->listener = vfio_memory_listener;
    memory_listener_register(&bcontainer->listener, as);
    vfio_user_container_drain(c);
    if (bcontainer->error) {
        error_propagate_prepend(errp, g_steal_pointer(&bcontainer->error),
                                "DMA maps failed: ");
        vfio_user_detach_device_common(vbasedev);
        return NULL;
    }
    bcontainer->initialized = true;
    return c;
}

VFIOUserContainer *vfio_user_container_get(VFIODevice *vbasedev)
{
    /* On every message: no checked cast */
    return vbasedev->bcontainer ? container_of(vbasedev->bcontainer,
                                               VFIOUserContainer, bcontainer)
                                : NULL;
}

/* See vfio_user_container_attach() */
static bool vfio_user_attach_device(const char *name, VFIODevice *vbasedev,
                                    AddressSpace *as, Error **errp)
{
    error_setg(errp, "%s: a vfio-user container is attached by its device",
               name);
    return false;
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
    while (!QLIST_EMPTY(&c->map_list)) {
        vfio_user_map_free(c, QLIST_FIRST(&c->map_list), true);
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

    if (c->dirty_all) {
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
