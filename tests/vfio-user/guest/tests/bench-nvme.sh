# SPDX-License-Identifier: GPL-2.0-or-later
# bench/run: O_DIRECT throughput of two nvme controllers at fixed slots:
#   00:06.0  nvme emulated in the client
#   00:07.0  nvme served by x-vfio-user-server over vfio-user-pci
# vfu.rounds=N, vfu.mib=MIB (sequential size) and vfu.secs=S (random
# read duration) on the kernel command line.  Lines
# "BENCH nvme DEVICE seq-write|seq-read MIB/S" and
# "BENCH nvme DEVICE rand-read IOPS" are parsed by bench/run.
rounds=2 mib=64 secs=2
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vfu.rounds=*) rounds=${arg#vfu.rounds=} ;;
    vfu.mib=*) mib=${arg#vfu.mib=} ;;
    vfu.secs=*) secs=${arg#vfu.secs=} ;;
    esac
done
# The block device of the first namespace of the controller in slot $1.
nvme_disk() {
    local d=/sys/bus/pci/devices/0000:00:$1.0 c ns i=0
    while [ $i -lt 100 ]; do
        for c in $d/nvme/nvme*; do
            for ns in $c/nvme*n1; do
                [ -e "$ns" ] || continue
                # nvmeAcBn1 is path B of the multipath disk nvmeAn1
                ns=$(basename $ns | sed 's/c[0-9]*n/n/')
                [ -b /dev/$ns ] && { echo /dev/$ns; return 0; }
            done
        done
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
local_disk=$(nvme_disk 06) || { echo "no disk for the local nvme"; return 1; }
# The figure in vfu's "...: N MiB/s" and "...: N IOPS" lines.
mibs() { echo "$1" | sed -n 's/.*: \([0-9.]*\) MiB\/s/\1/p'; }
iops() { echo "$1" | sed -n 's/.*: \([0-9]*\) IOPS/\1/p'; }

remote_disk=$(nvme_disk 07) || { echo "no vfio-user nvme disk"; return 1; }
echo "local nvme: $local_disk, vfio-user nvme: $remote_disk"
r=1
while [ $r -le $rounds ]; do
    for dev in local:$local_disk vfio-user:$remote_disk; do
        name=${dev%%:*} disk=${dev#*:}
        out=$(vfu dio-write $disk $mib) || return 1
        echo "round $r $name: $out"
        echo "BENCH nvme $name seq-write $(mibs "$out")"
        out=$(vfu dio-read $disk $mib) || return 1
        echo "round $r $name: $out"
        echo "BENCH nvme $name seq-read $(mibs "$out")"
        out=$(vfu dio-rand $disk $mib $secs) || return 1
        echo "round $r $name: $out"
        echo "BENCH nvme $name rand-read $(iops "$out")"
    done
    r=$((r + 1))
done
