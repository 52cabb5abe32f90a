#!/usr/bin/env bash
# The main job on the embedded default: the demo pool, every example checked,
# a metadata policy run and explained, then the loop: a sandbox on the demo
# pool with the `mini` backend, the random baseline and a curated policy
# (examples/demo_clip_quality.cur) submitted (each really trains and
# evaluates a small CLIP), the leaderboard.
#
# Pools live in $CBDSL_POOLS (default: ~/.cbdsl/pools); the sandbox in
# ${CBDSL_SANDBOX:-demo-sandbox}. Set CBDSL_MAIN_LOOP=0 to skip the training part.
#
# Then the instruction-tuning track the same way: the demo-it pool, a sandbox
# with the mini-vlm backend in ${CBDSL_IT_SANDBOX:-demo-it-sandbox}, the random
# baseline and examples/demo_it_clean.cur submitted (each instruction-tunes a
# small vision-language model and scores it on eight benchmarks), the
# leaderboard. CBDSL_MAIN_IT=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
CBDSL=${CBDSL:-$PWD/.venv/bin/cbdsl}
PY=${PY:-$PWD/.venv/bin/python}
SANDBOX=${CBDSL_SANDBOX:-demo-sandbox}
IT_SANDBOX=${CBDSL_IT_SANDBOX:-demo-it-sandbox}
ROOT=$PWD

echo "== the demo pool"
"$CBDSL" pool make-demo --overwrite  # kept when it is this version's demo, made again when older
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
  "$CBDSL" leaderboard --test  # the researcher's view: dev (the feedback) and held-out test scores
  "$CBDSL" verify
fi

if [ "${CBDSL_MAIN_LOOP:-1}" = "1" ] && [ "${CBDSL_MAIN_IT:-1}" = "1" ]; then
  cd "$ROOT"
  echo "== the instruction-tuning track: a sandbox with the mini-vlm backend in $IT_SANDBOX"
  "$CBDSL" pool make-demo --track it --overwrite  # kept when current, made again when older
  rm -rf "$IT_SANDBOX"
  "$CBDSL" init "$IT_SANDBOX" --track it --restart  # a rerun starts over on purpose
  cp examples/demo_it_clean.cur "$IT_SANDBOX/policy.cur"
  cd "$IT_SANDBOX"
  "$CBDSL" compile policy.cur >/dev/null
  # the first submit trains the base of mini-vlm once (its CLIP tower and captioner: minutes on a CPU)
  "$CBDSL" submit -m "rule-based cleaning: refusals, one-word and cut answers, filler, other languages, copies"
  "$CBDSL" leaderboard --test  # the researcher's view: dev (the feedback) and held-out test scores
  "$CBDSL" verify
fi
