#!/bin/bash
# The whole test suite, RUNS times in a row (default 3), on a fresh clone of this repository's HEAD,
# while a busy process keeps both cores of a 2-core machine busy. Stops at the first failure.
#
#   bash bench/suite_under_load.sh            # prints one line per run; logs in $OUT (default /tmp/suite-under-load)
#
# The busy process runs in a session of its own: Linux's autogroup scheduling then gives it the same
# share as the suite's session, whatever its nice value. SPINNERS (default 2) always-runnable loops.
set -u
RUNS=${RUNS:-3}
SPINNERS=${SPINNERS:-2}
SUITE_CMD=${SUITE_CMD:-"CI=true bash .ci/run"}
OUT=${OUT:-/tmp/suite-under-load}
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

rm -rf "$OUT" && mkdir -p "$OUT"
git clone -q "$REPO" "$OUT/clone" && cd "$OUT/clone" || exit 1
echo "clone of $(git rev-parse --short HEAD); busy: $SPINNERS spinning loops in their own session"
setsid bash -c "for i in \$(seq $SPINNERS); do (while :; do :; done) & done; wait" &
busy_session=$!
trap 'pkill -s "$busy_session" 2>/dev/null' EXIT

status=0
for run in $(seq "$RUNS"); do
  began=$(date +%s)
  bash -c "$SUITE_CMD" > "$OUT/run$run.log" 2>&1
  status=$?
  echo "run $run: exit $status, $(( $(date +%s) - began )) s, load $(cut -d' ' -f1-3 /proc/loadavg):" \
       "$(tail -n 1 "$OUT/run$run.log")"
  [ "$status" -ne 0 ] && break
done
exit "$status"
