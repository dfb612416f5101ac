#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# MMIO from a TCG guest to edu over x-vfio-user-server (ours, the same
# server for both): our vfio-user-pci against QEMU 10.2's upstream client
# (built by 'make bench-peers'), the two guests booted in turn, in three
# placements: every process on CPU 0; the client on CPU 0 and the
# servers on CPU 1; unpinned.  32-bit reads and posted writes of edu's
# liveness register (tests/vfio-user/guest/tests/bench-mmio.sh, device
# 00:04.0), medians over the rounds.  Printed, not asserted.
#
#   bench/upstream.sh [ROUNDS [LOCAL,REMOTE]]

. "$(dirname "$0")/lib.sh" upstream
rounds=${1:-3}
count=${2:-20000,1000}
UPSTREAM=$top/build/peers/qemu-10.2/build/qemu-system-x86_64

if [ ! -x "$UPSTREAM" ]; then
    echo "skipped: no upstream client ('make bench-peers' builds it)"
    exit 0
fi

# server NAME PREFIX...: x-vfio-user-server serving edu on $TMP/NAME.sock
server() {
    local name=$1
    shift
    rm -f "$TMP/$name.sock"
    "$@" "$QEMU" -machine x-remote,vfio-user=on,auto-shutdown=on \
        -nodefaults -display none -device edu,id=d0 \
        -object "$(server_object "$TMP/$name.sock")" \
        > "$TMP/$name-server.log" 2>&1 &
    PIDS+=($!)
    wait_for_file_socket "$TMP/$name.sock" || fail "server $name did not start"
}

# dev CLIENT SOCKET ADDR: the -device of a vfio-user client
dev() {
    if [ "$1" = upstream ]; then
        printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s"},"addr":"%s"}' "$2" "$3"
    else
        printf 'vfio-user-pci,socket=%s,addr=%s' "$2" "$3"
    fi
}

# run CLIENT PLACEMENT: one guest; its log in $TMP/CLIENT-PLACEMENT.log
run() {
    local client=$1 place=$2 qemu=$QEMU cpre=() spre=() log
    case $place in
    cpu0) cpre=(taskset -c 0) spre=(taskset -c 0) ;;
    split) cpre=(taskset -c 0) spre=(taskset -c 1) ;;
    esac
    [ $client = upstream ] && qemu=$UPSTREAM
    server a "${spre[@]}"
    server b "${spre[@]}"
    log=$TMP/$client-$place.log
    timeout 300 "${cpre[@]}" "$qemu" -L /usr/share/qemu -L /usr/share/seabios \
        -machine q35 -accel tcg -cpu max -m 512 \
        -object memory-backend-memfd,id=mem,size=512M,share=on \
        -machine memory-backend=mem -nodefaults -display none \
        -serial stdio -kernel "$GUEST/vmlinuz" \
        -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vfu.test=bench-mmio vfu.rounds=$rounds vfu.count=$count" \
        -device edu,addr=03.0 -device "$(dev $client "$TMP/a.sock" 04.0)" \
        -device "$(dev $client "$TMP/b.sock" 05.0)" \
        < /dev/null > "$log" 2>&1 || true
    grep -q "VFU-RESULT: PASS bench-mmio" "$log" ||
        { tail -20 "$log"; fail "the $client guest ($place) failed"; }
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
}

fig() { # CLIENT PLACEMENT OP
    grep "^BENCH mmio posted $3 " "$TMP/$1-$2.log" | awk '{ print $5 }' | median
}

for place in cpu0 split unpinned; do
    run ours $place
    run upstream $place
done

printf '%-40s %10s %10s %10s\n' "MMIO to edu, ns per 32-bit access" "ours" "upstream" "ours/up"
for place in cpu0 split unpinned; do
    case $place in
    cpu0) where="every process on CPU 0" ;;
    split) where="client CPU 0, server CPU 1" ;;
    unpinned) where="unpinned" ;;
    esac
    for op in r w; do
        label="$([ $op = r ] && echo read || echo "posted write"), $where"
        awk -v l="$label" -v o="$(fig ours $place $op)" -v u="$(fig upstream $place $op)" \
            'BEGIN { printf "%-40s %10.0f %10.0f %9.2fx\n", l, o, u, o / u }'
    done
done
echo "(medians over $rounds rounds of $count accesses; the same guest,"
echo " server and edu for both clients, booted in turn)"
