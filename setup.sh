#!/usr/bin/env bash
# Set up cbdsl on a fresh machine and run the main job.
#
#   ./setup.sh            creates .venv, installs cbdsl with its test and ray extras,
#                         then runs the main job (scripts/main_job.sh).
#
# Re-running is cheap: pip skips what is installed. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# setuptools reports "Editable installation. Please be careful with folders ... with the same name as
# your package" on every editable build of this layout (package-dir "cbdsl" = "."): information only,
# silenced by its message. Any other warning of the build still shows.
PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
  .venv/bin/python -m pip install --quiet -e ".[test,ray]"
# Byte-compile the package: with PYTHONDONTWRITEBYTECODE set (as on some
# machines), an editable install would otherwise recompile every module on
# every `cbdsl` start.
.venv/bin/python -m compileall -q -x '(^|/)(\.venv|tests|examples|demo-sandbox|demo-it-sandbox|recipes)(/|$)' . >/dev/null
echo "cbdsl $(.venv/bin/cbdsl --version | awk '{print $NF}') installed in .venv"
if [ "${CBDSL_SETUP_ONLY:-0}" != "1" ]; then
  bash scripts/main_job.sh
fi
