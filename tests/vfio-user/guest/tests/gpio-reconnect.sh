# SPDX-License-Identifier: GPL-2.0-or-later
# gpio-pci-idio-16 while its server is killed and started again (by the
# host, test-guest-gpio-reconnect, once it sees "gpio: first read"): the
# driver stays bound, reads during the outage see all ones (a device off
# the bus), and once the device is back the input lines read from the
# new server again.  The guest is told nothing: it just reads.
. /tests/gpio.sh || return 1
echo "gpio: first read $vals"
# All inputs, as the driver reads them
lines() {
    local v= n
    for n in $names; do
        v="$v$(cat /sys/class/gpio/$n/value)"
    done
    echo "$v"
}
outage=0
i=0
while [ $i -lt 300 ]; do
    v=$(lines)
    case "$v" in
    11111111)
        [ $outage = 1 ] || echo "gpio: outage (all ones) after $i reads"
        outage=1 ;;
    *[!01]*|"")
        echo "gpio: read failed: '$v'"; return 1 ;;
    *)
        if [ $outage = 1 ]; then
            echo "gpio: read after the outage: $v"
            return 0
        fi ;;
    esac
    sleep 0.1
    i=$((i + 1))
done
echo "gpio: the device did not come back (outage seen: $outage)"
return 1
