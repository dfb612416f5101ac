/*
 * vfio-user-pci: region ioeventfds (hw/vfio-user/ioeventfd.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_IOEVENTFD_H
#define HW_VFIO_USER_IOEVENTFD_H

#include "device.h"

/*
 * Ask the server for the ioeventfds of every BAR QEMU does not map, and
 * use those that pass the checks.  Returns whether the device has any.
 */
bool vfio_user_pci_ioeventfds_setup(VFIOUserPCIDevice *udev);

/* Drop them all */
void vfio_user_pci_ioeventfds_exit(VFIOUserPCIDevice *udev);

/*
 * Take a write that a shadow ioeventfd serves (the value goes to the
 * shadow memory, then the eventfd is signalled).  Returns false for a
 * write it does not take, which goes by message.
 */
bool vfio_user_pci_ioeventfd_write(VFIOUserPCIDevice *udev,
                                   unsigned int index, uint64_t off,
                                   uint32_t size, const void *data);

#endif /* HW_VFIO_USER_IOEVENTFD_H */
