# SPDX-License-Identifier: GPL-2.0-or-later
# nvme served over vfio-user: a loop of O_DIRECT writes and verified
# reads (vfu.passes=N passes of 32 MiB, 6 by default) must complete with
# every checksum matching and no I/O error.  The host may kill and
# restart the server meanwhile (test-guest-nvme-reconnect): the driver
# recovers by itself (its I/O timeout, then a controller reset).
d=$(pci_find_class 010802) || { echo "no nvme device"; return 1; }
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "no /dev/nvme0n1"; return 1; }
# vfu.maxkb=K: requests of at most K KiB (fewer pages mapped at once)
maxkb=$(vfu_arg maxkb "")
[ -z "$maxkb" ] || echo "$maxkb" > /sys/block/nvme0n1/queue/max_sectors_kb
passes=6
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vfu.passes=*) passes=${arg#vfu.passes=} ;;
    esac
done
vfu dio-loop /dev/nvme0n1 32 $passes 0x3333 || return 1
# The kernel's view of the outage
dmesg | grep -i nvme | tail -n 8
