# SPDX-License-Identifier: GPL-2.0-or-later
# gpio-pci-idio-16 from libvfio-user: the Linux driver binds and the
# guest reads the input lines through the GPIO sysfs interface.
d=$(pci_find 494f 0dc8) || { echo "no gpio-pci-idio-16 device"; return 1; }
drv=$(basename $(readlink $d/driver) 2>/dev/null)
echo "gpio device at $d, driver: $drv"
[ "$drv" = pci-idio-16 ] || return 1
chip=
for c in /sys/class/gpio/gpiochip*; do
    case "$(readlink $c)" in
    *$(basename $d)*) chip=$c ;;
    esac
done
[ -n "$chip" ] || { echo "no gpiochip for the device"; return 1; }
base=$(cat $chip/base)
ngpio=$(cat $chip/ngpio)
echo "$(basename $chip): label $(cat $chip/label), base $base, $ngpio lines"
# gpio_export N: export line N of the chip and print its sysfs name (a
# line the chip names is exported under its name: the new directory).
gpio_export() {
    local before e line=
    before=$(ls /sys/class/gpio)
    echo $(($base + $1)) > /sys/class/gpio/export || return 1
    for e in $(ls /sys/class/gpio); do
        echo "$before" | grep -qx "$e" || line=$e
    done
    echo "$line"
}
vals=
names=
# Lines 16..31 are the inputs of the IDIO-16.
for i in 16 17 18 19 20 21 22 23; do
    n=$((base + i))
    line=$(gpio_export $i) || return 1
    if [ -z "$line" ] || [ ! -f /sys/class/gpio/$line/value ]; then
        echo "gpio $n: no sysfs line"
        return 1
    fi
    vals="$vals$(cat /sys/class/gpio/$line/value)"
    names="$names $line"
done
echo "input lines 16-23 ($line is the last): $vals"
[ ${#vals} = 8 ] || return 1
