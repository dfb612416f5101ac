# SPDX-License-Identifier: GPL-2.0-or-later
# gpio-pci-idio-16 across a live migration (test-guest-gpio-migrate
# migrates the VM once it sees "gpio: set"): the driver stays bound.
# Output line 0 is set once, which the sample counts, and input line 16
# reads 0 from then on; on the destination it must read 0 too (the
# device's state came along), through the new server.
. /tests/gpio.sh || return 1
echo "gpio: first read $vals"
lines() {
    local v= n
    for n in $names; do
        v="$v$(cat /sys/class/gpio/$n/value)" || return 1
    done
    echo "$v"
}
out=$(gpio_export 0)
[ -n "$out" ] && echo 1 > /sys/class/gpio/$out/value || {
    echo "gpio: cannot set output line 0"; return 1; }
v=$(lines)
echo "gpio: set output line 0, inputs $v"
case "$v" in
0*) ;;
*) echo "gpio: input line 16 did not follow"; return 1 ;;
esac
i=0
while [ $i -lt 150 ]; do
    v=$(lines)
    case "$v" in
    0[01][01][01][01][01][01][01]) ;;
    *) echo "gpio: read failed or state lost: '$v'"; return 1 ;;
    esac
    echo "gpio: read $i: $v"
    sleep 0.1
    i=$((i + 1))
done
