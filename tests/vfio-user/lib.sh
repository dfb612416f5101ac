# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the shell tests in tests/vfio-user.  Source it.
#
# Environment (meson test sets the first two):
#   QEMU_BUILD    QEMU's build directory (default: ../../build from here)
#   PYTHON        Python 3 (default: python3 in PATH)
#   TEST_TMPDIR   a directory for the test's sockets, images and logs
#                 (default: a new one, removed when the test passes)
# A test exits 77 (skipped, with "SKIP: reason") when what it needs is
# missing: see skip() and guest-lib.sh.

set -eu
VFIO_USER_TESTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QEMU_BUILD=${QEMU_BUILD:-$(cd "$VFIO_USER_TESTS/../.." && pwd)/build}
QEMU=$QEMU_BUILD/qemu-system-x86_64
SAMPLES=$QEMU_BUILD/subprojects/libvfio-user/samples
PYTHON=${PYTHON:-$(command -v python3 || echo python3)}
if [ -n "${TEST_TMPDIR:-}" ]; then
    TMP=$TEST_TMPDIR
    TMP_OWN=
else
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/vfio-user-test.XXXXXX")
    TMP_OWN=1
fi
# Processes killed when the test ends: servers (PIDS) and guests
# (GUEST_PIDS, guest-lib.sh's start_guest)
PIDS=()
GUEST_PIDS=()

cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}" "${GUEST_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}" "${GUEST_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ -n "$TMP_OWN" ]; then
        if [ $rc = 0 ] || [ $rc = 77 ]; then
            rm -rf "$TMP"
        else
            echo "(the test's files are kept in $TMP)" >&2
        fi
    fi
}
trap cleanup EXIT

# forget_guest PID: the guest PID (waited for) is not to be killed at the
# end (its PID may be another process's by then)
forget_guest() {
    local p keep=()
    for p in "${GUEST_PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    GUEST_PIDS=("${keep[@]}")
}

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# skip REASON: the test cannot run here (meson counts exit 77 as a skip)
skip() { echo "SKIP: $*"; exit 77; }

# need_qemu: skip unless $QEMU exists.
need_qemu() {
    [ -x "$QEMU" ] || skip "no QEMU at $QEMU (QEMU_BUILD)"
}

# wait_for_socket PATH [SECONDS]: wait until PATH is a listening socket.
wait_for_socket() {
    local path=$1 secs=${2:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        if [ -S "$path" ] && "$PYTHON" -c '
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
