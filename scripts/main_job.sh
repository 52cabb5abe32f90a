#!/usr/bin/env bash
# The main job on the embedded default: the demo pool, every example checked,
# a metadata policy run and explained, then the loop: a sandbox on the demo
# pool with the `mini` backend, the random baseline and a curated policy
# (examples/demo_clip_quality.cur) submitted (each really trains and
# evaluates a small CLIP), the leaderboard.
#
# Pools live in $CBDSL_POOLS (default: ~/.cbdsl/pools); the sandbox in
# ${CBDSL_SANDBOX:-demo-sandbox}. Set CBDSL_MAIN_LOOP=0 to skip the training part.
set -euo pipefail
cd "$(dirname "$0")/.."
CBDSL=${CBDSL:-$PWD/.venv/bin/cbdsl}
PY=${PY:-$PWD/.venv/bin/python}
SANDBOX=${CBDSL_SANDBOX:-demo-sandbox}

echo "== the demo pool"
"$CBDSL" pool info demo >/dev/null 2>&1 || "$CBDSL" pool make-demo
echo "== cbdsl fmt --check examples/*.cur"
"$CBDSL" fmt --check examples/*.cur
echo "== cbdsl check examples/*.cur"
if ! out=$("$CBDSL" check examples/*.cur 2>&1); then echo "$out"; exit 1; fi
echo "$out" | grep -E '\.cur: '  # one status line per example (pool-less checks defer column types)
echo "== cbdsl explain --run examples/demo_basic_quality.cur"
"$CBDSL" explain --run examples/demo_basic_quality.cur
echo "== cbdsl run examples/demo_basic_quality.cur"
"$CBDSL" run examples/demo_basic_quality.cur --out "${TMPDIR:-/tmp}/cbdsl-selection"

if [ "${CBDSL_MAIN_LOOP:-1}" = "1" ]; then
  echo "== the loop: a sandbox with the mini backend in $SANDBOX"
  rm -rf "$SANDBOX"
  "$CBDSL" init "$SANDBOX" --budget 5000 --restart  # a rerun starts over on purpose
  cp examples/demo_clip_quality.cur "$SANDBOX/policy.cur"
  cd "$SANDBOX"
  "$CBDSL" compile policy.cur >/dev/null  # its run trains the demo's CLIP teacher once (minutes on a CPU)
  "$CBDSL" submit -m "basic filter with 7+ word captions, English, CLIP top 30%, caption dedup"
  "$CBDSL" leaderboard
  "$CBDSL" verify
fi
