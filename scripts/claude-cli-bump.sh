#!/usr/bin/env bash
# Pin a new Claude Code CLI in one command (make claude-cli-bump [VERSION=...]):
#   1. resolve the version: VERSION, else the registry's latest of the pinned package;
#   2. fetch its npm tarball, check it against the registry's own integrity (sha512), and
#      compute the sha256 the lock records;
#   3. write the new version and sha256 into worker/claude-cli.lock, rebuild the image with
#      it (scripts/build-image.sh: the Dockerfile checks the sha256 and `claude --version`),
#      and run every real-CLI suite with the new binary (pytest -m real_cli: the pipeline,
#      the escape suite, the injection chain and the side channels of test_real_claude.py);
#   4. keep the new lock only if all of that passed. On any failure, or an interrupt, the
#      previous lock is put back as it was, and the image is rebuilt from it.
# Nothing is committed: review `git diff worker/claude-cli.lock`, then commit.
set -Eeuo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
lock=worker/claude-cli.lock
log() { printf 'claude-cli-bump: %s\n' "$*" >&2; }
# The steps, overridable for tests of this script's own logic.
build_image=${BUILD_IMAGE:-scripts/build-image.sh}

# shellcheck source=../worker/claude-cli.lock
. "$lock"
package=$CLAUDE_CLI_PACKAGE
old_version=$CLAUDE_CLI_VERSION

want=${1:-${VERSION:-}}
if [ -z "$want" ]; then
  want=$(timeout 120 npm view --silent "$package" version)
  log "latest $package on the registry: $want"
fi
if ! [[ $want =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  log "refusing version '$want': expected MAJOR.MINOR.PATCH"
  exit 2
fi
if [ "$want" = "$old_version" ]; then
  log "$lock already pins $package@$want: nothing to do"
  exit 0
fi

cache=$root/build/cache
mkdir -p "$cache"
tgz=$cache/claude-cli-$want.tgz
if [ ! -f "$tgz" ]; then
  log "fetching $package@$want"
  tmp=$(mktemp -d)
  (cd "$tmp" && timeout 600 npm pack --silent "$package@$want" >/dev/null)
  mv "$tmp"/*.tgz "$tgz.part"
  rm -rf "$tmp"
  mv "$tgz.part" "$tgz"
fi
# The registry's integrity field (sha512, base64) must match what was fetched.
integrity=$(timeout 120 npm view --silent "$package@$want" dist.integrity)
actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$integrity" != "$actual" ]; then
  rm -f "$tgz"
  log "the tarball of $package@$want does not match the registry's integrity ($integrity): refusing it"
  exit 1
fi
sha256=$(sha256sum "$tgz" | cut -d' ' -f1)
log "$package@$want: sha256 $sha256 (registry integrity checked)"

backup=$(mktemp)
cp -p "$lock" "$backup"
restore() {
  cp -p "$backup" "$lock"
  rm -f "$backup"
  log "the real-CLI checks of $want failed: $lock still pins $old_version; rebuilding the image from it"
  "$build_image" >&2 || log "rebuilding the image on $old_version failed too: run make image"
}
trap 'restore; exit 1' ERR INT TERM

sed -i \
  -e "s/^CLAUDE_CLI_VERSION=.*/CLAUDE_CLI_VERSION=$want/" \
  -e "s/^CLAUDE_CLI_SHA256=.*/CLAUDE_CLI_SHA256=$sha256/" \
  "$lock"
log "trying $want: rebuilding the image ($build_image)"
"$build_image"
binary=$(scripts/claude-cli.sh binary)
reported=$("$binary" --version | cut -d' ' -f1)
[ "$reported" = "$want" ] || { log "the binary says $reported, not $want"; false; }
log "running the real-CLI suites with $binary"
REAL_CLAUDE_BIN=$binary "${PYTEST:-pytest}" -m real_cli tests

trap - ERR INT TERM
rm -f "$backup"
log "$lock now pins $package@$want (was $old_version); the image is rebuilt with it."
log "review and commit: git diff $lock"
