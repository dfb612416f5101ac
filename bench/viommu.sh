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
# millisecond) after quiescing the controller.  One guest at a time,
# unpinned, in one run.  Printed, not asserted.
#
#   bench/viommu.sh [SECS]

. "$(dirname "$0")/lib.sh" viommu
secs=${1:-3}
port=(-device pcie-root-port,id=rp0,chassis=1)

# run NAME APPEND QEMU-ARGS...: one guest; its log $TMP/NAME.log
run() {
    local name=$1 append=$2
    shift 2
    rm -f "$TMP/spdk.disk"
    spdk_server spdk
    GUEST_LOG=$TMP/$name.log
    GUEST_APPEND="vfu.mib=4 vfu.secs=$secs vfu.qd=1 $append"
    run_guest nvme-io 300 "$@" \
        -device vfio-user-pci,bus=rp0,socket="$TMP/spdk/cntrl" \
        -trace vfio_user_dma > /dev/null
    kill "$SPDK_PID"
    wait "$SPDK_PID" 2>/dev/null || true
}

# iops NAME; msgs NAME: of the first random-read phase
iops() { sed -n 's/.*BENCH nvme rand-read-qd1 \([0-9]*\).*/\1/p' "$TMP/$1.log" | head -n 1; }
msgs() {
    sed -n '/write checksum/,/rand-read-4k/p' "$TMP/$1.log" |
        grep -c 'vfio_user_dma .*: \(map\|unmap\) ' || true
}

run none "" "${port[@]}"
run pt "intel_iommu=on iommu=pt" -device intel-iommu,caching-mode=on,pt=on "${port[@]}"
run strict "intel_iommu=on iommu.strict=1 nvme.io_queue_depth=2 vfu.maxkb=32" \
    -device intel-iommu,caching-mode=on "${port[@]}"

printf '%-48s %9s %12s\n' "SPDK, 4 KiB random reads, QD1" "IOPS" "msgs per I/O"
for m in none pt strict; do
    case $m in
    none) label="no vIOMMU" ;;
    pt) label="intel-iommu, pass-through (iommu=pt)" ;;
    strict) label="intel-iommu, translated strict" ;;
    esac
    awk -v l="$label" -v i="$(iops $m)" -v n="$(msgs $m)" -v s="$secs" 'BEGIN {
        printf "%-48s %9d %12.2f\n", l, i, (i > 0 ? n / (i * s) : 0) }'
done
echo "(msgs: DMA_MAP and DMA_UNMAP messages in the random-read phase, per"
echo " read; TCG, one vCPU, unpinned; SPDK polls one core)"
