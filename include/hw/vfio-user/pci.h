/*
 * vfio-user-pci: what code outside the device may ask of it
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PCI_H
#define HW_VFIO_USER_PCI_H

#include "hw/vfio/vfio-common.h"

/*
 * The VFIODevice of vfio-user-pci @dev, or NULL if @dev is another
 * device: its I/O ops are the vfio-user messages (the fuzz target calls
 * them as hw/vfio's migration would).
 */
VFIODevice *vfio_user_pci_vbasedev(DeviceState *dev);

#endif
