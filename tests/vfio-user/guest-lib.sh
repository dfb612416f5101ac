# SPDX-License-Identifier: GPL-2.0-or-later
# Boot the test guest with vfio-user-pci.  Source it after lib.sh.
#
# The test peers, each found through the environment (default: in the
# build directory's vfio-user-peers/); a test whose peer is missing is
# skipped, and says which:
#   VFIO_USER_TEST_GUEST         the guest: a directory holding vmlinuz
#                                (x86_64 Linux with nvme, e1000e,
#                                gpio-pci-idio-16 and virtio-mem) and
#                                initramfs.cpio.gz, whose /init runs the
#                                test named by vfu.test= (guest/: its
#                                init, test scripts and programs)
#   VFIO_USER_TEST_SPDK          SPDK's tree, built with vfio-user:
#                                build/bin/nvmf_tgt and scripts/rpc.py
#   VFIO_USER_TEST_LIBVFIO_USER  the samples of a libvfio-user newer than
#                                QEMU's subproject (migration v2)
PEERS=$QEMU_BUILD/vfio-user-peers
GUEST=${VFIO_USER_TEST_GUEST:-$PEERS/guest}
SPDK=${VFIO_USER_TEST_SPDK:-$PEERS/spdk}
PEER_SAMPLES=${VFIO_USER_TEST_LIBVFIO_USER:-$PEERS/libvfio-user}

need_qemu
[ -f "$GUEST/vmlinuz" ] && [ -f "$GUEST/initramfs.cpio.gz" ] ||
    skip "no test guest in $GUEST (VFIO_USER_TEST_GUEST: vmlinuz and initramfs.cpio.gz)"

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
    "$QEMU" -object help | grep -q '^  x-vfio-user-server$' ||
        skip "this QEMU has no x-vfio-user-server (configure --enable-vfio-user-server)"
    "$QEMU" -machine x-remote,vfio-user=on,auto-shutdown=on -nodefaults \
        -display none "$@" \
        -object "$(server_object "$TMP/$name.sock")" \
        > "$TMP/$name-server.log" 2>&1 &
    PIDS+=($!)
    wait_server "$name"
}

# sample_server NAME SAMPLE [ARGS...]: start a libvfio-user sample of
# $SAMPLES (QEMU's subproject; tests set it to $PEER_SAMPLES for the
# newer libvfio-user's).
sample_server() {
    local name=$1 sample=$2
    shift 2
    [ -x "$SAMPLES/$sample" ] || {
        [ "$SAMPLES" = "$PEER_SAMPLES" ] &&
            skip "the newer libvfio-user's $sample is not built (no $SAMPLES/$sample; VFIO_USER_TEST_LIBVFIO_USER)"
        skip "no libvfio-user sample $SAMPLES/$sample (configure --enable-vfio-user-server)"
    }
    "$SAMPLES/$sample" "$@" "$TMP/$name.sock" > "$TMP/$name-server.log" 2>&1 &
    PIDS+=($!)
    wait_server "$name"
}

# SPDK's NVMe target ($SPDK), its libraries and rpc.py
SPDK_ENV="LD_LIBRARY_PATH=$SPDK/build/lib:$SPDK/build/libvfio-user/build-release/lib:$SPDK/isa-l/.libs"
# Fixed namespace identifiers: a restarted target serves the same
# namespace (Linux drops one whose identifiers change)
SPDK_UUID=6b1f5e2a-0c3d-4e8f-9a7b-1c2d3e4f5a6b
SPDK_NS_ARGS="-u $SPDK_UUID -g 6B1F5E2A0C3D4E8F9A7B1C2D3E4F5A6B -e 6B1F5E2A0C3D4E8F"

# spdk_server NAME [TRANSPORT-ARGS...]: start SPDK's nvmf_tgt serving an
# NVMe controller over vfio-user, socket $TMP/NAME/cntrl, its namespace
# the 64 MiB file $TMP/NAME.disk (kept across restarts, as are the
# namespace's identifiers).  TRANSPORT-ARGS go to nvmf_create_transport
# (-M: BAR0 reached by messages only).  SPDK_PID is the target's pid.
spdk_server() {
    local name=$1 dir=$TMP/$1 i
    shift
    [ -x "$SPDK/build/bin/nvmf_tgt" ] && [ -f "$SPDK/scripts/rpc.py" ] ||
        skip "SPDK's NVMe target is not built (no $SPDK/build/bin/nvmf_tgt or scripts/rpc.py; VFIO_USER_TEST_SPDK)"
    mkdir -p "$dir"
    rm -f "$dir/cntrl" "$dir/rpc.sock"
    [ -f "$TMP/$name.disk" ] || truncate -s 64M "$TMP/$name.disk"
    # -u: no PCI devices of the host; no hugepages, 512 MiB of memory;
    # no lock on its core (tests may run two targets)
    env "$SPDK_ENV" "$SPDK/build/bin/nvmf_tgt" -u --no-huge -s 512 --disable-cpumask-locks \
        -r "$dir/rpc.sock" >> "$TMP/$name-server.log" 2>&1 &
    SPDK_PID=$!
    PIDS+=($SPDK_PID)
    for ((i = 0; i < 200; i++)); do
        [ -S "$dir/rpc.sock" ] && break
        sleep 0.1
    done
    "$PYTHON" "$SPDK/scripts/rpc.py" -s "$dir/rpc.sock" -t 30 \
        >> "$TMP/$name-server.log" 2>&1 <<RPC ||
nvmf_create_transport -t VFIOUSER $*
bdev_aio_create $TMP/$name.disk aio0 512 -u $SPDK_UUID
nvmf_create_subsystem nqn.2019-07.io.spdk:cnode0 -a -s SPDK0
nvmf_subsystem_add_ns nqn.2019-07.io.spdk:cnode0 aio0 $SPDK_NS_ARGS
nvmf_subsystem_add_listener nqn.2019-07.io.spdk:cnode0 -t VFIOUSER -a $dir -s 0
RPC
        { cat "$TMP/$name-server.log"; fail "SPDK did not start"; }
    wait_for_file_socket "$dir/cntrl" ||
        { cat "$TMP/$name-server.log"; fail "SPDK made no socket"; }
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
    GUEST_PIDS+=("$GUEST_PID")
}

finish_guest() {
    local rc=0
    wait "$GUEST_PID" || rc=$?
    forget_guest "$GUEST_PID"
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
