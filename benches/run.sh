#!/usr/bin/env bash
# Benchmarks on the real data in ../shared/data, with the release binary.
# Usage: benches/run.sh [DATA_DIR] [WORK_DIR]
# Prints each figure with the command that produced it. Not run in CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$root/../shared/data}"
work="${2:-$(mktemp -d)}"
bin="$root/target/release/autotriage"
(cd "$root" && cargo build --release --locked -q)
cd "$work"
export NO_COLOR=1

ms() { local us=${EPOCHREALTIME/./}; echo $((us / 1000)); }
timeit() { # label, command...
  local label="$1"; shift
  local t0 t1; t0=$(ms); "$@" > /dev/null; t1=$(ms)
  printf '%-58s %6d ms   (%s)\n' "$label" "$((t1 - t0))" "$*"
}

csv="$data/issue-labels/nlbse2024-train.csv"
rm -rf .autotriage
timeit "memory import, 1,500-issue NLBSE CSV" "$bin" memory import "$csv"

# 10,000 issues: the NLBSE set, the Hadoop bugs, and NLBSE again under other repo names.
python3 - "$csv" "$data/duplicates/hadoop-bugs.csv" <<'PY'
import csv, sys
csv.field_size_limit(1 << 30)
rows = list(csv.DictReader(open(sys.argv[1])))
out = csv.writer(open("ten-thousand.csv", "w", newline=""))
out.writerow(["repo", "title", "body", "label"])
n = 0
for r in csv.DictReader(open(sys.argv[2])):
    out.writerow(["apache/hadoop", r["Summary"], r["Description"], "bug"]); n += 1
copy = 0
while n < 10000:
    for r in rows:
        if n >= 10000: break
        out.writerow([f"copy{copy}/{r['repo']}", r["title"], r["body"], r["label"]]); n += 1
    copy += 1
PY
rm -rf .autotriage
timeit "memory import, 10,000 issues" "$bin" memory import ten-thousand.csv
for q in "crash when opening the devtools" "NullPointerException in NameNode on startup" "how do I configure the cache directory" "feature request dark mode"; do
  best=999999
  for _ in 1 2 3 4 5; do t0=$(ms); "$bin" memory search "$q" --limit 10 > /dev/null; t1=$(ms); d=$((t1 - t0)); [ $d -lt $best ] && best=$d; done
  printf '%-58s %6d ms   (best of 5, whole process: %s memory search "%s")\n' "memory search over 10,000 issues" "$best" "$bin" "$q"
done

rm -rf .autotriage
"$bin" memory import "$csv" > /dev/null
timeit "triage 1 issue, training the kind model on 1,500 first" "$bin" triage "$csv#1"
timeit "triage 1,500 issues end to end (runs + memory), model stored" "$bin" triage "$csv" --json
echo "run folders: $(ls .autotriage/runs | wc -l) in $work/.autotriage/runs (filesystem: $(df -T . | awk 'NR==2{print $2}'))"

# Localization (the locate stage), when the fetched repositories are present.
mirror=${AUTOTRIAGE_MIRROR:-/work/.mirror}
if [ -d "$mirror/sympy+sympy/repo" ]; then
  printf '{"repo":"sympy/sympy","instance_id":"sympy-2019","base_commit":"46fdeb740faab009c31864ae835bcc5c865307f3","problem_statement":"Matrix determinant raises Invalid NaN comparison\\nf = lambda n: det(Matrix([[i + a*j for i in range(n)] for j in range(n)]))","patch":""}\n' > sympy.jsonl
  for _ in 1 2 3 4 5; do
    rm -rf sympy-index
    "$bin" eval localize --dataset sympy.jsonl --repos "$mirror" --index-dir sympy-index --json \
      | python3 -c "import json,sys; o=json.load(sys.stdin)['per_instance'][0]; print(f\"index sympy cold {o['index_seconds']*1000:8.0f} ms   searches {o['search_seconds']*1000:5.1f} ms   ranking+context {o['locate_seconds']*1000:5.0f} ms\")"
  done
  "$bin" eval localize --dataset sympy.jsonl --repos "$mirror" --index-dir sympy-index --json \
    | python3 -c "import json,sys; o=json.load(sys.stdin)['per_instance'][0]; print(f\"index sympy warm {o['index_seconds']*1000:8.1f} ms   searches {o['search_seconds']*1000:5.1f} ms   ranking+context {o['locate_seconds']*1000:5.0f} ms\")"
fi
if [ -f "$data/swebench-lite/dev.jsonl" ] && [ -d "$mirror" ]; then
  "$bin" eval localize --dataset "$data/swebench-lite/dev.jsonl" --repos "$mirror" --index-dir swe-index
fi
