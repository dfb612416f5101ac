# SPDX-License-Identifier: GPL-2.0-or-later
# The first NVMe controller (any vendor's: QEMU's, SPDK's): vfu.mib=M
# MiB (32) of random data written with O_DIRECT reads back with the same
# checksum,
# then vfu.secs=S seconds (3) of 4 KiB random reads at queue depth 1 and
# vfu.qd=N (8), printed as "BENCH nvme rand-read-qd1|qdN IOPS".  Fails if
# the kernel gave up on the device's interrupt ("nobody cared").
d=$(pci_find_class 010802) || { echo "no nvme device"; return 1; }
echo "nvme at $d, driver: $(basename $(readlink $d/driver) 2>/dev/null)"
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "no /dev/nvme0n1"; return 1; }
grep -i 'nvme' /proc/interrupts
# vfu.maxkb=K: requests of at most K KiB (fewer pages mapped at once)
maxkb=$(vfu_arg maxkb "")
[ -z "$maxkb" ] || echo "$maxkb" > /sys/block/nvme0n1/queue/max_sectors_kb
secs=$(vfu_arg secs 3)
qd=$(vfu_arg qd 8)
mib=$(vfu_arg mib 32)
vfu dio /dev/nvme0n1 $mib 0x4444 || return 1
out=$(vfu dio-rand /dev/nvme0n1 $mib $secs) || return 1
echo "$out"
echo "BENCH nvme rand-read-qd1 $(echo "$out" | sed -n 's/.*: \([0-9]*\) IOPS/\1/p')"
out=$(vfu dio-rand /dev/nvme0n1 $mib $secs $qd) || return 1
echo "$out"
echo "BENCH nvme rand-read-qd$qd $(echo "$out" | sed -n 's/.*: \([0-9]*\) IOPS/\1/p')"
grep -i 'nvme' /proc/interrupts
if dmesg | grep -q 'nobody cared'; then
    dmesg | grep -B2 -A8 'nobody cared'
    return 1
fi
