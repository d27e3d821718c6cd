#!/bin/bash
# One `ivr-bridge loadtest` run with `perf stat` on the server over the calls: its CPU time and
# system calls per caller frame, beside the load test's own table (BENCHMARKS.md, A/B runs).
#
#   scripts/loadtest-perf.sh BINARY OUT CALLS RAMP_S [more loadtest flags]
#   scripts/loadtest-perf.sh ./target/release/ivr-bridge /tmp/run 600 10 --no-idle --busy-poll
#
# Pins the server to core 1 and the generator to core 0; writes OUT.txt (the report), OUT.err
# (progress) and OUT.perf (perf's counts). Needs `perf` (Debian: linux-perf) and the right to
# trace the server (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '4,5p' "$0" >&2
    exit 2
fi
bin=$1; out=$2; calls=$3; ramp=$4; shift 4
PREEMPTIVE_GENERATION=false "$bin" loadtest --server-cpus 1 --generator-cpus 0 \
    --calls "$calls" --ramp-s "$ramp" "$@" > "$out.txt" 2> "$out.err" &
loadtest=$!
# The calls start once the idle phase (if any) is over: count from then.
until grep -q "calls 0..$calls starting" "$out.err" 2>/dev/null; do
    sleep 0.1
    kill -0 $loadtest 2>/dev/null || { cat "$out.err" >&2; exit 1; }
done
pid=$(grep -o "server: pid [0-9]*" "$out.err" | awk '{print $3}')
perf stat -x, -o "$out.perf" -p "$pid" -e task-clock,context-switches,\
syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait &
wait $loadtest
sleep 1
frames=$(grep "frame send lateness" "$out.txt" | awk '{print $6}')
cat "$out.txt"
awk -F, -v f="$frames" '/^[0-9]/ {printf "  %s: %s (%.3f per caller frame)\n", $3, $1, $1/f}' "$out.perf"
