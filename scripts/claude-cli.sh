#!/usr/bin/env bash
# The pinned Claude Code CLI (worker/claude-cli.lock), fetched once from npm and verified
# against its sha256 on every use.
#   claude-cli.sh tarball   print the path of the verified npm tarball
#   claude-cli.sh binary    print the path of the extracted native `claude` binary
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=$root/build/cache
# shellcheck source=../worker/claude-cli.lock
. "$root/worker/claude-cli.lock"
tgz=$cache/claude-cli-$CLAUDE_CLI_VERSION.tgz
bin_dir=$cache/claude-cli-$CLAUDE_CLI_VERSION
mkdir -p "$cache"

if [ ! -f "$tgz" ]; then
  printf 'claude-cli: fetching %s@%s\n' "$CLAUDE_CLI_PACKAGE" "$CLAUDE_CLI_VERSION" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && timeout 600 npm pack --silent "$CLAUDE_CLI_PACKAGE@$CLAUDE_CLI_VERSION" >/dev/null)
  mv "$tmp"/*.tgz "$tgz"; rm -rf "$tmp"
fi
if ! echo "$CLAUDE_CLI_SHA256  $tgz" | sha256sum -c --quiet - >/dev/null 2>&1; then
  rm -f "$tgz"
  printf 'claude-cli: checksum mismatch for %s@%s: refusing it\n' \
    "$CLAUDE_CLI_PACKAGE" "$CLAUDE_CLI_VERSION" >&2
  exit 1
fi

case ${1:-} in
  tarball) echo "$tgz" ;;
  binary)
    if [ ! -x "$bin_dir/claude" ] || [ "$bin_dir/claude" -ot "$tgz" ]; then
      rm -rf "$bin_dir"; mkdir -p "$bin_dir"
      tar -xzf "$tgz" -C "$bin_dir" --strip-components=1 package/claude
    fi
    echo "$bin_dir/claude" ;;
  *) echo "usage: $0 tarball|binary" >&2; exit 2 ;;
esac
