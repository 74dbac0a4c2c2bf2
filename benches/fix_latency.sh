#!/usr/bin/env bash
# Time from `autotriage fix` start to the first candidate under test, with a scripted
# model that answers at once (a local Anthropic Messages server) and a test command that
# only records when it starts. Prints the baseline start and the first candidate start,
# for a cold run (new index, no cached baseline) and a warm one.
# Usage: benches/fix_latency.sh REPO_DIR   (a git checkout; e.g. 1,000 files)
# Not run in CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$1" && pwd)"
bin="$root/target/release/autotriage"
(cd "$root" && cargo build --release --locked -q)
work="$(mktemp -d)"
files=$(git -C "$repo" ls-files | wc -l)
# The model's answer: a comment added after the first line of the largest Python file.
target=$(cd "$repo" && git ls-files '*.py' | python3 -c 'import os, sys; print(max(sys.stdin.read().split(), key=os.path.getsize))')
first=$(grep -m1 -v '^\s*$' "$repo/$target")
python3 - "$work/answer.txt" "$target" "$first" <<'PY'
import sys
out, path, line = sys.argv[1:]
open(out, "w").write(f"Note the issue.\n\n{path}\n<<<<<<< SEARCH\n{line}\n=======\n{line}\n# autotriage: noted\n>>>>>>> REPLACE\n")
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$port" "$work/answer.txt" <<'PY' &
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
answer = open(sys.argv[2]).read()
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"id": "m", "type": "message", "role": "assistant", "model": "x",
                           "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.3
cat > "$work/issue.md" <<MD
---
repo: bench/repo
number: 1
title: Something is wrong in $target
author_association: OWNER
---
Calling it fails:

    File "$target", line 3, in <module>
MD
cat > "$work/config.yaml" <<YAML
models:
  m: {provider: anthropic, model_id: x, base_url: "http://127.0.0.1:$port", price: {input_per_mtok: 3, output_per_mtok: 15}}
model: m
repair: {candidates: 1}
test: {command: "date +%s.%N >> $work/marks", sandbox: "off"}
YAML
export ANTHROPIC_API_KEY=sk-ant-bench NO_COLOR=1 AUTOTRIAGE_CACHE_DIR="$work/cache"
for attempt in cold warm; do
  rm -f "$work/marks"
  t0=$(date +%s.%N)
  (cd "$repo" && "$bin" --config "$work/config.yaml" fix "$work/issue.md" --until test --restart > "$work/log" 2>&1) || true
  [ -s "$work/marks" ] || { cat "$work/log"; exit 1; }
  python3 - "$t0" "$work/marks" "$attempt" "$files" <<'PY'
import sys
t0, marks, attempt, files = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
lines = [float(l) for l in open(marks)] if __import__("os").path.exists(marks) else []
if attempt == "cold":
    base, first = lines[0], lines[1]
    print(f"{attempt}: {files} files: baseline starts {1000*(base-t0):7.0f} ms, first candidate under test {1000*(first-t0):7.0f} ms after fix starts")
else:
    print(f"{attempt} (index and baseline cached): first candidate under test {1000*(lines[0]-t0):7.0f} ms after fix starts")
PY
done
rm -rf "$repo/.autotriage"
