/*
 * vfio-user-pci's QMP command where the device is not built
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-vfio.h"

void coroutine_fn qmp_x_vfio_user_reconnect(const char *id,
                                            SocketAddress *socket,
                                            Error **errp)
{
    error_setg(errp, "this QEMU has no vfio-user-pci device");
}
