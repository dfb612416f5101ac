#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The outage a guest sees when its vfio-user server restarts (reconnect):
# nvme over x-vfio-user-server, the guest running a long loop of O_DIRECT
# writes and verified reads (tests/vfio-user/guest/tests/nvme-loop.sh
# with vfu.passes=); the server is killed (SIGKILL) ROUNDS times, each
# time after a pass completed, and a new one started 1 s later on the same
# socket and disk.  Per restart: kill to the first stalled I/O (the guest
# reports an I/O that took over 1 s when it ends, with its duration),
# restart to the first completed I/O, and the reconnect itself (QEMU's
# "connected again").  Medians over the rounds.  Printed, not asserted.
#
#   bench/outage.sh [ROUNDS]

. "$(dirname "$0")/lib.sh" outage
rounds=${1:-5}

now() { date +%s.%N; }

truncate -s 64M "$TMP/disk.raw"
server_args=(-drive file="$TMP/disk.raw",if=none,format=raw,id=drv0
             -device nvme,drive=drv0,serial=vfu0001,id=d0)
remote_server nvme "${server_args[@]}"
GUEST_APPEND="nvme_core.io_timeout=5 nvme_core.admin_timeout=5 vfu.passes=$((rounds * 3 + 3))"
start_guest nvme-loop 900 \
    -device vfio-user-pci,id=nvme0,socket="$TMP/nvme.sock",reconnect-ms=100
: > "$TMP/figures"
for ((r = 1; r <= rounds; r++)); do
    # After the (3r-2)th pass: a few passes between the restarts
    wait_guest_log "dio-loop: pass $((3 * r - 2)) MATCH" 300
    stalls=$(grep -c "dio-loop: stalled" "$TMP/guest.log" || true)
    reconnects=$(grep -c "connected again" "$TMP/guest.log" || true)
    kill -KILL "${PIDS[-1]}"
    t_kill=$(now)
    wait "${PIDS[-1]}" 2>/dev/null || true
    sleep 1
    rm -f "$TMP/nvme.sock"
    # The restart: when the new server process starts
    t_restart=$(now)
    remote_server nvme "${server_args[@]}"
    t_conn= t_io=
    for ((i = 0; i < 3000; i++)); do
        [ -n "$t_conn" ] ||
            [ "$(grep -c "connected again" "$TMP/guest.log")" -le "$reconnects" ] ||
            t_conn=$(now)
        [ "$(grep -c "dio-loop: stalled" "$TMP/guest.log")" -le "$stalls" ] ||
            t_io=$(now)
        [ -z "$t_io" ] || break
        sleep 0.05
    done
    [ -n "$t_io" ] || fail "round $r: no I/O completed after the restart"
    stall=$(grep "dio-loop: stalled" "$TMP/guest.log" | sed -n "$((stalls + 1))p" |
            awk '{ print $3 }')
    awk -v k="$t_kill" -v r="$t_restart" -v c="${t_conn:-$t_io}" -v io="$t_io" \
        -v s="$stall" -v n="$r" 'BEGIN {
        printf "%d %.2f %.2f %.2f\n", n, (io - s) - k, io - r, c - r }' >> "$TMP/figures"
    echo "   restart $r: $(tail -n 1 "$TMP/figures" | awk '{ printf "kill to stalled I/O %.2f s, restart to I/O %.2f s, restart to reconnect %.2f s", $2, $3, $4 }')"
done
kill "$GUEST_PID" 2>/dev/null || true
wait "$GUEST_PID" 2>/dev/null || true
grep -q "MISMATCH\|failed" "$TMP/guest.log" && fail "the guest saw bad data or an I/O error"
printf '%-48s %8s\n' "NVMe outage over $rounds server restarts (median)" "seconds"
printf '%-48s %8.2f\n' "kill to the first stalled I/O" "$(awk '{ print $2 }' "$TMP/figures" | median)"
printf '%-48s %8.2f\n' "restart to reconnected (QEMU, server start included)" "$(awk '{ print $4 }' "$TMP/figures" | median)"
printf '%-48s %8.2f\n' "restart to the first completed I/O (guest)" "$(awk '{ print $3 }' "$TMP/figures" | median)"
echo "(guest: nvme_core.io_timeout=5; the guest recovers through its I/O timeout,"
echo " an abort and a controller reset: about twice the timeout)"
