#!/usr/bin/env bash
# Requests and time per triage with memory on DynamoDB (moto_server), against SQLite.
# Usage: benches/dynamodb_triage.sh   (needs moto_server: pip install 'moto[server]')
# Not run in CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release/autotriage"
(cd "$root" && cargo build --release --locked -q)
work="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -p "$port" > /dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work"' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.2; done
cp -r "$root/examples/issues" "$work/issues"
cd "$work"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 NO_COLOR=1
printf 'memory:\n  backend: dynamodb\n  table: bench\n  endpoint_url: http://127.0.0.1:%s\n' "$port" > team.yaml
ms() { local us=${EPOCHREALTIME/./}; echo $((us / 1000)); }
"$bin" --config team.yaml memory init > /dev/null
"$bin" --config team.yaml memory import issues > /dev/null
"$bin" memory import issues > /dev/null
for pass in first second; do
  for backend in sqlite dynamodb; do
    args=(); [ "$backend" = dynamodb ] && args=(--config team.yaml)
    t0=$(ms)
    line=$("$bin" "${args[@]}" -v triage acme/widgets 2>&1 >/dev/null | grep -E '^memory .*requests' || true)
    t1=$(ms)
    printf '%-7s %-9s triage of 6 issues (28 in memory): %5d ms  %s\n' "$pass" "$backend" "$((t1 - t0))" "$line"
  done
done
