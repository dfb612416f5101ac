/*
 * vfio-user-pci: the device's state, and its I/O (hw/vfio-user/device.c)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_DEVICE_H
#define HW_VFIO_USER_DEVICE_H

#include "qemu/units.h"
#include "hw/vfio/pci.h"
#include "hw/vfio-user/proxy.h"

#define TYPE_VFIO_USER_PCI "vfio-user-pci"

/* The config header bytes that hold the device's IDs and class */
#define VFIO_USER_ID_BYTES              0x30
OBJECT_DECLARE_SIMPLE_TYPE(VFIOUserPCIDevice, VFIO_USER_PCI)

/*
 * Bounds on what a server may report.  VFIO PCI devices have 9 regions
 * and 5 interrupt indexes; device-specific regions and interrupts come on
 * top.  A PCI function has at most 2048 MSI-X vectors.
 */
#define VFIO_USER_MAX_REGIONS           64
#define VFIO_USER_MAX_IRQS              16
#define VFIO_USER_MAX_IRQ_COUNT         2048
/* File descriptors a region info reply may carry (one per sparse area) */
#define VFIO_USER_MAX_REGION_FDS        16
/* The largest ROM and other region a server may report */
#define VFIO_USER_MAX_ROM_SIZE          (16 * MiB)
#define VFIO_USER_MAX_REGION_SIZE       (1ULL << 40)
/* The largest region info (with its capabilities) we accept. */
#define VFIO_USER_MAX_REGION_INFO       4096
/* The most ioeventfds a region may have (hw/vfio-user/ioeventfd.c) */
#define VFIO_USER_MAX_IOEVENTFDS        64

typedef struct VFIOUserIOEventFD VFIOUserIOEventFD;

/*
 * The device's connection to its server.  Every transition goes through
 * vfio_user_pci_set_conn():
 *
 *   REALIZING -> CONNECTED              realize succeeded (pci.c)
 *   CONNECTED -> LOST                   the proxy lost the server (pci.c)
 *   LOST -> RECONNECTING                an attempt starts (reconnect.c)
 *   RECONNECTING -> CONNECTED | LOST    it succeeded, or failed
 *   CONNECTED | LOST -> UNPLUGGING      unrealize, no attempt running
 */
typedef enum VFIOUserPCIConn {
    /* Messages pass; a lost server is realize's error */
    VFIO_USER_PCI_REALIZING,
    /* Messages pass */
    VFIO_USER_PCI_CONNECTED,
    /*
     * The server is gone: reads return all ones and writes are dropped,
     * like a device off the bus; reported once.
     */
    VFIO_USER_PCI_LOST,
    /*
     * Lost; an attempt (reconnect_co) restores a new server with
     * messages of its own, which alone pass
     */
    VFIO_USER_PCI_RECONNECTING,
    /* Unrealize: messages pass while the server is there; no reconnect */
    VFIO_USER_PCI_UNPLUGGING,
} VFIOUserPCIConn;

struct VFIOUserPCIDevice {
    VFIOPCIDevice parent_obj;

    /* Properties */
    SocketAddress *socket;
    uint32_t msg_timeout;
    uint64_t poll_max_ns;
    bool no_dirty_tracking;
    bool no_ioeventfds;
    bool no_posted_writes;
    bool send_queued;
    uint32_t class_code;
    uint32_t reconnect_ms;

    VFIOProxy *proxy;
    VFIOUserPCIConn conn;

    /* Reconnecting (hw/vfio-user/reconnect.c) */
    QEMUTimer *reconnect_timer;
    /* Guards the attempt in progress from a server that drags it out */
    QEMUTimer *attempt_timer;
    /*
     * The guest changed interrupts or config space while an attempt
     * restored them (dropped, like every access while disconnected): the
     * attempt restores them again before it connects.
     */
    bool reconnect_dirty;
    /* The guest's PCIe device control, as it wrote it (not emulated) */
    uint16_t devctl;
    bool devctl_written;
    /* The attempt in progress (RECONNECTING), whose messages pass */
    Coroutine *reconnect_co;
    /* A reset or unplug made the attempt in progress fail */
    bool reconnect_cancelled;
    /* A new server lost the device's state: to tell the guest (AER) */
    bool state_lost;
    unsigned int reconnect_attempts;
    /* Why the last attempt was refused, reported once (reconnect.c) */
    int refusal_step;
    int refusal_errno;
    /* The server's config header at realize: what identifies the device */
    uint8_t ids[VFIO_USER_ID_BYTES];
    /* Its interrupt indexes' counts at realize (-1: not reported) */
    int64_t irq_counts[VFIO_USER_MAX_IRQS];

    /* Migration (docs/devel/vfio-user.rst) */
    OnOffAuto enable_migration;
    /* The server offered migration in VERSION: DEVICE_FEATURE passes */
    bool migratable;
    /* Migration data read since the last device state change */
    uint64_t mig_data_read;

    /* Unmasks INTx, then checks that it went down (device.c) */
    Coroutine *intx_unmask_co;
    bool intx_unmask_again;
    /* KVM's resample eventfd for INTx, which QEMU reads (device.c) */
    int intx_resample_fd;

    /* The server's region ioeventfds in use (hw/vfio-user/ioeventfd.c) */
    QLIST_HEAD(, VFIOUserIOEventFD) ioeventfds;
};

/*
 * What a server that cannot tell its stop-and-copy size is assumed to
 * send at least (hw/vfio also sizes its read buffer by it).
 */
#define VFIO_USER_MIG_DATA_MIN_ESTIMATE (64 * KiB)
/* ... and at most (hw/vfio's own guess when it cannot ask) */
#define VFIO_USER_MIG_DATA_MAX_ESTIMATE (100 * GiB)
/* The largest DMA logging bitmap (of 2 TiB of guest memory) we take */
#define VFIO_USER_MAX_DIRTY_BITMAP      (64 * MiB)

/* hw/vfio-user/device.c: the device's state and its I/O */

/* Move the device's connection to @conn (see VFIOUserPCIConn) */
void vfio_user_pci_set_conn(VFIOUserPCIDevice *udev, VFIOUserPCIConn conn);

/* Is the server lost (with or without an attempt restoring a new one)? */
static inline bool vfio_user_pci_lost(VFIOUserPCIDevice *udev)
{
    return udev->conn == VFIO_USER_PCI_LOST ||
           udev->conn == VFIO_USER_PCI_RECONNECTING;
}

/* The BAR region @index whose areas the guest reaches mmap-ed, or NULL */
VFIORegion *vfio_user_pci_mapped_bar(VFIOUserPCIDevice *udev, int index);

/*
 * Post the writes to memory BARs (send them without waiting for a reply)
 * when the device's properties, mmaps and ioeventfds allow it.
 */
void vfio_user_pci_setup_posted_writes(VFIOUserPCIDevice *udev);

/*
 * No more INTx unmasks: wait for the one in flight, stop reading KVM's
 * resample eventfd
 */
void vfio_user_intx_exit(VFIOUserPCIDevice *udev);

/* The vfio-user implementation of VFIODeviceIOOps */
extern const VFIODeviceIOOps vfio_user_device_io_ops;

static inline VFIOUserPCIDevice *vfio_user_pci_from_vbasedev(VFIODevice *vbd)
{
    return container_of(vbd, VFIOUserPCIDevice, parent_obj.vbasedev);
}

#endif /* HW_VFIO_USER_DEVICE_H */
