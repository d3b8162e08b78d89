# shellcheck shell=bash
# One background daemon per state directory, for scripts/devbackend.sh and
# scripts/demo-standins.sh (sourced). The caller sets `state` (the directory holding `pid`)
# and defines `log` (one tagged line on stderr).

# The daemon's pid, when it runs.
daemon_pid() {
  local pid
  pid=$(cat "$state/pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# daemon_spawn OUTFILE CMD [ARG..]: CMD in a session of its own, detached, output to OUTFILE.
daemon_spawn() {
  local out=$1; shift
  setsid nohup "$@" >"$out" 2>&1 </dev/null &
  echo $! >"$state/pid"
}

# daemon_wait CHECK [ARG..]: until CHECK succeeds (up to 30 s); fails early if the daemon died.
daemon_wait() {
  for _ in $(seq 1 60); do
    "$@" && return 0
    daemon_pid >/dev/null || return 1
    sleep 0.5
  done
  return 1
}

# daemon_stop [FILE..]: TERM the daemon's process group, KILL it after 5 s; remove its pid
# file and FILEs.
daemon_stop() {
  local pid
  if pid=$(daemon_pid); then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped"
  fi
  rm -f "$state/pid" "$@"
}
