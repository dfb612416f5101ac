# SPDX-License-Identifier: GPL-2.0-or-later
# bench/run: MMIO round trips to edu's liveness register (BAR0 + 0x04).
# The client puts three edu devices at fixed slots:
#   00:03.0  edu emulated in the client (the emulation floor)
#   00:04.0  edu over vfio-user-pci (posted writes, the default)
#   00:05.0  edu over vfio-user-pci,x-no-posted-writes=on
# vfu.rounds=N and vfu.count=LOCAL,REMOTE on the kernel command line set
# the rounds (the devices take turns in each) and the accesses per run.
# Lines "BENCH mmio DEVICE r|w NS" are parsed by bench/run.
rounds=3 count_local=100000 count_remote=2000
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    vfu.rounds=*) rounds=${arg#vfu.rounds=} ;;
    vfu.count=*)
        v=${arg#vfu.count=}; count_local=${v%,*}; count_remote=${v#*,} ;;
    esac
done
for dev in local:03 posted:04 nonposted:05; do
    d=/sys/bus/pci/devices/0000:00:${dev#*:}.0
    [ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ] ||
        { echo "no edu at $d"; return 1; }
    echo 1 > $d/enable
done
r=1
while [ $r -le $rounds ]; do
    for dev in local:03 posted:04 nonposted:05; do
        name=${dev%:*}
        n=$count_remote
        [ $name = local ] && n=$count_local
        for op in r w; do
            res=/sys/bus/pci/devices/0000:00:${dev#*:}.0/resource0
            out=$(vfu mmio-bench $res 4 $n $op) || return 1
            echo "round $r $name: $out"
            ns=$(echo "$out" | sed -n 's/.* \([0-9.]*\) ns\/access.*/\1/p')
            echo "BENCH mmio $name $op $ns"
        done
    done
    r=$((r + 1))
done
