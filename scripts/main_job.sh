#!/usr/bin/env bash
# The main job on the embedded default. Until the demo pool and the `mini`
# backend exist (later issues), it checks and format-checks every example
# policy. Policies that name scorers still pending (coming with the scorer
# library) are reported as such; any other error fails the job.
set -euo pipefail
cd "$(dirname "$0")/.."
CBDSL=${CBDSL:-.venv/bin/cbdsl}
PY=${PY:-.venv/bin/python}
echo "== cbdsl fmt --check examples/*.cur"
"$CBDSL" fmt --check examples/*.cur
echo "== cbdsl check examples/*.cur"
"$CBDSL" check examples/*.cur || true
"$CBDSL" check --json examples/*.cur | "$PY" scripts/summarize_check.py
