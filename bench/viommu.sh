#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# 4 KiB random O_DIRECT reads at queue depth 1 over SPDK's NVMe target
# (default configuration), with our vfio-user-pci: without a vIOMMU,
# behind intel-iommu in pass-through mode (guest iommu=pt) and in
# translated strict mode (guest intel_iommu=on iommu.strict=1, which
# maps and unmaps each request's pages; the guest keeps its footprint
# within the target's 64 DMA maps: nvme.io_queue_depth=2, requests of
# 32 KiB).  Where the cost goes: the DMA_MAP and DMA_UNMAP messages per
# I/O of the random-read phase (trace vfio_user_dma), each a round trip
# the vCPU waits for, which SPDK serves from its message poller (once a
# millisecond) after quiescing the controller.  The same with QEMU
# 10.2's upstream client when 'make bench-peers' built it (a guest whose
# test fails is printed as such).  One guest at a time, unpinned, in one
# run.  Printed, not asserted.
#
#   bench/viommu.sh [SECS]

. "$(dirname "$0")/lib.sh" viommu
secs=${1:-3}
port=(-device pcie-root-port,id=rp0,chassis=1)
UPSTREAM=$top/build/peers/qemu-10.2/build/qemu-system-x86_64
clients=ours
[ -x "$UPSTREAM" ] && clients="ours upstream"

# run CLIENT NAME APPEND QEMU-ARGS...: one guest; its log
# $TMP/CLIENT-NAME.log, and $TMP/CLIENT-NAME.failed if its test failed
run() {
    local client=$1 name=$1-$2 append=$3 dev
    shift 3
    rm -f "$TMP/spdk.disk"
    spdk_server spdk
    GUEST_LOG=$TMP/$name.log
    GUEST_APPEND="vfu.mib=4 vfu.secs=$secs vfu.qd=1 $append"
    if [ "$client" = upstream ]; then
        dev=(-L /usr/share/qemu -L /usr/share/seabios -device "{\"driver\":\"vfio-user-pci\",\"bus\":\"rp0\",\"socket\":{\"type\":\"unix\",\"path\":\"$TMP/spdk/cntrl\"}}")
        (QEMU=$UPSTREAM run_guest nvme-io 300 "$@" "${dev[@]}") > /dev/null ||
            touch "$TMP/$name.failed"
    else
        dev=(-device vfio-user-pci,bus=rp0,socket="$TMP/spdk/cntrl" -trace vfio_user_dma)
        run_guest nvme-io 300 "$@" "${dev[@]}" > /dev/null
    fi
    kill "$SPDK_PID"
    wait "$SPDK_PID" 2>/dev/null || true
}

# iops NAME; msgs NAME: of the first random-read phase
iops() { sed -n 's/.*BENCH nvme rand-read-qd1 \([0-9]*\).*/\1/p' "$TMP/$1.log" | head -n 1; }
msgs() {
    sed -n '/write checksum/,/rand-read-4k/p' "$TMP/$1.log" |
        grep -c 'vfio_user_dma .*: \(map\|unmap\) ' || true
}

for c in $clients; do
    run "$c" none "" "${port[@]}"
    run "$c" pt "intel_iommu=on iommu=pt" -device intel-iommu,caching-mode=on,pt=on "${port[@]}"
    run "$c" strict "intel_iommu=on iommu.strict=1 nvme.io_queue_depth=2 vfu.maxkb=32" \
        -device intel-iommu,caching-mode=on "${port[@]}"
done

printf '%-48s %9s %12s %10s\n' "SPDK, 4 KiB random reads, QD1" "IOPS" "msgs per I/O" \
    "upstream"
for m in none pt strict; do
    case $m in
    none) label="no vIOMMU" ;;
    pt) label="intel-iommu, pass-through (iommu=pt)" ;;
    strict) label="intel-iommu, translated strict" ;;
    esac
    up=-
    if [ -e "$TMP/upstream-$m.failed" ]; then
        up=failed
    elif [ -e "$TMP/upstream-$m.log" ]; then
        up=$(iops "upstream-$m")
    fi
    awk -v l="$label" -v i="$(iops "ours-$m")" -v n="$(msgs "ours-$m")" -v s="$secs" \
        -v u="$up" 'BEGIN {
        printf "%-48s %9d %12.2f %10s\n", l, i, (i > 0 ? n / (i * s) : 0), u }'
done
echo "(IOPS and msgs: ours; msgs: DMA_MAP and DMA_UNMAP messages in the"
echo " random-read phase, per read; upstream: QEMU 10.2's client, IOPS, or"
echo " failed: its guest test failed (log in build/bench/viommu); TCG, one"
echo " vCPU, unpinned; SPDK polls one core)"
