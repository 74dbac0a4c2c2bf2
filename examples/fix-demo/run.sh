#!/bin/sh
# The fix demo, offline: copy the example project (a small Rust crate with a real bug)
# into a new git repository in a temporary folder, then let autotriage fix the issue
# that describes the bug: triage, locate, repair (the model's answer replayed from
# cassette.jsonl), the crate's own tests before and after in a sandbox, and a local
# branch `autotriage/issue-12` with the PR description `pr.md`.
#
# Usage: examples/fix-demo/run.sh [extra `autotriage fix` flags, e.g. --json]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/autotriage-demo.XXXXXX")
cp -R "$here/project/." "$work/"
cd "$work"
git init -q
git add -A
git -c user.name=demo -c user.email=demo@example.com commit -q -m "tempo 0.1.0"
echo "the example project is in $work" >&2
status=0
autotriage --config "$here/autotriage.yaml" --model "replay:$here/cassette.jsonl" --yes \
    fix "$here/issue.md" "$@" || status=$?
if [ "$status" -eq 0 ] && [ "$*" = "" ]; then
    echo
    echo "the fix, on branch autotriage/issue-12:"
    git --no-pager diff HEAD autotriage/issue-12
fi
exit "$status"
