/*
 * vfio-user protocol: wire format
 *
 * The messages a vfio-user client exchanges with its server, as described
 * by subprojects/libvfio-user/docs/vfio-user.rst and its newer revisions.
 * All fields are little-endian on the wire.  VFIOUserHdr is kept in host
 * byte order by the transport (hw/vfio-user/proxy.c and message.c), which
 * converts it on send and receive; payloads are converted by their users.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PROTOCOL_H
#define HW_VFIO_USER_PROTOCOL_H

/* The protocol version this client implements. */
#define VFIO_USER_MAJOR_VER             0
#define VFIO_USER_MINOR_VER             1

typedef enum VFIOUserCommand {
    VFIO_USER_VERSION                   = 1,
    VFIO_USER_DMA_MAP                   = 2,
    VFIO_USER_DMA_UNMAP                 = 3,
    VFIO_USER_DEVICE_GET_INFO           = 4,
    VFIO_USER_DEVICE_GET_REGION_INFO    = 5,
    VFIO_USER_DEVICE_GET_REGION_IO_FDS  = 6,
    VFIO_USER_DEVICE_GET_IRQ_INFO       = 7,
    VFIO_USER_DEVICE_SET_IRQS           = 8,
    VFIO_USER_REGION_READ               = 9,
    VFIO_USER_REGION_WRITE              = 10,
    VFIO_USER_DMA_READ                  = 11,
    VFIO_USER_DMA_WRITE                 = 12,
    VFIO_USER_DEVICE_RESET              = 13,
    VFIO_USER_DIRTY_PAGES               = 14,
    VFIO_USER_REGION_WRITE_MULTI        = 15,
    VFIO_USER_DEVICE_FEATURE            = 16,
    VFIO_USER_MIG_DATA_READ             = 17,
    VFIO_USER_MIG_DATA_WRITE            = 18,
    VFIO_USER_MAX_COMMAND               = VFIO_USER_MIG_DATA_WRITE,
} VFIOUserCommand;

/*
 * The message header, 16 bytes, in front of every command and reply.
 * @size covers the whole message, header included.  @error_reply is an
 * errno value, meaningful only in a reply with VFIO_USER_ERROR set (and
 * may be 0 even then).
 */
typedef struct VFIOUserHdr {
    uint16_t id;
    uint16_t command;
    uint32_t size;
    uint32_t flags;
    uint32_t error_reply;
} VFIOUserHdr;
QEMU_BUILD_BUG_ON(sizeof(VFIOUserHdr) != 16);

/* VFIOUserHdr.flags: bits 0-3 are the type, then no-reply and error. */
#define VFIO_USER_TYPE                  0xf
#define VFIO_USER_REQUEST               0x0
#define VFIO_USER_REPLY                 0x1
#define VFIO_USER_NO_REPLY              (1u << 4)
#define VFIO_USER_ERROR                 (1u << 5)

/*
 * VFIO_USER_VERSION, request and reply: the version, then an optional
 * NUL-terminated JSON object {"capabilities": {...}}.
 */
typedef struct VFIOUserVersion {
    VFIOUserHdr hdr;
    uint16_t major;
    uint16_t minor;
    char capabilities[];
} VFIOUserVersion;

/* Capability names and the defaults that apply when one is absent. */
#define VFIO_USER_CAP                   "capabilities"
#define VFIO_USER_CAP_MAX_FDS           "max_msg_fds"
#define VFIO_USER_CAP_MAX_XFER          "max_data_xfer_size"
#define VFIO_USER_CAP_MAX_DMA_MAPS      "max_dma_maps"
#define VFIO_USER_CAP_PGSIZES           "pgsizes"
#define VFIO_USER_CAP_MIGR              "migration"
#define VFIO_USER_CAP_MIGR_PGSIZE       "pgsize"
#define VFIO_USER_CAP_TWIN_SOCKET       "twin_socket"
#define VFIO_USER_CAP_TWIN_SUPPORTED    "supported"
#define VFIO_USER_CAP_TWIN_FD_INDEX     "fd_index"
#define VFIO_USER_CAP_WRITE_MULTIPLE    "write_multiple"

#define VFIO_USER_DEF_MAX_FDS           1
#define VFIO_USER_DEF_MAX_XFER          (1024 * 1024)
#define VFIO_USER_DEF_MAX_DMA_MAPS      65535
#define VFIO_USER_DEF_PGSIZES           4096

/* VFIO_USER_DMA_MAP request; the reply has no payload. */
typedef struct VFIOUserDMAMap {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset;
    uint64_t address;
    uint64_t size;
} VFIOUserDMAMap;

#define VFIO_USER_DMA_MAP_READ          (1u << 0)
#define VFIO_USER_DMA_MAP_WRITE         (1u << 1)

/* VFIO_USER_DMA_UNMAP request and reply. */
typedef struct VFIOUserDMAUnmap {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint64_t address;
    uint64_t size;
} VFIOUserDMAUnmap;

/* VFIO_USER_DEVICE_GET_INFO request and reply. */
typedef struct VFIOUserDeviceInfo {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
} VFIOUserDeviceInfo;

/*
 * VFIO_USER_DEVICE_GET_REGION_INFO request and reply (struct
 * vfio_region_info after the header; capabilities follow when argsz
 * allows, and a file descriptor may come with the reply).
 */
typedef struct VFIOUserRegionInfo {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t cap_offset;
    uint64_t size;
    uint64_t offset;
} VFIOUserRegionInfo;

/*
 * VFIO_USER_DEVICE_GET_REGION_IO_FDS request; the reply adds @count
 * entries of one of the two layouts below.
 */
typedef struct VFIOUserRegionIOFds {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} VFIOUserRegionIOFds;

/* An entry as the spec has it (40 bytes) */
typedef struct VFIOUserSubRegionIOFd {
    uint64_t offset;
    uint64_t size;
    uint32_t fd_index;
    uint32_t type;
    uint32_t flags;
    uint32_t padding;
    uint64_t datamatch;
} VFIOUserSubRegionIOFd;

/* An entry with a shadow memory (newer libvfio-user: 48 bytes) */
typedef struct VFIOUserSubRegionIOFdShadow {
    uint64_t offset;
    uint64_t size;
    uint32_t fd_index;
    uint32_t type;
    uint32_t flags;
    uint32_t shadow_mem_fd_index;
    uint64_t shadow_offset;
    uint64_t datamatch;
} VFIOUserSubRegionIOFdShadow;
QEMU_BUILD_BUG_ON(sizeof(VFIOUserSubRegionIOFd) != 40);
QEMU_BUILD_BUG_ON(sizeof(VFIOUserSubRegionIOFdShadow) != 48);

#define VFIO_USER_IO_FD_TYPE_IOEVENTFD          0
#define VFIO_USER_IO_FD_TYPE_IOREGIONFD         1
#define VFIO_USER_IO_FD_TYPE_IOEVENTFD_SHADOW   2
/* KVM_IOEVENTFD_FLAG_DATAMATCH; PIO and the others are not for BARs */
#define VFIO_USER_IO_FD_FLAG_DATAMATCH          (1u << 0)

/* VFIO_USER_DEVICE_GET_IRQ_INFO request and reply (struct vfio_irq_info). */
typedef struct VFIOUserIRQInfo {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} VFIOUserIRQInfo;

/*
 * VFIO_USER_DEVICE_SET_IRQS request (struct vfio_irq_set); eventfds for
 * ACTION_TRIGGER with DATA_EVENTFD travel as file descriptors.
 */
typedef struct VFIOUserIRQSet {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t start;
    uint32_t count;
} VFIOUserIRQSet;

/*
 * VFIO_USER_REGION_READ and VFIO_USER_REGION_WRITE request and reply: the
 * data follows in a write request and in a read reply.
 */
typedef struct VFIOUserRegionRW {
    VFIOUserHdr hdr;
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    uint8_t data[];
} VFIOUserRegionRW;

/*
 * VFIO_USER_DMA_READ and VFIO_USER_DMA_WRITE, sent by the server: the
 * data starts at byte 32 of the message, in a write request and in a read
 * reply.
 */
typedef struct VFIOUserDMARW {
    VFIOUserHdr hdr;
    uint64_t address;
    uint64_t count;
    uint8_t data[];
} VFIOUserDMARW;
QEMU_BUILD_BUG_ON(offsetof(VFIOUserDMARW, data) != 32);

/*
 * The largest fixed part in front of the data of a transfer message
 * (region, DMA or migration data): a message carrying max_data_xfer_size
 * bytes of data is at most this much larger than the data.
 */
#define VFIO_USER_XFER_OVERHEAD         (sizeof(VFIOUserHdr) + 16)

/* VFIO_USER_DEVICE_FEATURE request and reply (struct vfio_device_feature). */
typedef struct VFIOUserDeviceFeature {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t flags;
    uint8_t data[];
} VFIOUserDeviceFeature;

/*
 * DEVICE_FEATURE data of VFIO_DEVICE_FEATURE_DMA_LOGGING_START (the
 * ranges inline, not by address) and _REPORT (the bitmap inline in the
 * reply: one bit per page, in 64-bit words).
 */
typedef struct VFIOUserDMALoggingRange {
    uint64_t iova;
    uint64_t length;
} VFIOUserDMALoggingRange;

typedef struct VFIOUserDMALoggingControl {
    uint64_t page_size;
    uint32_t num_ranges;
    uint32_t reserved;
    VFIOUserDMALoggingRange ranges[];
} VFIOUserDMALoggingControl;

typedef struct VFIOUserDMALoggingReport {
    uint64_t iova;
    uint64_t length;
    uint64_t page_size;
    uint8_t bitmap[];
} VFIOUserDMALoggingReport;

/*
 * VFIO_USER_MIG_DATA_READ request (argsz, size) and reply (argsz, size,
 * data); VFIO_USER_MIG_DATA_WRITE request (argsz, size, data).
 */
typedef struct VFIOUserMigData {
    VFIOUserHdr hdr;
    uint32_t argsz;
    uint32_t size;
    uint8_t data[];
} VFIOUserMigData;

/*
 * What the server accepted in VFIO_USER_VERSION (spec defaults if absent),
 * decoded: in host byte order, never on the wire.
 */
typedef struct VFIOUserCaps {
    uint16_t major;
    uint16_t minor;
    /* File descriptors we may send in one message (max_msg_fds). */
    uint32_t max_send_fds;
    /* Largest data transfer the server accepts (max_data_xfer_size). */
    uint64_t max_xfer;
    uint64_t max_dma_maps;
    /* Page sizes the server supports for DMA maps, or'ed together. */
    uint64_t pgsizes;
    /* The server accepted our migration proposal (our page size) */
    bool migration;
    /* The reply's descriptor that is the twin socket, or -1 */
    int twin_fd_index;
} VFIOUserCaps;

#endif /* HW_VFIO_USER_PROTOCOL_H */
