#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Live migration of the test guest (TCG, 512 MiB, idle) over a UNIX
# socket, with QEMU's default migration parameters: downtime and total
# time as query-migrate reports them, medians over ROUNDS migrations,
# for the guest without a vfio-user device and with the newer
# libvfio-user's server sample (tools-tests/peers), with its DMA
# logging and with the fallback that sends all mapped memory again in
# stop-and-copy (x-device-dirty-page-tracking=off).  Printed, not
# asserted.
#
#   bench/migration.sh [ROUNDS]

. "$(dirname "$0")/lib.sh" migration
rounds=${1:-3}
QMP=$top/tests/vfio-user/qmp
PEER=$top/build/peers/libvfio-user/build/samples


# migrate_once TAG DEVICE-PROPS: one migration; appends "downtime total"
# (ms) to $TMP/TAG.
migrate_once() {
    local tag=$1 props=$2 dev_a=() dev_b=() r src_pid
    if [ -n "$props" ]; then
        rm -f "$TMP/a.sock" "$TMP/b.sock"
        "$PEER/server" "$TMP/a.sock" > "$TMP/a.log" 2>&1 &
        PIDS+=($!)
        "$PEER/server" "$TMP/b.sock" > "$TMP/b.log" 2>&1 &
        PIDS+=($!)
        wait_for_file_socket "$TMP/a.sock" && wait_for_file_socket "$TMP/b.sock" ||
            fail "the server sample did not start"
        dev_a=(-device "vfio-user-pci,socket=$TMP/a.sock$props")
        dev_b=(-device "vfio-user-pci,socket=$TMP/b.sock$props")
    fi
    rm -f "$TMP/src.qmp" "$TMP/dst.qmp" "$TMP/mig.sock"
    GUEST_LOG=$TMP/src.log
    start_guest idle 300 "${dev_a[@]}" \
        -qmp unix:"$TMP/src.qmp",server=on,wait=off
    src_pid=$GUEST_PID
    PIDS+=($src_pid)
    wait_guest_log "idle: up" 200
    GUEST_LOG=$TMP/dst.log
    start_guest idle 300 "${dev_b[@]}" \
        -qmp unix:"$TMP/dst.qmp",server=on,wait=off \
        -incoming unix:"$TMP/mig.sock"
    PIDS+=($GUEST_PID)
    wait_for_file_socket "$TMP/dst.qmp" || fail "the destination did not start"
    "$QMP" "$TMP/src.qmp" migrate '{"uri": "unix:'"$TMP"'/mig.sock"}' > /dev/null
    r=$("$QMP" "$TMP/src.qmp" --wait-migration) || fail "migration failed: $r"
    echo "$r" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["downtime"], r["total-time"])' >> "$TMP/$tag"
    "$QMP" "$TMP/src.qmp" quit > /dev/null 2>&1 || true
    "$QMP" "$TMP/dst.qmp" quit > /dev/null 2>&1 || true
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
}

for ((i = 1; i <= rounds; i++)); do
    migrate_once none ""
    migrate_once logging ",id=dev0"
    migrate_once fallback ",id=dev0,x-device-dirty-page-tracking=off"
done

base_dt=$(awk '{ print $1 }' "$TMP/none" | median)
printf '%-52s %10s %10s %s\n' "Migration, 512 MiB TCG guest (median of $rounds)" \
    "downtime" "total" " device share of downtime"
for tag in none logging fallback; do
    dt=$(awk '{ print $1 }' "$TMP/$tag" | median)
    tt=$(awk '{ print $2 }' "$TMP/$tag" | median)
    case $tag in
    none) label="no vfio-user device" ;;
    logging) label="server sample, its DMA logging" ;;
    fallback) label="server sample, all mapped memory in stop-copy" ;;
    esac
    awk -v l="$label" -v d="$dt" -v t="$tt" -v b="$base_dt" -v tag="$tag" 'BEGIN {
        printf "%-52s %8.0f ms %8.0f ms", l, d, t
        if (tag != "none") printf "  %+.0f ms (%.0f%%)", d - b, (d > 0 ? 100 * (d - b) / d : 0)
        printf "\n" }'
done
