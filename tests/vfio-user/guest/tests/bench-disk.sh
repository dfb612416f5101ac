# SPDX-License-Identifier: GPL-2.0-or-later
# bench/spdk.sh: O_DIRECT figures of the first NVMe controller's first
# namespace, vfu.rounds=N times: sequential write and read of vfu.mib=MIB
# in 1 MiB requests, and vfu.secs=S seconds of 4 KiB random reads at
# queue depth 1 and vfu.qd=QD.  Lines "BENCH disk seq-write|seq-read
# MIB/S" and "BENCH disk rand-qd1|rand-qdQD IOPS" are parsed by
# bench/spdk.sh, and "BENCH disk irq-disabled 1" if the kernel disabled
# the device's interrupt ("nobody cared").
rounds=$(vfu_arg rounds 2)
mib=$(vfu_arg mib 32)
secs=$(vfu_arg secs 2)
qd=$(vfu_arg qd 8)
d=$(pci_find_class 010802) || { echo "no nvme device"; return 1; }
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "no /dev/nvme0n1"; return 1; }
# The figure in vfu's "...: N MiB/s" and "...: N IOPS" lines.
mibs() { echo "$1" | sed -n 's/.*: \([0-9.]*\) MiB\/s/\1/p'; }
iops() { echo "$1" | sed -n 's/.*: \([0-9]*\) IOPS/\1/p'; }
r=1
while [ $r -le $rounds ]; do
    out=$(vfu dio-write /dev/nvme0n1 $mib) || return 1
    echo "BENCH disk seq-write $(mibs "$out")"
    out=$(vfu dio-read /dev/nvme0n1 $mib) || return 1
    echo "BENCH disk seq-read $(mibs "$out")"
    out=$(vfu dio-rand /dev/nvme0n1 $mib $secs) || return 1
    echo "BENCH disk rand-qd1 $(iops "$out")"
    out=$(vfu dio-rand /dev/nvme0n1 $mib $secs $qd) || return 1
    echo "BENCH disk rand-qd$qd $(iops "$out")"
    r=$((r + 1))
done
# The kernel gave up on the device's interrupt and polls: say so
if dmesg | grep -q 'nobody cared'; then
    dmesg | grep 'nobody cared'
    echo "BENCH disk irq-disabled 1"
fi
