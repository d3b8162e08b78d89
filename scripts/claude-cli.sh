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
    # Extracted once: the stamp names the archive it came from. The binary is written under
    # a temporary name and renamed into place, so a CLI already running from the old file
    # keeps its inode and none is ever opened for writing while it runs ("Text file busy").
    stamp=$bin_dir/claude.sha256
    if [ ! -x "$bin_dir/claude" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$CLAUDE_CLI_SHA256" ]; then
      mkdir -p "$bin_dir"
      part=$(mktemp -d "$bin_dir/.extract.XXXXXX")
      trap 'rm -rf "$part"' EXIT
      tar -xzf "$tgz" -C "$part" --strip-components=1 package/claude
      chmod 0755 "$part/claude"
      printf '%s\n' "$CLAUDE_CLI_SHA256" >"$part/claude.sha256"
      mv -f "$part/claude" "$bin_dir/claude"
      mv -f "$part/claude.sha256" "$stamp"
    fi
    echo "$bin_dir/claude" ;;
  *) echo "usage: $0 tarball|binary" >&2; exit 2 ;;
esac
