#!/usr/bin/env python3
#
# Functional test: a Linux guest using vfio-user-pci devices served by
# QEMU's x-vfio-user-server (nvme: write, read back, compare) and by
# libvfio-user's gpio-pci-idio-16 sample (the guest enumerates it).
#
# The guest is Debian's kernel with a busybox initramfs made here from
# Debian's busybox-static: the nvme driver and its dependencies are
# modules of the kernel package, loaded by the initramfs's /init.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import subprocess
import time

from qemu_test import QemuSystemTest, Asset, wait_for_console_pattern


# The modules of ASSET_KERNEL_DEB that the nvme driver needs, dependencies
# first (their "depends" fields, resolved for this kernel)
NVME_MODULES = (
    'crypto/crct10dif_common.ko',
    'lib/crc-t10dif.ko',
    'lib/crc64.ko',
    'lib/crc64-rocksoft.ko',
    'block/t10-pi.ko',
    'drivers/nvme/host/nvme-core.ko',
    'drivers/nvme/host/nvme.ko',
)

# What the guest writes to the nvme namespace and reads back
PATTERN_SIZE = 1024 * 1024

INIT = r'''#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
result() {
    echo "VFIO-USER-TEST: $1"
    poweroff -f
}
case "$(cat /proc/cmdline)" in
*vfiotest=nvme*)
    for m in $(cat /modules/order); do
        insmod /modules/$m || result "FAIL insmod $m"
    done
    for i in $(seq 100); do
        [ -b /dev/nvme0n1 ] && break
        sleep 0.1
    done
    [ -b /dev/nvme0n1 ] || result "FAIL no /dev/nvme0n1"
    dd if=/pattern of=/dev/nvme0n1 bs=4096 conv=fsync 2>/dev/null ||
        result "FAIL write"
    echo 3 > /proc/sys/vm/drop_caches
    dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count=256 2>/dev/null ||
        result "FAIL read"
    cmp /pattern /tmp/back || result "FAIL compare"
    result "PASS nvme"
    ;;
*vfiotest=gpio*)
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat $d/vendor)" = 0x494f ] &&
           [ "$(cat $d/device)" = 0x0dc8 ]; then
            result "PASS gpio $(basename $d)"
        fi
    done
    result "FAIL no PCI-IDIO-16"
    ;;
esac
result "FAIL no test"
'''


def cpio_newc(entries):
    """A cpio archive (newc format) of @entries: (name, mode, data)"""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [('TRAILER!!!', 0, b'')],
                                             start=1):
        name = name.encode() + b'\0'
        hdr = b'070701' + b''.join(b'%08X' % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        out += hdr + name
        out += b'\0' * (-len(out) % 4)
        out += data
        out += b'\0' * (-len(out) % 4)
    return bytes(out)


class VfioUserPci(QemuSystemTest):

    KERNEL_RELEASE = '6.1.0-57-amd64'

    # Debian 12's kernel and busybox, from snapshot.debian.org (the
    # regular pool drops a package at its next update)
    ASSET_KERNEL_DEB = Asset(
        ('https://snapshot.debian.org/archive/debian-security/'
         '20261201T000000Z/pool/updates/main/l/linux-signed-amd64/'
         'linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb'),
        '14d219d01e1283261817d961dbb3895cb5b4288d0de10e0ba0632a0d993e15bf')

    ASSET_BUSYBOX_DEB = Asset(
        ('https://snapshot.debian.org/archive/debian/20261201T000000Z/'
         'pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb'),
        '3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744')

    def make_guest(self, pattern, modules):
        """Extract the kernel; make the initramfs; return their paths"""
        mods = 'lib/modules/%s/kernel/' % self.KERNEL_RELEASE
        self.archive_extract(self.ASSET_KERNEL_DEB, format='deb',
                             member='boot/vmlinuz-' + self.KERNEL_RELEASE)
        for m in modules:
            self.archive_extract(self.ASSET_KERNEL_DEB, format='deb',
                                 member=mods + m)
        self.archive_extract(self.ASSET_BUSYBOX_DEB, format='deb',
                             member='bin/busybox')

        entries = [(d, 0o40755, b'') for d in
                   ('bin', 'dev', 'proc', 'sys', 'tmp', 'modules')]
        with open(self.scratch_file('bin', 'busybox'), 'rb') as f:
            entries.append(('bin/busybox', 0o100755, f.read()))
        order = []
        for m in modules:
            name = os.path.basename(m)
            with open(self.scratch_file(*(mods + m).split('/')), 'rb') as f:
                entries.append(('modules/' + name, 0o100644, f.read()))
            order.append(name)
        entries.append(('modules/order', 0o100644,
                        ('\n'.join(order) + '\n').encode()))
        entries.append(('pattern', 0o100644, pattern))
        entries.append(('init', 0o100755, INIT.encode()))
        initrd = self.scratch_file('initramfs.cpio')
        with open(initrd, 'wb') as f:
            f.write(cpio_newc(entries))
        kernel = self.scratch_file('boot', 'vmlinuz-' + self.KERNEL_RELEASE)
        return kernel, initrd

    def wait_socket(self, path, proc=None):
        for _ in range(300):
            if os.path.exists(path):
                return
            if proc is not None and proc.poll() is not None:
                self.fail('the server exited with %d' % proc.returncode)
            time.sleep(0.1)
        self.fail('no server socket ' + path)

    def boot_guest(self, sock, test, pattern=b'', modules=()):
        kernel, initrd = self.make_guest(pattern, modules)
        self.vm.set_console()
        self.vm.add_args('-machine', 'pc', '-accel', 'tcg',
                         '-object', 'memory-backend-memfd,id=mem,size=512M,'
                         'share=on',
                         '-machine', 'memory-backend=mem', '-m', '512M',
                         '-kernel', kernel, '-initrd', initrd,
                         '-append', 'console=ttyS0 panic=-1 quiet '
                         'rdinit=/init vfiotest=' + test,
                         '-device', 'vfio-user-pci,socket=' + sock)
        self.vm.launch()
        wait_for_console_pattern(self, 'VFIO-USER-TEST: PASS',
                                 failure_message='VFIO-USER-TEST: FAIL')
        self.vm.wait()

    def test_nvme_x_vfio_user_server(self):
        self.require_device('vfio-user-pci')
        out = subprocess.run([self.qemu_bin, '-object', 'help'],
                             capture_output=True, text=True).stdout
        if 'x-vfio-user-server' not in out:
            self.skipTest('no x-vfio-user-server in this QEMU')

        disk = self.scratch_file('disk.raw')
        with open(disk, 'wb') as f:
            f.truncate(64 * 1024 * 1024)
        sock = os.path.join(self.socket_dir().name, 'nvme.sock')
        server = self.get_vm(name='server')
        server.add_args('-machine', 'x-remote,vfio-user=on,auto-shutdown=on',
                        '-nodefaults',
                        '-drive', 'file=%s,if=none,format=raw,id=drv0' % disk,
                        '-device', 'nvme,drive=drv0,serial=func0001,id=d0',
                        '-object', '{"qom-type":"x-vfio-user-server",'
                        '"id":"s0","socket":{"type":"unix","path":"%s"},'
                        '"device":"d0"}' % sock)
        server.launch()
        self.wait_socket(sock)

        pattern = bytes((i * 7 + i // 4096) & 0xff
                        for i in range(PATTERN_SIZE))
        self.boot_guest(sock, 'nvme', pattern, NVME_MODULES)
        # auto-shutdown: the server ends with its client
        server.wait()
        # The data went through vfio-user to the server's disk
        with open(disk, 'rb') as f:
            self.assertEqual(f.read(PATTERN_SIZE), pattern)

    def test_gpio_libvfio_user_sample(self):
        self.require_device('vfio-user-pci')
        sample = self.build_file('subprojects', 'libvfio-user', 'samples',
                                 'gpio-pci-idio-16')
        if not os.access(sample, os.X_OK):
            self.skipTest('libvfio-user samples not built')
        sock = os.path.join(self.socket_dir().name, 'gpio.sock')
        proc = subprocess.Popen([sample, sock], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            self.wait_socket(sock, proc)
            self.boot_guest(sock, 'gpio')
        finally:
            proc.kill()
            proc.wait()


if __name__ == '__main__':
    QemuSystemTest.main()
