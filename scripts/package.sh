#!/usr/bin/env bash
# Package a built binary for release: OUT/autotriage-TARGET.tar.gz (the binary, the
# README, the license notice) and OUT/autotriage-TARGET.tar.gz.sha256 (`sha256sum`
# format). The release workflow and the tests call this same script.
#   bash scripts/package.sh TARGET BINARY [OUT]
set -euo pipefail
target="${1:?usage: package.sh TARGET BINARY [OUT]}"
binary="${2:?usage: package.sh TARGET BINARY [OUT]}"
out="${3:-dist}"
top="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable" >&2; exit 2; }
mkdir -p "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/autotriage-$target"
mkdir -p "$dir"
cp "$binary" "$dir/autotriage"
cp "$top/README.md" "$dir/"
name="autotriage-$target.tar.gz"
# Reproducible: fixed owner, order and times.
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime='2000-01-01 00:00Z' \
  -czf "$out/$name" "autotriage-$target"
( cd "$out" && if command -v sha256sum >/dev/null; then sha256sum "$name"; else shasum -a 256 "$name"; fi ) > "$out/$name.sha256"
echo "$out/$name"
