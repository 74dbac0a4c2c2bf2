#!/usr/bin/env bash
# The Lambda package (dist/lambda/: bootstrap, the Linux binary, an autotriage.yaml for
# what the stack does not decide), from a built binary or a release tarball.
#   bash deploy/aws/package.sh BINARY [CONFIG]
set -euo pipefail
binary="${1:?usage: package.sh BINARY [CONFIG]}"
config="${2:-}"
top="$(cd "$(dirname "$0")/../.." && pwd)"
out="$top/dist/lambda"
rm -rf "$out"
mkdir -p "$out"
cp "$binary" "$out/autotriage"
cp "$top/deploy/aws/bootstrap" "$out/bootstrap"
chmod 755 "$out/autotriage" "$out/bootstrap"
if [ -n "$config" ]; then cp "$config" "$out/autotriage.yaml"; else printf 'triage:\n  engine: auto\n' > "$out/autotriage.yaml"; fi
echo "$out"
