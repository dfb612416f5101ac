#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# NVMe over SPDK's NVMe target (tools-tests/peers/build-spdk), in its
# default configuration (BAR0's doorbells mmap-ed) and with -M (doorbells
# by message): our vfio-user-pci against QEMU 10.2's upstream client
# (built by 'make bench-peers'; skipped without it), and the same NVMe
# emulated in the client (QEMU's nvme on a raw file in the same
# directory), in one run, unpinned, one guest at a time, the clients
# taking turns (REPS times each: the machine's load drifts): sequential
# O_DIRECT write and read of 1 MiB requests, 4 KiB random reads at queue
# depth 1 and 8 (tests/vfio-user/guest/tests/bench-disk.sh), and random
# reads at queue depth 1 with INTx (guest pci=nomsi).  Each target is
# fresh, its namespace a 64 MiB AIO file.  Each guest runs ROUNDS rounds
# and the first is left out (warm-up); medians over the rest and the
# repetitions.  Printed, not asserted.
#
#   bench/spdk.sh [ROUNDS [MIB [SECS [REPS]]]]

. "$(dirname "$0")/lib.sh" spdk
rounds=${1:-3} mib=${2:-32} secs=${3:-2} reps=${4:-2}
UPSTREAM=$top/build/peers/qemu-10.2/build/qemu-system-x86_64
clients=ours
[ -x "$UPSTREAM" ] && clients="ours upstream"

# dev CLIENT SOCKET: the -device of a vfio-user client (upstream's
# socket property takes the JSON form only)
dev() {
    if [ "$1" = upstream ]; then
        printf '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"%s"}}' "$2"
    else
        printf 'vfio-user-pci,socket=%s' "$2"
    fi
}

# run NAME QEMU APPEND DEVICE-ARGS...: one guest; its log $TMP/NAME.log
run() {
    local name=$1 qemu=$2 append=$3 log=$TMP/$1.log
    shift 3
    timeout 600 "$qemu" -L /usr/share/qemu -L /usr/share/seabios \
        -machine q35 -accel tcg -cpu max -m 512 \
        -object memory-backend-memfd,id=mem,size=512M,share=on \
        -machine memory-backend=mem -nodefaults -display none \
        -serial stdio -kernel "$GUEST/vmlinuz" \
        -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vfu.test=bench-disk vfu.rounds=$rounds vfu.mib=$mib vfu.secs=$secs $append" \
        "$@" < /dev/null > "$log" 2>&1 || true
    grep -q "VFU-RESULT: PASS bench-disk" "$log" ||
        { tail -20 "$log"; fail "guest $name failed"; }
}

fig() { # NAME WHAT: over the repetitions' logs, the first round left out
    ls "$TMP/$1".*.log > /dev/null 2>&1 || { echo -; return; }
    for f in "$TMP/$1".*.log; do
        grep "^BENCH disk $2 " "$f" | awk 'NR > 1 || n == 1 { print $4 }' \
            n="$(grep -c "^BENCH disk $2 " "$f")"
    done | median
}

truncate -s 64M "$TMP/local.raw"
for ((rep = 1; rep <= reps; rep++)); do
    run local.$rep "$QEMU" "" \
        -drive file="$TMP/local.raw",if=none,format=raw,id=d0 \
        -device nvme,drive=d0,serial=local0
    for config in default -M; do
        for irq in msix intx; do
            for client in $clients; do
                qemu=$QEMU
                [ $client = upstream ] && qemu=$UPSTREAM
                append=
                [ $irq = intx ] && append="pci=nomsi vfu.rounds=2"
                rm -f "$TMP/spdk$config.disk"
                spdk_server "spdk$config" ${config#default}
                run "$client$config-$irq.$rep" "$qemu" "$append" \
                    -device "$(dev $client "$TMP/spdk$config/cntrl")"
                kill "$SPDK_PID"
                wait "$SPDK_PID" 2>/dev/null || true
            done
        done
    done
done

printf '%-34s %9s %9s %9s %9s %9s\n' "NVMe, O_DIRECT" "seq-write" \
    "seq-read" "rand-qd1" "rand-qd8" "intx-qd1"
printf '%-34s %9s %9s %9s %9s %9s\n' "" "MiB/s" "MiB/s" "IOPS" "IOPS" "IOPS"
row() { # LABEL NAME
    local intx
    intx=$(fig "$2-intx" rand-qd1)
    # the guest disabled the interrupt ("nobody cared") and polled
    cat "$TMP/$2"-intx.*.log | grep -q "^BENCH disk irq-disabled" &&
        intx="$intx*"
    printf '%-34s %9s %9s %9s %9s %9s\n' "$1" "$(fig "$2-msix" seq-write)" \
        "$(fig "$2-msix" seq-read)" "$(fig "$2-msix" rand-qd1)" \
        "$(fig "$2-msix" rand-qd8)" "$intx"
}
printf '%-34s %9s %9s %9s %9s %9s\n' "nvme emulated in the client" \
    "$(fig local seq-write)" "$(fig local seq-read)" "$(fig local rand-qd1)" \
    "$(fig local rand-qd8)" -
for config in default -M; do
    for client in $clients; do
        row "SPDK $config, $client" "$client$config"
    done
done
# Ratios: ours / upstream, and ours / emulated in the client
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || !b) print "-"; else printf "%.2fx", a / b }'; }
for config in default -M; do
    [ -x "$UPSTREAM" ] || break
    printf '%-34s' "SPDK $config, ours/upstream"
    for w in seq-write seq-read rand-qd1 rand-qd8; do
        printf ' %9s' "$(ratio "$(fig "ours$config-msix" $w)" "$(fig "upstream$config-msix" $w)")"
    done
    printf ' %9s\n' "$(ratio "$(fig "ours$config-intx" rand-qd1)" "$(fig "upstream$config-intx" rand-qd1)")"
done
for config in default -M; do
    printf '%-34s' "SPDK $config, ours/emulated"
    for w in seq-write seq-read rand-qd1 rand-qd8; do
        printf ' %9s' "$(ratio "$(fig "ours$config-msix" $w)" "$(fig local $w)")"
    done
    printf ' %9s\n' -
done
echo "(medians of $reps guests of $rounds rounds each, the first round left out;"
echo " $mib MiB sequential, $secs s random; the clients take turns;"
echo " TCG, one vCPU, unpinned; SPDK polls one core; *: the guest disabled"
echo " the interrupt line, \"nobody cared\", and polled its queues)"
