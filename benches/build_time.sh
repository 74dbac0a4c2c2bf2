#!/usr/bin/env bash
# Clean release build time and binary size of two commits, one after the other, each in
# a fresh worktree and target folder (nothing shared, nothing cached but the crates
# downloaded).
#   bash benches/build_time.sh BEFORE_REV AFTER_REV
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
  rm -rf "$scratch/target-$which"
done
