# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the shell tests in tests/vfio-user.  Source it.

set -eu
TOP=${VFIO_USER_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
QEMU_BUILD=${QEMU_BUILD:-$TOP/build/qemu/build}
QEMU_TREE=${QEMU_TREE:-$TOP/build/qemu}
QEMU=$QEMU_BUILD/qemu-system-x86_64
SAMPLES=$QEMU_BUILD/subprojects/libvfio-user/samples
TMP=${TEST_TMPDIR:-$(mktemp -d)}
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# wait_for_socket PATH [SECONDS]: wait until PATH is a listening socket.
wait_for_socket() {
    local path=$1 secs=${2:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        if [ -S "$path" ] && /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
' "$path" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# expect_fail DESCRIPTION PATTERN CMD...: CMD must fail and print PATTERN.
expect_fail() {
    local what=$1 pat=$2 out
    shift 2
    if out=$("$@" 2>&1); then
        echo "$out" >&2
        fail "$what: succeeded"
    fi
    if ! echo "$out" | grep -qE -- "$pat"; then
        echo "$out" >&2
        fail "$what: no '$pat' in the output"
    fi
    ok "$what"
}
