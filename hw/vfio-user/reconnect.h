/*
 * vfio-user-pci: reconnecting to a restarted server
 * (hw/vfio-user/reconnect.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_RECONNECT_H
#define HW_VFIO_USER_RECONNECT_H

#include "device.h"

/* Can vfio-user use @addr (a UNIX socket: a path or an fd)? */
bool vfio_user_pci_socket_usable(SocketAddress *addr, Error **errp);

/*
 * What identifies the server's device: its config header (@ids), and the
 * count of each interrupt index (-1: not reported), as the server has
 * them.  Realize keeps them for a reconnect to compare.
 */
int vfio_user_pci_read_ids(VFIOUserPCIDevice *udev, uint8_t *ids);
void vfio_user_pci_read_irq_counts(VFIOUserPCIDevice *udev, int64_t *counts);

/* Will a lost server be retried (reconnect-ms, a socket path, plugged)? */
bool vfio_user_pci_will_reconnect(VFIOUserPCIDevice *udev);

/*
 * The server was lost (@err says why): tell management, and try again
 * every reconnect-ms when vfio_user_pci_will_reconnect().
 */
void vfio_user_pci_disconnected(VFIOUserPCIDevice *udev, const Error *err);

/*
 * Stop reconnecting: an attempt in progress fails (its messages fail at
 * once) and none is scheduled.  With @wait, also wait for the attempt's
 * coroutine to end (unrealize: it uses the device).
 */
void vfio_user_pci_cancel_reconnect(VFIOUserPCIDevice *udev, bool wait);

#endif /* HW_VFIO_USER_RECONNECT_H */
