#!/usr/bin/env bash
# Run one stage of `make test`, keep its output in build/logs/<stage>.log and record how long
# it took, so the closing summary can print every stage's time and its runner's summary line.
#   stage.sh reset                 start a new run
#   stage.sh run NAME CMD [ARG..]  run and time one stage (exit status is the command's)
#   stage.sh parallel NAME CMD [NAME CMD..]
#                                  run stages side by side (CMD is one shell string); each
#                                  one's output is printed whole once it ends; exit status is
#                                  0 only if every one passed
#                                  A failed stage prints the summary itself (make stops there).
#   stage.sh summary               print stage times, then each test runner's summary lines
set -uo pipefail
logs=${STAGE_LOG_DIR:-build/logs}
mkdir -p "$logs"

case ${1:-} in
  reset) : >"$logs/stages.tsv"; date +%s >"$logs/started" ;;
  run)
    name=$2; shift 2
    printf '\n==> stage %s\n' "$name"
    start=$(date +%s%N)
    "$@" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    secs=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '%s\t%d.%03d\t%s\n' "$name" $((secs / 1000)) $((secs % 1000)) "$rc" >>"$logs/stages.tsv"
    printf '<== stage %s: %d.%03d s, exit %s\n' "$name" $((secs / 1000)) $((secs % 1000)) "$rc"
    # make stops at the first failed stage: print the summary now, or nobody sees one.
    [ "$rc" = 0 ] || "$0" summary
    exit "$rc" ;;
  parallel)
    shift
    names=(); pids=()
    while [ $# -ge 2 ]; do
      name=$1; cmd=$2; shift 2
      printf '\n==> stage %s (in parallel; its output follows when it ends)\n' "$name"
      ( start=$(date +%s%N)
        bash -c "$cmd" >"$logs/$name.log" 2>&1
        rc=$?
        secs=$(( ($(date +%s%N) - start) / 1000000 ))
        printf '%s\t%d.%03d\t%s\n' "$name" $((secs / 1000)) $((secs % 1000)) "$rc" >"$logs/$name.rc"
        exit "$rc" ) &
      names+=("$name"); pids+=($!)
    done
    failed=0
    for i in "${!names[@]}"; do
      wait "${pids[$i]}" || failed=1
      name=${names[$i]}
      printf '\n==> stage %s: output\n' "$name"
      cat "$logs/$name.log"
      cat "$logs/$name.rc" >>"$logs/stages.tsv"
      IFS=$'\t' read -r _ took rc <"$logs/$name.rc"
      printf '<== stage %s: %s s, exit %s\n' "$name" "$took" "$rc"
    done
    [ "$failed" = 0 ] || "$0" summary
    exit "$failed" ;;
  summary)
    printf '\n==> make test summary\n'
    printf '%-14s %10s  %s\n' stage seconds exit
    awk -F'\t' '{ printf "%-14s %10s  %s\n", $1, $2, $3; total += $2 }
                END { printf "%-14s %10.3f  (stages added up)\n", "total", total }' "$logs/stages.tsv"
    [ -f "$logs/started" ] && printf '%-14s %10d  (wall clock: parallel stages overlap)\n' \
      "wall" $(( $(date +%s) - $(cat "$logs/started") ))
    echo
    # Each runner's own closing line: vitest ("Tests  N passed"), testinfra and pytest
    # ("N passed in Xs"). pytest's main suite comes last.
    for stage in convex-test molecule pytest; do
      [ -f "$logs/$stage.log" ] || continue
      sed 's/\x1b\[[0-9;]*m//g' "$logs/$stage.log" \
        | grep -E '^ *(Test Files|Tests) +[0-9]+|[0-9]+ (passed|failed).* in [0-9.]+s' \
        | sed -E 's/^[^A-Za-z0-9=]*//' | sed "s/^/$stage: /"
    done ;;
  *) echo "usage: $0 reset | run NAME CMD... | summary" >&2; exit 2 ;;
esac
