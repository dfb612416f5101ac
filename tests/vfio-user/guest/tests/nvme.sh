# SPDX-License-Identifier: GPL-2.0-or-later
# nvme served over vfio-user: the nvme driver binds, 32 MiB of random
# data written with O_DIRECT reads back with the same checksum; then the
# guest reboots (a system reset of the device) and does it again.
d=$(pci_find_class 010802) || { echo "no nvme device"; return 1; }
echo "nvme at $d, driver: $(basename $(readlink $d/driver) 2>/dev/null)"
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "no /dev/nvme0n1"; return 1; }
echo "nvme0n1: $(cat /sys/block/nvme0n1/size) sectors"
# The last MiB holds the boot counter.
last=$(( $(cat /sys/block/nvme0n1/size) / 2048 - 1 ))
boot=$(dd if=/dev/nvme0n1 bs=1M skip=$last count=1 2>/dev/null | head -c 5)
if [ "$boot" = "boot2" ]; then
    echo "second boot, after the reset"
    vfu dio /dev/nvme0n1 32 0x2222 || return 1
    return 0
fi
vfu dio /dev/nvme0n1 32 0x1111 || return 1
echo -n boot2 | dd of=/dev/nvme0n1 bs=1M seek=$last conv=fsync 2>/dev/null
echo "rebooting"
sync
reboot -f
sleep 10
