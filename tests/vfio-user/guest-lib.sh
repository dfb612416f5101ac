# SPDX-License-Identifier: GPL-2.0-or-later
# Boot the test guest (tests/vfio-user/mkguest) with vfio-user-pci.
# Source it after lib.sh.

GUEST=$TOP/build/guest
"$TOP/tests/vfio-user/mkguest" "$GUEST" >&2

# The -object of x-vfio-user-server on socket $1 for the device with id
# d0 (QEMU 10.0 takes the server's socket in the JSON form only).
server_object() {
    printf '{"qom-type":"x-vfio-user-server","id":"s0",%s,"device":"d0"}' \
        "\"socket\":{\"type\":\"unix\",\"path\":\"$1\"}"
}

# Wait for the server NAME's socket, or show its log and fail.
wait_server() {
    wait_for_file_socket "$TMP/$1.sock" ||
        { cat "$TMP/$1-server.log"; fail "server $1 did not start"; }
}

# remote_server NAME QEMU-ARGS...: start x-vfio-user-server serving the
# device with id d0 that QEMU-ARGS define; its socket is $TMP/NAME.sock.
remote_server() {
    local name=$1
    shift
    "$QEMU" -machine x-remote,vfio-user=on,auto-shutdown=on -nodefaults \
        -display none "$@" \
        -object "$(server_object "$TMP/$name.sock")" \
        > "$TMP/$name-server.log" 2>&1 &
    PIDS+=($!)
    wait_server "$name"
}

# sample_server NAME SAMPLE [ARGS...]: start a libvfio-user sample.
sample_server() {
    local name=$1 sample=$2
    shift 2
    "$SAMPLES/$sample" "$@" "$TMP/$name.sock" > "$TMP/$name-server.log" 2>&1 &
    PIDS+=($!)
    wait_server "$name"
}

# The servers take one client: wait for the socket file, not a connection.
wait_for_file_socket() {
    local i
    for ((i = 0; i < 300; i++)); do
        [ -S "$1" ] && { sleep 0.1; return 0; }
        sleep 0.1
    done
    return 1
}

# The guest's console (start_guest); set it before start_guest to keep
# two guests' apart.
GUEST_LOG=$TMP/guest.log

# Kernel arguments added to the guest's command line
GUEST_APPEND=${GUEST_APPEND:-}

# start_guest TEST SECONDS QEMU-ARGS...: boot the guest running TEST in
# the background (GUEST_PID); finish_guest waits for it and checks it.
# The console is in $GUEST_LOG ($TMP/guest.log unless set).
start_guest() {
    local test=$1 secs=$2
    shift 2
    GUEST_TEST=$test
    GUEST_SECS=$secs
    timeout "$secs" "$QEMU" -machine q35 -accel tcg -cpu max -m 512 \
        -object memory-backend-memfd,id=mem,size=512M,share=on \
        -machine memory-backend=mem -nodefaults -display none \
        -serial stdio -kernel "$GUEST/vmlinuz" \
        -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vfu.test=$test $GUEST_APPEND" \
        "$@" < /dev/null > "$GUEST_LOG" 2>&1 &
    GUEST_PID=$!
}

finish_guest() {
    local rc=0
    wait "$GUEST_PID" || rc=$?
    sed 's/^/guest| /' "$GUEST_LOG"
    [ $rc = 124 ] && fail "the guest did not finish within $GUEST_SECS s"
    grep -q "VFU-RESULT: PASS $GUEST_TEST" "$GUEST_LOG" ||
        fail "guest test $GUEST_TEST failed"
    ok "guest test $GUEST_TEST passed"
}

# wait_guest_log PATTERN SECONDS: wait until the guest prints PATTERN.
wait_guest_log() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        grep -q -- "$1" "$GUEST_LOG" 2>/dev/null && return 0
        kill -0 "$GUEST_PID" 2>/dev/null || break
        sleep 0.05
    done
    sed 's/^/guest| /' "$GUEST_LOG"
    fail "the guest did not print '$1'"
}

# run_guest TEST SECONDS QEMU-ARGS...: boot the guest running TEST; pass
# when it prints "VFU-RESULT: PASS TEST".
run_guest() {
    start_guest "$@"
    finish_guest
}
