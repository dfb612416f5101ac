#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Round-trip latency of the VFIOProxy transport against a raw blocking
# socket ping-pong with the same server, both processes on one CPU
# (taskset) and unpinned.  See bench/proxy-rtt.c.
#
#   bench/proxy-rtt.sh [ITERATIONS]
#
# bench/proxy-rtt.c is built like the transport's unit test: the same
# compiler flags and link line, with the test's object replaced by ours.

set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
qbuild=$top/build/qemu/build
out=$top/build/bench
iterations=${1:-20000}
test=tests/unit/test-vfio-user-proxy

mkdir -p "$out"
flock "$top/build/.ninja.lock" ninja -C "$qbuild" "$test" > "$out/ninja.log" ||
    { tail -n 20 "$out/ninja.log"; exit 1; }

/usr/bin/python3 - "$qbuild" "$top/bench/proxy-rtt.c" "$out" "$test" <<'PY'
import json, shlex, subprocess, sys
qbuild, src, out, test = sys.argv[1:]
obj = test + ".p/test-vfio-user-proxy.c.o"
cc = next(c for c in json.load(open(qbuild + "/compile_commands.json"))
          if c["output"] == obj)
args = shlex.split(cc["command"])
args[args.index("-o") + 1] = out + "/proxy-rtt.o"
args[args.index("-c") + 1] = src
for flag in ("-MD", "-MQ", "-MF"):
    i = args.index(flag)
    del args[i:i + (1 if flag == "-MD" else 2)]
subprocess.run(args, cwd=qbuild, check=True)
cmds = subprocess.run(["ninja", "-C", qbuild, "-t", "commands", test],
                      check=True, capture_output=True, text=True).stdout
link = shlex.split(cmds.strip().splitlines()[-1])
link[link.index(obj)] = out + "/proxy-rtt.o"
link[link.index("-o") + 1] = out + "/proxy-rtt"
subprocess.run(link, cwd=qbuild, check=True)
PY

run() {
    # mode median mean p99 cpu, one line each
    "$@" "$out/proxy-rtt" "$iterations"
}

pinned=$(run taskset -c 0)
unpinned=$(run)
split=$(SPLIT_CPUS=1 run)

printf '%-10s | %-30s | %-30s | %-30s\n' "" "same CPU (taskset -c 0)" "unpinned" \
    "client CPU 0, server CPU 1"
printf '%-10s |%s |%s |%s\n' mode "$(printf ' %7s' median mean p99 cpu)" \
    "$(printf ' %7s' median mean p99 cpu)" "$(printf ' %7s' median mean p99 cpu)"
for mode in raw main vcpu-poll vcpu-sem vcpu-bql; do
    printf '%-10s |' $mode
    for set in "$pinned" "$unpinned" "$split"; do
        printf ' %7s' $(echo "$set" | awk -v m=$mode '$1 == m { print $2, $3, $4, $5 }')
        printf ' |'
    done
    echo
done
echo "(microseconds per round trip, $iterations round trips each; cpu: the"
echo "client process's CPU time per round trip, all its threads)"
for mode in main vcpu-poll vcpu-sem vcpu-bql; do
    awk -v m=$mode -v p="$pinned" -v u="$unpinned" -v s="$split" 'BEGIN {
        split(p, pl, "\n"); split(u, ul, "\n"); split(s, sl, "\n");
        for (i in pl) { split(pl[i], f, " "); pm[f[1]] = f[2] }
        for (i in ul) { split(ul[i], f, " "); um[f[1]] = f[2] }
        for (i in sl) { split(sl[i], f, " "); sm[f[1]] = f[2] }
        printf "ratio %s/raw (median): same CPU %.2f, unpinned %.2f, split %.2f\n",
            m, pm[m] / pm["raw"], um[m] / um["raw"], sm[m] / sm["raw"]
    }'
done
