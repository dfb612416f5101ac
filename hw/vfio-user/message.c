/*
 * vfio-user transport: message helpers
 *
 * What the transport needs to know of the messages themselves, apart from
 * any connection: their names, the header's byte order, the data a
 * request carries, error replies, and the VERSION negotiation's payload
 * (our capabilities, and the checks of the server's).
 * See docs/devel/vfio-user.rst.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qbool.h"
#include "qobject/qnum.h"
#include "message.h"
#include "trace.h"

/* The largest errno value (Linux's MAX_ERRNO). */
#define VFIO_USER_MAX_ERRNO         4095

static const char *const vfio_user_command_names[] = {
    [VFIO_USER_VERSION] = "VERSION",
    [VFIO_USER_DMA_MAP] = "DMA_MAP",
    [VFIO_USER_DMA_UNMAP] = "DMA_UNMAP",
    [VFIO_USER_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
    [VFIO_USER_DEVICE_GET_REGION_INFO] = "DEVICE_GET_REGION_INFO",
    [VFIO_USER_DEVICE_GET_REGION_IO_FDS] = "DEVICE_GET_REGION_IO_FDS",
    [VFIO_USER_DEVICE_GET_IRQ_INFO] = "DEVICE_GET_IRQ_INFO",
    [VFIO_USER_DEVICE_SET_IRQS] = "DEVICE_SET_IRQS",
    [VFIO_USER_REGION_READ] = "REGION_READ",
    [VFIO_USER_REGION_WRITE] = "REGION_WRITE",
    [VFIO_USER_DMA_READ] = "DMA_READ",
    [VFIO_USER_DMA_WRITE] = "DMA_WRITE",
    [VFIO_USER_DEVICE_RESET] = "DEVICE_RESET",
    [VFIO_USER_DIRTY_PAGES] = "DIRTY_PAGES",
    [VFIO_USER_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
    [VFIO_USER_DEVICE_FEATURE] = "DEVICE_FEATURE",
    [VFIO_USER_MIG_DATA_READ] = "MIG_DATA_READ",
    [VFIO_USER_MIG_DATA_WRITE] = "MIG_DATA_WRITE",
};

const char *vfio_user_command_name(uint16_t command)
{
    if (command < ARRAY_SIZE(vfio_user_command_names) &&
        vfio_user_command_names[command]) {
        return vfio_user_command_names[command];
    }
    return "unknown";
}

void vfio_user_close_fds(const int *fds, size_t nfds)
{
    size_t i;

    for (i = 0; i < nfds; i++) {
        close(fds[i]);
    }
}

/*
 * The negative errno of an error reply: EINVAL when the server gave
 * none, EIO for a value no errno has (the reply is a failure either
 * way; it must never read as a success or a byte count).
 */
int vfio_user_reply_errno(uint32_t error_reply)
{
    if (!error_reply) {
        return -EINVAL;
    }
    if (error_reply > VFIO_USER_MAX_ERRNO) {
        return -EIO;
    }
    return -(int)error_reply;
}

void vfio_user_default_caps(VFIOUserCaps *caps)
{
    *caps = (VFIOUserCaps) {
        .max_send_fds = VFIO_USER_DEF_MAX_FDS,
        .max_xfer = VFIO_USER_DEF_MAX_XFER,
        .max_dma_maps = VFIO_USER_DEF_MAX_DMA_MAPS,
        .pgsizes = VFIO_USER_DEF_PGSIZES,
        .twin_fd_index = -1,
    };
}

/*
 * The header @msg between host byte order and the wire's (little-endian),
 * either way: the swap is the same.
 */
VFIOUserHdr vfio_user_hdr_swap_le(const VFIOUserHdr *msg)
{
    return (VFIOUserHdr) {
        .id = cpu_to_le16(msg->id),
        .command = cpu_to_le16(msg->command),
        .size = cpu_to_le32(msg->size),
        .flags = cpu_to_le32(msg->flags),
        .error_reply = cpu_to_le32(msg->error_reply),
    };
}

/*
 * The data a request carries, which max_data_xfer_size limits (the spec
 * applies it to the data of transfers, not to the fixed part of messages).
 */
uint32_t vfio_user_data_len(const VFIOUserHdr *msg)
{
    uint32_t fixed;

    switch (msg->command) {
    case VFIO_USER_REGION_WRITE:
        fixed = sizeof(VFIOUserRegionRW);
        break;
    case VFIO_USER_MIG_DATA_WRITE:
        fixed = sizeof(VFIOUserMigData);
        break;
    default:
        return 0;
    }
    return msg->size > fixed ? msg->size - fixed : 0;
}

/* Our proposal: what we support, and our limits. */
GString *vfio_user_caps_json(void)
{
    g_autoptr(QDict) top = qdict_new();
    QDict *caps = qdict_new();
    QDict *migr, *twin;

    qdict_put_int(caps, VFIO_USER_CAP_MAX_FDS, VFIO_USER_MAX_FDS);
    qdict_put_int(caps, VFIO_USER_CAP_MAX_XFER, VFIO_USER_MAX_XFER);
    qdict_put_int(caps, VFIO_USER_CAP_MAX_DMA_MAPS,
                  VFIO_USER_DEF_MAX_DMA_MAPS);
    qdict_put_int(caps, VFIO_USER_CAP_PGSIZES, qemu_real_host_page_size());
    /* Migration v2: DEVICE_FEATURE, MIG_DATA_READ/WRITE */
    migr = qdict_new();
    qdict_put_int(migr, VFIO_USER_CAP_MIGR_PGSIZE, qemu_real_host_page_size());
    qdict_put(caps, VFIO_USER_CAP_MIGR, migr);
    /* The server's requests on a socket of their own */
    twin = qdict_new();
    qdict_put_bool(twin, VFIO_USER_CAP_TWIN_SUPPORTED, true);
    qdict_put(caps, VFIO_USER_CAP_TWIN_SOCKET, twin);
    /* Only what is implemented: write_multiple comes with its feature. */
    qdict_put(top, VFIO_USER_CAP, caps);
    return qobject_to_json(QOBJECT(top));
}

/* An unsigned integer capability within [@min, @max]. */
static bool vfio_user_cap_uint(const QDictEntry *e, uint64_t min,
                               uint64_t max, uint64_t *val, Error **errp)
{
    QNum *num = qobject_to(QNum, qdict_entry_value(e));

    if (!num || !qnum_get_try_uint(num, val)) {
        error_setg(errp, "capability '%s' is not an unsigned integer",
                   qdict_entry_key(e));
        return false;
    }
    if (*val < min || *val > max) {
        error_setg(errp, "capability '%s' is %" PRIu64 ", out of range "
                   "[%" PRIu64 ", %" PRIu64 "]", qdict_entry_key(e), *val,
                   min, max);
        return false;
    }
    return true;
}

/*
 * "migration": {"pgsize": N}: the page size of dirty tracking, ours (the
 * only one we proposed) if present.
 */
static bool vfio_user_parse_migration(const QDictEntry *e,
                                      VFIOUserCaps *caps, Error **errp)
{
    QDict *migr = qobject_to(QDict, qdict_entry_value(e));
    const QDictEntry *m;
    uint64_t val;

    if (!migr) {
        error_setg(errp, "capability '%s' is not an object",
                   qdict_entry_key(e));
        return false;
    }
    for (m = qdict_first(migr); m; m = qdict_next(migr, m)) {
        if (strcmp(qdict_entry_key(m), VFIO_USER_CAP_MIGR_PGSIZE)) {
            error_setg(errp, "migration capability '%s' was not proposed",
                       qdict_entry_key(m));
            return false;
        }
        if (!vfio_user_cap_uint(m, 1, UINT64_MAX, &val, errp)) {
            return false;
        }
        if (val != qemu_real_host_page_size()) {
            /* Not what we proposed: the device works, it does not migrate */
            trace_vfio_user_cap_ignored("migration (page size)");
            return true;
        }
    }
    caps->migration = true;
    return true;
}

/*
 * "twin_socket": {"supported": true, "fd_index": N}: the reply's
 * descriptor N is the twin socket (checked against the descriptors by
 * the caller).
 */
static bool vfio_user_parse_twin(const QDictEntry *e, VFIOUserCaps *caps,
                                 Error **errp)
{
    QDict *twin = qobject_to(QDict, qdict_entry_value(e));
    const QDictEntry *m;
    bool supported = false;
    uint64_t index = UINT64_MAX;

    if (!twin) {
        error_setg(errp, "capability '%s' is not an object",
                   qdict_entry_key(e));
        return false;
    }
    for (m = qdict_first(twin); m; m = qdict_next(twin, m)) {
        const char *key = qdict_entry_key(m);

        if (!strcmp(key, VFIO_USER_CAP_TWIN_SUPPORTED)) {
            QBool *b = qobject_to(QBool, qdict_entry_value(m));

            if (!b) {
                error_setg(errp, "twin_socket '%s' is not a boolean", key);
                return false;
            }
            supported = qbool_get_bool(b);
        } else if (!strcmp(key, VFIO_USER_CAP_TWIN_FD_INDEX)) {
            if (!vfio_user_cap_uint(m, 0, VFIO_USER_MAX_FDS - 1, &index,
                                    errp)) {
                return false;
            }
        } else {
            error_setg(errp, "twin_socket capability '%s' was not proposed",
                       key);
            return false;
        }
    }
    if (supported && index == UINT64_MAX) {
        error_setg(errp, "twin_socket is supported without an fd_index");
        return false;
    }
    caps->twin_fd_index = supported ? index : -1;
    return true;
}

/*
 * Parse the server's capabilities: what it accepts must be a subset of
 * what we proposed, of the right types, within range.
 */
static bool vfio_user_parse_caps(const char *json, VFIOUserCaps *caps,
                                 Error **errp)
{
    QObject *obj = qobject_from_json(json, errp);
    g_autoptr(QDict) top = qobject_to(QDict, obj);
    QDict *dict;
    const QDictEntry *e;
    uint64_t val;

    if (!top) {
        if (obj) {
            qobject_unref(obj);
            error_setg(errp, "capabilities are not a JSON object");
        }
        return false;
    }
    for (e = qdict_first(top); e; e = qdict_next(top, e)) {
        if (strcmp(qdict_entry_key(e), VFIO_USER_CAP)) {
            error_setg(errp, "unexpected member '%s'", qdict_entry_key(e));
            return false;
        }
    }
    if (!qdict_haskey(top, VFIO_USER_CAP)) {
        return true;
    }
    dict = qobject_to(QDict, qdict_get(top, VFIO_USER_CAP));
    if (!dict) {
        error_setg(errp, "'%s' is not an object", VFIO_USER_CAP);
        return false;
    }

    for (e = qdict_first(dict); e; e = qdict_next(dict, e)) {
        const char *key = qdict_entry_key(e);

        if (!strcmp(key, VFIO_USER_CAP_MAX_FDS)) {
            if (!vfio_user_cap_uint(e, 1, INT32_MAX, &val, errp)) {
                return false;
            }
            caps->max_send_fds = MIN(val, VFIO_USER_MAX_FDS);
        } else if (!strcmp(key, VFIO_USER_CAP_MAX_XFER)) {
            /* A register access of up to 8 bytes must fit. */
            if (!vfio_user_cap_uint(e, 8, UINT32_MAX, &caps->max_xfer,
                                    errp)) {
                return false;
            }
        } else if (!strcmp(key, VFIO_USER_CAP_MAX_DMA_MAPS)) {
            if (!vfio_user_cap_uint(e, 1, UINT32_MAX, &caps->max_dma_maps,
                                    errp)) {
                return false;
            }
        } else if (!strcmp(key, VFIO_USER_CAP_PGSIZES)) {
            if (!vfio_user_cap_uint(e, 1, UINT64_MAX, &caps->pgsizes, errp)) {
                return false;
            }
            if (caps->pgsizes & (VFIO_USER_DEF_PGSIZES - 1)) {
                error_setg(errp, "page sizes 0x%" PRIx64 " include sizes "
                           "below 4 KiB", caps->pgsizes);
                return false;
            }
        } else if (!strcmp(key, VFIO_USER_CAP_MIGR)) {
            if (!vfio_user_parse_migration(e, caps, errp)) {
                return false;
            }
        } else if (!strcmp(key, VFIO_USER_CAP_TWIN_SOCKET)) {
            if (!vfio_user_parse_twin(e, caps, errp)) {
                return false;
            }
        } else if (!strcmp(key, VFIO_USER_CAP_WRITE_MULTIPLE)) {
            /* Known, not proposed (not implemented here): ignored. */
            trace_vfio_user_cap_ignored(key);
        } else {
            error_setg(errp, "capability '%s' was not proposed", key);
            return false;
        }
    }
    return true;
}

/* Check the VERSION reply and take the capabilities it accepts. */
bool vfio_user_parse_version(VFIOUserVersion *reply,
                             VFIOUserCaps *caps, Error **errp)
{
    size_t len;

    if (reply->hdr.size < sizeof(*reply)) {
        error_setg(errp, "reply of %u bytes is too short", reply->hdr.size);
        return false;
    }
    vfio_user_default_caps(caps);
    caps->major = le16_to_cpu(reply->major);
    caps->minor = le16_to_cpu(reply->minor);
    if (caps->major != VFIO_USER_MAJOR_VER) {
        error_setg(errp, "major version %u differs from ours (%u)",
                   caps->major, VFIO_USER_MAJOR_VER);
        return false;
    }
    if (caps->minor > VFIO_USER_MINOR_VER) {
        error_setg(errp, "minor version %u is above ours (%u)",
                   caps->minor, VFIO_USER_MINOR_VER);
        return false;
    }

    len = reply->hdr.size - sizeof(*reply);
    if (!len) {
        return true;
    }
    if (strnlen(reply->capabilities, len) != len - 1) {
        error_setg(errp, "capabilities are not a NUL-terminated string");
        return false;
    }
    return vfio_user_parse_caps(reply->capabilities, caps, errp);
}
