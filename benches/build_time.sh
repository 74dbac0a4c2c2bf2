#!/usr/bin/env bash
# Clean release build time and binary size of two commits, one after the other, each in
# a fresh worktree and target folder (nothing shared, nothing cached but the crates
# downloaded).
#   bash benches/build_time.sh BEFORE_REV AFTER_REV
# Run it on a quiet machine: a compile or test run beside it slows both builds.
set -euo pipefail
top="$(git rev-parse --show-toplevel)"
scratch="$(mktemp -d)"
trap 'git -C "$top" worktree remove --force "$scratch/before" 2>/dev/null || true; git -C "$top" worktree remove --force "$scratch/after" 2>/dev/null || true; rm -rf "$scratch"' EXIT
for which in before after; do
  rev=$([ "$which" = before ] && echo "$1" || echo "$2")
  git -C "$top" worktree add --detach --quiet "$scratch/$which" "$rev"
  start=$(date +%s)
  ( cd "$scratch/$which" && CARGO_TARGET_DIR="$scratch/target-$which" cargo build --release --locked --offline --quiet )
  end=$(date +%s)
  size=$(stat -c %s "$scratch/target-$which/release/autotriage")
  echo "$which $rev: clean release build $((end - start)) s on $(nproc) cores, binary $size bytes"
  # KEEP_BIN=PATH keeps the after binary (to time it: handle-event, the webhook).
  if [ "$which" = after ] && [ -n "${KEEP_BIN:-}" ]; then
    cp "$scratch/target-$which/release/autotriage" "$KEEP_BIN"
  fi
  rm -rf "$scratch/target-$which"
done
