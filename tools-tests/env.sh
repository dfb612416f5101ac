# SPDX-License-Identifier: GPL-2.0-or-later
# The environment in which this repository runs the device tests
# (tests/vfio-user, under QEMU's meson) and its own: QEMU's tree and
# build, and the test peers that make build builds (tools-tests/mkguest,
# tools-tests/peers).  Source it; it sets TOP and exports the rest,
# keeping what the environment sets already.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export QEMU_TREE=${QEMU_TREE:-$TOP/build/qemu}
export QEMU_BUILD=${QEMU_BUILD:-$QEMU_TREE/build}
export VFIO_USER_TEST_GUEST=${VFIO_USER_TEST_GUEST:-$TOP/build/guest}
export VFIO_USER_TEST_SPDK=${VFIO_USER_TEST_SPDK:-$TOP/build/peers/spdk}
export VFIO_USER_TEST_LIBVFIO_USER=${VFIO_USER_TEST_LIBVFIO_USER:-$TOP/build/peers/libvfio-user/build/samples}
