# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the tests of this repository's tooling (tools-tests/test-*):
# the environment of env.sh (TOP, QEMU_TREE, QEMU_BUILD, the peers) and
# the device tests' helpers (tests/vfio-user/lib.sh: fail, ok, skip,
# expect_fail, wait_for_socket, TMP, PIDS, QEMU, SAMPLES).  Source it.

. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
. "$TOP/tests/vfio-user/lib.sh"
