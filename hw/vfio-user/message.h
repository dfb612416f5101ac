/*
 * vfio-user transport: message helpers (hw/vfio-user/message.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_MESSAGE_H
#define HW_VFIO_USER_MESSAGE_H

#include "hw/vfio-user/protocol.h"

/*
 * What we propose in VFIO_USER_VERSION, i.e. what we accept from the
 * server.  QIOChannelSocket passes at most 16 descriptors per message
 * (SOCKET_MAX_FDS in io/channel-socket.c), in both directions.
 */
#define VFIO_USER_MAX_FDS           16
#define VFIO_USER_MAX_XFER          VFIO_USER_DEF_MAX_XFER

/* The name of @command for errors and traces ("unknown" if none). */
const char *vfio_user_command_name(uint16_t command);

void vfio_user_close_fds(const int *fds, size_t nfds);

/*
 * The negative errno of an error reply: EINVAL when the server gave
 * none, EIO for a value no errno has.
 */
int vfio_user_reply_errno(uint32_t error_reply);

/* The spec's defaults, for a server that states no capability. */
void vfio_user_default_caps(VFIOUserCaps *caps);

/*
 * The header @msg between host byte order and the wire's (little-endian),
 * either way: for sending, and for a header received.
 */
VFIOUserHdr vfio_user_hdr_swap_le(const VFIOUserHdr *msg);

/* The data a request carries, which max_data_xfer_size limits. */
uint32_t vfio_user_data_len(const VFIOUserHdr *msg);

/* The JSON of our VERSION request's capabilities. */
GString *vfio_user_caps_json(void);

/*
 * Check the server's VERSION reply and set @caps to what it accepts (the
 * spec's defaults for what it does not state).  False, with @errp set,
 * for a reply we cannot accept.
 */
bool vfio_user_parse_version(VFIOUserVersion *reply, VFIOUserCaps *caps,
                             Error **errp);

#endif /* HW_VFIO_USER_MESSAGE_H */
