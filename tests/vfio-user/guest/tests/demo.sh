# SPDX-License-Identifier: GPL-2.0-or-later
# make demo (scripts/demo): an nvme controller served by x-vfio-user-server.
# Show the guest's view of the device, write data with O_DIRECT and read
# it back verified, then measure sequential and 4 KiB random throughput.
d=$(pci_find_class 010802) || { echo "no nvme device"; return 1; }
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "no /dev/nvme0n1"; return 1; }
echo "DEMO: the device, as the guest sees it (lspci -v style):"
vfu lspci $d | sed 's/^/DEMO:   /'
echo "DEMO: /dev/nvme0n1: $(( $(cat /sys/block/nvme0n1/size) / 2048 )) MiB," \
    "model '$(cat /sys/class/nvme/nvme0/model | sed 's/ *$//')'," \
    "serial '$(cat /sys/class/nvme/nvme0/serial | sed 's/ *$//')'"
echo "DEMO: write 16 MiB of pseudo-random data with O_DIRECT," \
    "read it back, compare:"
vfu dio /dev/nvme0n1 16 0x5eed > /tmp/dio.out; rc=$?
sed 's/^/DEMO:   /' /tmp/dio.out
[ $rc = 0 ] && grep -q ' MATCH' /tmp/dio.out || return 1
echo "DEMO: throughput (O_DIRECT, one request at a time, TCG guest):"
vfu dio-write /dev/nvme0n1 32 | sed 's/^/DEMO:   /'
vfu dio-read /dev/nvme0n1 32 | sed 's/^/DEMO:   /'
vfu dio-rand /dev/nvme0n1 32 2 | sed 's/^/DEMO:   /'
echo "DEMO: interrupts (MSI-X vectors, served over vfio-user eventfds):"
grep nvme /proc/interrupts |
    awk '{ printf "DEMO:   %s %s interrupts\n", $NF, $2 }'
