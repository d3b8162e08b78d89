#!/usr/bin/env bash
# Run one stage of `make test`, keep its output in build/logs/<stage>.log and record how long
# it took, so the closing summary can print every stage's time and its runner's summary line.
#   stage.sh reset                 start a new run
#   stage.sh run NAME CMD [ARG..]  run and time one stage (exit status is the command's)
#                                  A failed stage prints the summary itself (make stops there).
#   stage.sh lanes LANE [LANE..]   run lanes side by side: each LANE is one shell string of
#                                  `stage.sh run` stages joined by &&; a lane's output is printed
#                                  whole once it ends; exit status is 0 only if every lane passed
#                                  (the first lane that fails stops the others)
#   stage.sh await NAME            in a lane: wait until stage NAME (of another lane) has ended;
#                                  its exit status (a lane stops where what it needs failed)
#   stage.sh summary               print stage times, then each test runner's summary lines
# Besides wall time, each stage's CPU: `cpu`, the seconds its own processes used (those it
# waited for: not the daemons it left running), and `docker`, what the Docker engine and
# every container used while it ran (its containers' and, on a shared engine or beside a
# parallel stage, anyone else's). On a busy machine wall time says little; these say what the
# stage costs.
set -uo pipefail
logs=${STAGE_LOG_DIR:-build/logs}
mkdir -p "$logs"

# CPU milliseconds of the calling shell's finished children: `times` must run in that shell
# (in a command substitution it would count the substitution's own children), so the caller
# runs `times >"$times_file"` first. The stage's figure is the difference between a snapshot
# taken just before its command and one just after: the timer's own helpers (pgrep, awk in
# docker_cpu_ms) are children of the same shell and took 0.1 s of a `sleep` stage on a
# loaded machine when they were counted.
times_file=$logs/.times.$$.$BASHPID
children_cpu_ms() {
  awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
                 printf "%d\n", t * 1000 }' "$times_file"
  rm -f "$times_file"
}
# CPU milliseconds the Docker engine (dockerd, containerd) and all containers used so far
# (cgroup v1 cpuacct of docker/; 0 where neither is readable).
docker_cpu_ms() {
  local ns=0 ticks=0 pid hz
  [ -r /sys/fs/cgroup/cpuacct/docker/cpuacct.usage ] && ns=$(cat /sys/fs/cgroup/cpuacct/docker/cpuacct.usage)
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  for pid in $(pgrep -x dockerd 2>/dev/null) $(pgrep -x containerd 2>/dev/null); do
    ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo $((ns / 1000000 + ticks * 1000 / hz))
}
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
# A stage's exit status for `await`, written whole (an awaiting lane never reads half of it).
done_file() { echo "$2" >"$logs/$1.done.tmp" && mv -f "$logs/$1.done.tmp" "$logs/$1.done"; }

case ${1:-} in
  # A new run: no stage's log, status or exit of an earlier run is read as this run's.
  reset) : >"$logs/stages.tsv"; rm -f "$logs"/*.done "$logs"/*.log "$logs"/*.rc
         date +%s >"$logs/started" ;;
  run)
    name=$2; shift 2
    printf '\n==> stage %s\n' "$name"
    start=$(date +%s%N); docker_start=$(docker_cpu_ms)
    times >"$times_file"; cpu_before=$(children_cpu_ms)
    "$@" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    times >"$times_file"; cpu=$(( $(children_cpu_ms) - cpu_before ))
    secs=$(( ($(date +%s%N) - start) / 1000000 ))
    docker=$(( $(docker_cpu_ms) - docker_start ))
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(seconds "$secs")" "$rc" "$(seconds "$cpu")" \
      "$(seconds "$docker")" >>"$logs/stages.tsv"
    printf '<== stage %s: %s s, exit %s\n' "$name" "$(seconds "$secs")" "$rc"
    done_file "$name" "$rc"
    # make stops at the first failed stage: print the summary now, or nobody sees one (in a
    # lane, the lanes print it once every lane has ended).
    [ "$rc" = 0 ] || [ -n "${STAGE_IN_LANE:-}" ] || "$0" summary
    exit "$rc" ;;
  await)
    name=$2
    # A lane waits for what another lane builds (the deploy for the image); the other lane
    # records the stage's exit status when it ends (`run` above), pass or fail.
    for _ in $(seq 1 7200); do
      if [ -f "$logs/$name.done" ]; then
        rc=$(cat "$logs/$name.done")
        [ "$rc" = 0 ] || echo "stage.sh: stage $name failed (exit $rc): what needs it does not run"
        exit "$rc"
      fi
      sleep 0.5
    done
    echo "stage.sh: stage $name never ended" >&2
    exit 124 ;;
  lanes)
    shift
    pids=(); names=(); count=0
    for lane in "$@"; do
      count=$((count + 1))
      names[count]=$(grep -oE 'stage.sh run [a-z-]+' <<<"$lane" | cut -d' ' -f3 | paste -sd' ')
      printf '\n==> lane %s (in parallel; its output follows when it ends): %s\n' "$count" \
        "${names[count]}"
      # A process group of its own (setsid): Ctrl-C, or another lane's failure, stops the
      # whole lane, children included (a script's background jobs ignore SIGINT otherwise,
      # and a Molecule or pytest left running would collide with the next run).
      STAGE_IN_LANE=1 setsid -w bash -c "$lane" >"$logs/lane-$count.log" 2>&1 &
      pids[count]=$!
    done
    stop_lanes() {
      local pid
      for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    }
    trap 'stop_lanes; exit 130' INT TERM
    failed=0; left=$count
    while [ "$left" -gt 0 ]; do
      wait -n -p ended "${pids[@]}"
      rc=$?
      for i in "${!pids[@]}"; do [ "${pids[i]}" = "$ended" ] && lane=$i; done
      unset "pids[lane]"; left=$((left - 1))
      printf '\n==> lane %s: output (exit %s)\n' "$lane" "$rc"
      cat "$logs/lane-$lane.log"
      if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
        failed=1
        # Its stages that never ran end as failed, for anything that awaits them; the other
        # lanes stop now (make stops at a failed stage; so does a failed lane).
        for name in ${names[lane]}; do
          [ -f "$logs/$name.done" ] || done_file "$name" 125
        done
        [ "$left" -gt 0 ] && echo "stage.sh: lane $lane failed: stopping the other lanes"
        stop_lanes
      fi
    done
    [ "$failed" = 0 ] || "$0" summary
    exit "$failed" ;;
  summary)
    printf '\n==> make test summary\n'
    printf '%-14s %10s  %-4s  %9s  %9s\n' stage seconds exit cpu docker
    awk -F'\t' '{ printf "%-14s %10s  %-4s  %9s  %9s\n", $1, $2, $3, $4, $5; total += $2; cpu += $4 }
                END { printf "%-14s %10.3f  %-4s  %9.3f  (stages added up)\n", "total", total, "", cpu }' \
      "$logs/stages.tsv"
    [ -f "$logs/started" ] && printf '%-14s %10d  (wall clock: parallel stages overlap)\n' \
      "wall" $(( $(date +%s) - $(cat "$logs/started") ))
    echo "cpu: CPU seconds of the stage's own processes; docker: of the engine and every"
    echo "container while it ran (anyone's: parallel stages share theirs)"
    echo
    # Each runner's own closing line: vitest ("Tests  N passed"), testinfra and pytest
    # ("N passed in Xs"). pytest's main suite comes last.
    for stage in convex-test molecule pytest; do
      [ -f "$logs/$stage.log" ] || continue
      sed 's/\x1b\[[0-9;]*m//g' "$logs/$stage.log" \
        | grep -E '^ *(Test Files|Tests) +[0-9]+|[0-9]+ (passed|failed).* in [0-9.]+s' \
        | sed -E 's/^[^A-Za-z0-9=]*//' | sed "s/^/$stage: /"
    done ;;
  *) echo "usage: $0 reset | run NAME CMD... | lanes LANE.. | await NAME | summary" >&2
     exit 2 ;;
esac
