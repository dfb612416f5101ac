# SPDX-License-Identifier: GPL-2.0-or-later
# What the guest benchmarks of bench/ share.  Source it with the name of
# the benchmark: its logs and sockets go to build/bench/NAME (emptied),
# and the test helpers (tests/vfio-user/lib.sh, guest-lib.sh) are loaded,
# with the peers of make build (tools-tests/env.sh).
#
#   . "$(dirname "$0")/lib.sh" NAME

set -eu
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$top/build/bench
. "$top/tools-tests/env.sh"
export TEST_TMPDIR=$out/$1
rm -rf "$TEST_TMPDIR"
mkdir -p "$TEST_TMPDIR"
. "$top/tests/vfio-user/lib.sh"
. "$top/tests/vfio-user/guest-lib.sh"

# median: of the numbers on stdin, one per line
median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
