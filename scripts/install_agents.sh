#!/usr/bin/env bash
# Install the agent CLIs that `cbdsl agent run --agent claude|codex` starts, at the versions cbdsl was tested
# with, into $CBDSL_HOME/agents (default ~/.cbdsl/agents), which the runner puts on the agent's PATH.
# Needs node and npm (the package registry); about 850 MB. They still need their model's API key to run:
# ANTHROPIC_API_KEY for Claude Code, OPENAI_API_KEY (or `codex login`) for Codex.
set -euo pipefail
# tests/test_agent_run.py runs both against tests/agents/model_api.py, a local stand-in for their model APIs
CLAUDE_CODE=2.1.337
CODEX=0.171.0
dest="${CBDSL_HOME:-$HOME/.cbdsl}/agents"
if ! command -v npm > /dev/null; then
  echo "install_agents.sh: npm is not installed; install Node.js 18+ (https://nodejs.org) and run this again" >&2
  exit 1
fi
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error \
  "@anthropic-ai/claude-code@$CLAUDE_CODE" "@openai/codex@$CODEX"
echo "installed in $dest/node_modules/.bin:"
"$dest/node_modules/.bin/claude" --version
"$dest/node_modules/.bin/codex" --version
