#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Doorbell writes from a TCG guest through a region ioeventfd against the
# same writes as messages (tests/vfio-user/guest/tests/bench-doorbell.sh):
# the newer libvfio-user's shadow_ioeventfd_server (shadow ioeventfd at
# BAR0 offset 0), one instance per device, unpinned.  Medians over the
# rounds.  Printed, not asserted.
#
#   bench/doorbell.sh [ROUNDS [COUNT]]

. "$(dirname "$0")/lib.sh" doorbell
rounds=${1:-3}
count=${2:-20000}
SAMPLES=$top/build/peers/libvfio-user/build/samples

sample_server a shadow_ioeventfd_server
sample_server b shadow_ioeventfd_server
GUEST_APPEND="vfu.rounds=$rounds vfu.count=$count"
start_guest bench-doorbell 300 \
    -device vfio-user-pci,socket="$TMP/a.sock",addr=04.0 \
    -device vfio-user-pci,socket="$TMP/b.sock",addr=05.0,x-no-ioeventfds=on
finish_guest > "$TMP/finish.log" || { cat "$TMP/finish.log"; exit 1; }
fig() { grep "BENCH doorbell $1 " "$GUEST_LOG" | awk '{ print $NF }' | median; }
printf '%-52s %10s %10s\n' "Doorbell writes (32-bit), ns per write" "ns" "/eventfd"
e=$(fig eventfd)
for k in eventfd posted message; do
    case $k in
    eventfd) label="region ioeventfd (no message)" ;;
    posted) label="posted REGION_WRITE (x-no-ioeventfds=on)" ;;
    message) label="REGION_WRITE, waiting for its reply" ;;
    esac
    awk -v l="$label" -v v="$(fig $k)" -v e="$e" 'BEGIN { printf "%-52s %10.0f %9.2fx\n", l, v, v / e }'
done
echo "(medians over $rounds rounds of $count writes, each run ended by one read)"
