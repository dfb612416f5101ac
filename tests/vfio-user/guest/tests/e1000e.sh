# SPDX-License-Identifier: GPL-2.0-or-later
# e1000e served over vfio-user, on the server's user-mode network: the
# guest brings the link up, gets an address by DHCP and pings the
# gateway.
d=$(pci_find 8086 10d3) || { echo "no e1000e device"; return 1; }
echo "e1000e at $d, driver: $(basename $(readlink $d/driver) 2>/dev/null)"
dev=$(ls $d/net 2>/dev/null | head -n 1)
[ -n "$dev" ] || { echo "no network interface"; return 1; }
ip link set $dev up
ip link set lo up
udhcpc -i $dev -n -q -t 10 -T 2 -s /bin/udhcpc-script || return 1
ip addr show $dev | grep 'inet '
ping -c 3 -W 5 10.0.2.2 || return 1
