/*
 * vfio-user IOMMU backend (hw/vfio-user/container.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_CONTAINER_H
#define HW_VFIO_USER_CONTAINER_H

#include "hw/vfio/vfio-common.h"
#include "hw/vfio-user/proxy.h"

#define TYPE_VFIO_IOMMU_USER TYPE_VFIO_IOMMU "-user"

typedef struct VFIOUserContainer VFIOUserContainer;

/*
 * Give @vbasedev a container of its own in @as, whose maps go to the
 * server of @proxy (which outlives it), and send the maps.  @dirty_all:
 * in migration, count all memory the server has mapped as dirty (else
 * what it writes without a message is lost: debugging only).  Returns
 * NULL with @errp set on failure.
 */
VFIOUserContainer *vfio_user_container_attach(VFIODevice *vbasedev,
                                              VFIOProxy *proxy,
                                              AddressSpace *as,
                                              bool dirty_all, Error **errp);

/* The container of @vbasedev, or NULL (not attached, or detached) */
VFIOUserContainer *vfio_user_container_get(VFIODevice *vbasedev);

/*
 * Serve a server's DMA_READ (@is_write false) or DMA_WRITE of @len bytes
 * at @addr, refused unless it lies inside the maps sent with the needed
 * permission.  Returns 0 or a negative errno for the server.
 */
int vfio_user_container_dma_rw(VFIOUserContainer *c, uint64_t addr,
                               void *buf, uint64_t len, bool is_write);

/*
 * Wait until every DMA map and unmap message has its reply (bounded by
 * the reply timeout).  Runs an event loop: not from a memory listener
 * nor a coroutine.
 */
void vfio_user_container_drain(VFIOUserContainer *c);

/*
 * Could the server write to guest memory in [@iova, @iova + @size)
 * without a message (a writable map sent with its RAM's fd)?  Only such
 * writes need the server's dirty log: QEMU sees the DMA_WRITE messages.
 */
bool vfio_user_container_direct_write(VFIOUserContainer *c, hwaddr iova,
                                      uint64_t size);

/* Are map or unmap messages queued, not sent yet? */
bool vfio_user_container_queued(VFIOUserContainer *c);

/*
 * The server is lost: from now on maps and unmaps only change the list,
 * which vfio_user_container_co_replay() sends to a new server.
 */
void vfio_user_container_set_offline(VFIOUserContainer *c);

/*
 * Send the maps to a new server (which has none), in the calling
 * coroutine, and go online again.  Returns 0 or a negative errno with
 * @errp set.
 */
int coroutine_fn vfio_user_container_co_replay(VFIOUserContainer *c,
                                               Error **errp);

/* Unmap everything and free the device's container, if it has one. */
void vfio_user_detach_device_common(VFIODevice *vbasedev);

#endif /* HW_VFIO_USER_CONTAINER_H */
