#!/usr/bin/env bash
# `make test` must leave the working tree as it found it: in a fresh clone, `git status
# --porcelain` stays empty after `make deps` and after every stage (nothing it installs,
# builds or runs writes outside the ignored paths, package-lock.json included).
#   clean-tree.sh snapshot        record the tree's state (every changed or untracked path
#                                 with its content's hash) before anything runs
#   clean-tree.sh check AFTER     fail, listing the paths, when the tree differs from the
#                                 snapshot; AFTER names what ran ("make deps")
# A fresh clone's snapshot is empty, so there the check is "git status is empty". In a
# checkout with edits of your own it checks that `make test` added none.
# Env: STAGE_LOG_DIR (build/logs) holds the snapshot.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
snapshot=${STAGE_LOG_DIR:-build/logs}/tree.snapshot

state() {
  local entry path from
  # -z: paths as they are (no quoting); a rename's or copy's source follows as its own entry.
  while IFS= read -r -d '' entry; do
    path=${entry:3}
    case ${entry:0:1} in R|C) IFS= read -r -d '' from; path="$path <- $from" ;; esac
    if [ -f "${entry:3}" ] || [ -L "${entry:3}" ]; then
      printf '%s %s\n' "${entry:0:2}" "$path $(git hash-object --no-filters -- "${entry:3}")"
    else
      printf '%s %s\n' "${entry:0:2}" "$path"
    fi
  done < <(git status --porcelain=v1 -z --untracked-files=all)
}

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "clean-tree: $root is not a git checkout: no tree to compare"
  exit 0
fi

case ${1:-} in
  snapshot)
    mkdir -p "$(dirname "$snapshot")"
    state >"$snapshot"
    if [ -s "$snapshot" ]; then
      echo "clean-tree: the tree has changes of its own before make test (they are left out):"
      sed 's/^/  /' "$snapshot"
    fi ;;
  check)
    after=${2:?usage: clean-tree.sh check AFTER}
    [ -f "$snapshot" ] || { echo "clean-tree: no snapshot ($snapshot): run clean-tree.sh snapshot first" >&2; exit 2; }
    if changes=$(diff <(cat "$snapshot") <(state)); then
      echo "clean-tree: the tree is as make test found it after $after"
      exit 0
    fi
    echo "clean-tree: $after changed the working tree (< before, > after):" >&2
    echo "$changes" | sed 's/^/  /' >&2
    git --no-pager diff --stat >&2 || true
    echo "clean-tree: whatever writes these must write under build/ (or an ignored path) instead" >&2
    exit 1 ;;
  *) echo "usage: $0 snapshot | check AFTER" >&2; exit 2 ;;
esac
