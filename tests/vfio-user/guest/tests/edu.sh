# SPDX-License-Identifier: GPL-2.0-or-later
# edu served over vfio-user: map BAR0 from sysfs, check the identity and
# liveness registers.
d=$(pci_find 1234 11e8) || { echo "no edu device"; return 1; }
echo "edu at $d"
echo 1 > $d/enable
id=$(vfu mmio $d/resource0 0 4)
echo "identity register: $id"
[ "$id" = 0x10000ed ] || return 1
vfu mmio $d/resource0 4 4 0x12345678
live=$(vfu mmio $d/resource0 4 4)
echo "liveness: wrote 0x12345678, read $live"
[ "$live" = 0xedcba987 ] || return 1
