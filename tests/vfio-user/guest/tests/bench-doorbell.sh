# SPDX-License-Identifier: GPL-2.0-or-later
# bench/doorbell.sh: 32-bit writes to BAR0 of the newer libvfio-user's
# shadow_ioeventfd_server, whose offset 0 has an ioeventfd.  Two devices:
#   00:04.0  vfio-user-pci as is: offset 0 goes to the eventfd, offset 8
#            is a message (not posted: a device with ioeventfds posts none)
#   00:05.0  vfio-user-pci,x-no-ioeventfds=on: offset 0 is a posted message
# vfu.rounds=N and vfu.count=N on the kernel command line.  Lines
# "BENCH doorbell KIND NS" are parsed by bench/doorbell.sh.
rounds=3 count=20000
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vfu.rounds=*) rounds=${arg#vfu.rounds=} ;;
    vfu.count=*) count=${arg#vfu.count=} ;;
    esac
done
for slot in 04 05; do
    d=/sys/bus/pci/devices/0000:00:$slot.0
    [ "$(cat $d/vendor)" = 0x4e58 ] ||
        { echo "no shadow_ioeventfd_server at $d"; return 1; }
    echo 1 > $d/enable
done
r=1
while [ $r -le $rounds ]; do
    for kind in eventfd:04:0 message:04:8 posted:05:0; do
        set -- $(echo $kind | tr : ' ')
        bar=/sys/bus/pci/devices/0000:00:$2.0/resource0
        out=$(vfu mmio-bench $bar $3 $count w) || return 1
        echo "round $r $1: $out"
        ns=$(echo "$out" | sed -n 's/.* \([0-9.]*\) ns\/access.*/\1/p')
        echo "BENCH doorbell $1 $ns"
    done
    r=$((r + 1))
done
