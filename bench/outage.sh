#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The outage a guest sees when its vfio-user server restarts (reconnect),
# with Linux's default NVMe timeouts (io_timeout 30 s, admin_timeout
# 60 s): NVMe over x-vfio-user-server and over SPDK's NVMe target (its
# default configuration: doorbells mmap-ed; and with -M: doorbells by
# message), the guest running a loop of
# O_DIRECT writes and verified reads (tests/vfio-user/guest/tests/
# nvme-loop.sh).  The server is killed (SIGKILL) after a pass, and a new
# one started 1 s later on the same socket and disk.  Two placements:
#  - the device on the root bus: nothing tells the guest; its driver
#    waits for the I/O timeout, aborts (the abort times out too), then
#    resets the controller;
#  - the device behind a pcie-root-port: QEMU reports the server's lost
#    state as a Surprise Down error at the port, and the guest's AER
#    recovery resets the controller at once.
# Per restart, seconds from the new server's start to: QEMU connected
# again, the driver's first I/O timeout ("aborting"), its controller
# reset (after a timeout or an AER error), and the first I/O completed
# (the guest reports the stalled I/O as it ends).  Medians over the
# rounds.  Printed, not asserted.
#
#   bench/outage.sh [ROUNDS [TIMEOUT-ROUNDS]]

. "$(dirname "$0")/lib.sh" outage
rounds=${1:-3} trounds=${2:-1}

now() { date +%s.%N; }

# server KIND: start the server of KIND (remote: x-vfio-user-server with
# QEMU's nvme; spdk; spdk-M: SPDK with -M); $SOCK is its socket, $SPID
# its pid
server() {
    if [ "$1" = remote ]; then
        rm -f "$TMP/nvme.sock"
        remote_server nvme -drive file="$TMP/disk.raw",if=none,format=raw,id=drv0 \
            -device nvme,drive=drv0,serial=vfu0001,id=d0
        SPID=${PIDS[-1]} SOCK=$TMP/nvme.sock
    else
        spdk_server spdk $([ "$1" = spdk-M ] && echo -M)
        SPID=$SPDK_PID SOCK=$TMP/spdk/cntrl
    fi
}

# count PATTERN: lines of the guest's console that match
count() { grep -c -- "$1" "$GUEST_LOG" || true; }

# restart KIND ROUND: one restart; appends "conn abort reset io" to figures
restart() {
    local kind=$1 r=$2 n_conn n_abort n_reset n_io t0 t t_conn=- t_abort=- t_reset=- t_io=
    wait_guest_log "dio-loop: pass $((3 * r - 2)) MATCH" 300
    n_conn=$(count "connected again to") n_abort=$(count "timeout, aborting")
    n_reset=$(count "reset controller") n_io=$(count "dio-loop: stalled")
    kill -KILL "$SPID"
    wait "$SPID" 2>/dev/null || true
    sleep 1
    t0=$(now)
    server "$kind"
    for ((i = 0; i < 4000; i++)); do
        t=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
        [ "$t_conn" != - ] || [ "$(count "connected again to")" -le "$n_conn" ] || t_conn=$t
        [ "$t_abort" != - ] || [ "$(count "timeout, aborting")" -le "$n_abort" ] || t_abort=$t
        [ "$t_reset" != - ] || [ "$(count "reset controller")" -le "$n_reset" ] || t_reset=$t
        [ "$(count "dio-loop: stalled")" -le "$n_io" ] || { t_io=$t; break; }
        sleep 0.05
    done
    [ -n "$t_io" ] || fail "$kind, round $r: no I/O completed after the restart"
    echo "$t_conn $t_abort $t_reset $t_io" >> "$FIG"
    echo "   $kind, $PLACE, restart $r: reconnected $t_conn s, I/O timeout $t_abort s, reset $t_reset s, first I/O $t_io s"
}

# med COLUMN: median of a column of $FIG ("-" if none)
med() {
    local v
    v=$(awk -v c="$1" '$c != "-" { print $c }' "$FIG")
    if [ -n "$v" ]; then echo "$v" | median; else echo -; fi
}

truncate -s 64M "$TMP/disk.raw"
printf '%-20s %-22s %9s %9s %9s %9s\n' "" "" "reconn." "timeout" "reset" "first I/O" > "$TMP/table"
for kind in remote spdk spdk-M; do
    for PLACE in "root bus" "root port"; do
        FIG=$TMP/figures-$kind-${PLACE// /-}
        n=$rounds bus=() devbus=
        if [ "$PLACE" = "root bus" ]; then
            n=$trounds
        else
            bus=(-device pcie-root-port,id=rp0,chassis=1) devbus=,bus=rp0
        fi
        : > "$FIG"
        server $kind
        GUEST_LOG=$TMP/guest-$kind-${PLACE// /-}.log
        GUEST_APPEND="loglevel=5 vfu.passes=$((n * 3 + 2))"
        start_guest nvme-loop $((n * 150 + 120)) "${bus[@]}" \
            -device vfio-user-pci,id=nvme0,socket="$SOCK",reconnect-ms=100$devbus
        for ((r = 1; r <= n; r++)); do
            restart $kind $r
        done
        finish_guest > /dev/null
        grep -q "MISMATCH\|failed" "$GUEST_LOG" && fail "the guest saw bad data or an I/O error"
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        printf '%-20s %-22s %9s %9s %9s %9s\n' \
            "$(case $kind in remote) echo x-vfio-user-server ;; spdk) echo SPDK ;;
               *) echo "SPDK -M" ;; esac)" \
            "$PLACE ($n)" "$(med 1)" "$(med 2)" "$(med 3)" "$(med 4)" >> "$TMP/table"
    done
done
echo "NVMe outage after a server restart, seconds from the new server's start"
echo "(medians over the restarts; guest: Linux's default NVMe timeouts)"
cat "$TMP/table"
