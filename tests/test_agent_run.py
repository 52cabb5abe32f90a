"""``cbdsl agent run``: real programs act as agents (the scripted agent, cbdsl search, under tests/agents/
one that crashes, one that hangs mid-submit, one that edits files it must not touch, and Claude Code itself
where it is installed, against a local stand-in for its model API) in a sandbox whose ``command`` backend is
a real stand-in train/eval. Every case leaves a ledger `cbdsl verify`
accepts and a recorded, explained turn."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.harness import presets, runner
from cbdsl.harness.usage import Usage
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.loop import test_scores

AGENTS = Path(__file__).parent / "agents"
TRAIN = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({"benchmarks": {"share7": share, "rows": sel.height / 1000}}, open(sys.argv[2] + "/metrics.json", "w"))
json.dump({"benchmarks": {"share7": 1 - share}}, open(sys.argv[3], "w"))
"""


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


def make_sandbox(root: Path, scaffold: str = "open", iterations: int = 2) -> Path:
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "200",
                                      "--iterations", str(iterations), "--scaffold", scaffold])
    assert result.exit_code == 0, result.output
    script = root.parent / "train.py"
    script.write_text(TRAIN)
    head = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    cmd = f"{sys.executable} {script} {{export}} {{workdir}} {{test_metrics}}"
    (root / "cbdsl.toml").write_text(head + "[backend.command]\n" + f"command = {json.dumps(cmd)}\n"
                                     'format = "parquet"\ntimeout = 60\nmetrics = "metrics.json"\n')
    return root


@pytest.fixture
def env(pools, monkeypatch):
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    monkeypatch.delenv(test_scores.AGENT_ENV, raising=False)


def agent_run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["agent", "run", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def verify(root: Path) -> None:
    """`cbdsl verify` in the sandbox, as the researcher runs it, accepts the ledger."""
    proc = subprocess.run([sys.executable, "-m", "cbdsl", "verify"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def turns(root: Path) -> list[dict]:
    return runner.read_turns(runner.default_record(root))


@pytest.mark.parametrize("scaffold", ["open", "adapt", "research"])
def test_the_scripted_agent_makes_its_iterations_under_every_scaffold(env, tmp_path, scaffold):
    root = make_sandbox(tmp_path / f"sb-{scaffold}", scaffold)
    out = agent_run(str(root), "--agent", "scripted")
    assert "stopped: all 2 iterations are used; 0 iterations left" in out
    lines = turns(root)
    assert [t["outcome"] for t in lines] == ["submitted", "submitted"], lines
    assert [[e["n"] for e in t["iterations"] if e["status"] == "scored"] for t in lines] == [[0, 1], [2]]
    here = Path(lines[0]["transcript"])
    events = [json.loads(x) for x in (here / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "result" and lines[0]["usage"]["turns"] == events[-1]["num_turns"] > 0
    prompt = (here / "prompt.md").read_text()
    assert "Make **1 submission** now" in prompt and "# Protocol" in prompt and "No submission yet" in prompt
    second = (Path(lines[1]["transcript"]) / "prompt.md").read_text()
    assert '"iteration": 1' in second and '"aggregate"' in second  # the latest feedback, dev scores
    if scaffold == "research":
        assert "--observation" in prompt
    verify(root)
    # a rerun has nothing left to do and says so
    assert "stopped: all 2 iterations are used" in agent_run(str(root), "--agent", "scripted")
    assert len(turns(root)) == 2


def test_session_mode_asks_one_process_for_every_submission(env, tmp_path):
    root = make_sandbox(tmp_path / "sb", iterations=3)
    out = agent_run(str(root), "--agent", "scripted", "--mode", "session", "--max-turns", "1")
    lines = turns(root)
    assert "Make **3 submissions** now" in (Path(lines[0]["transcript"]) / "prompt.md").read_text()
    assert lines[0]["outcome"] == "submitted" and len(lines[0]["iterations"]) == 4  # baseline + its 3 steps
    assert "stopped: all 3 iterations are used; 0 iterations left" in out and len(lines) == 1
    verify(root)


def test_a_crashing_agent_is_recorded_and_the_run_goes_on_to_its_turn_limit(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    agent = f"{shlex.quote(sys.executable)} {AGENTS / 'crash.py'}"
    out = agent_run(str(root), "--agent", agent, "--events", "claude", "--max-turns", "2", code=1)
    assert "stopped: 2 agent turns started (--max-turns); 2 iterations left" in out
    lines = turns(root)
    assert [t["outcome"] for t in lines] == ["crashed", "crashed"] and lines[0]["exit_code"] == 3
    assert "exited with code 3" in lines[0]["explanation"] and "no ledger entry" in lines[0]["explanation"]
    assert "went wrong" in (Path(lines[0]["transcript"]) / "stderr.txt").read_text()
    assert lines[0]["usage"]["turns"] == 1 and lines[0]["usage"]["tokens"] == 12  # read as Claude Code's events
    verify(root)


def test_a_hanging_agent_is_stopped_mid_submit_and_the_entry_is_failed_not_running(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    (root / "policy.cur").write_text('policy "p"\npool "demo"\nbudget 200\nselect random(seed=2)\n')
    subprocess.run([sys.executable, "-m", "cbdsl", "compile", "policy.cur"], cwd=root, check=True,
                   capture_output=True)
    train = (root.parent / "train.py").read_text()
    (root.parent / "train.py").write_text("import time; time.sleep(60)\n" + train)  # the submit is slow
    agent = f"{shlex.quote(sys.executable)} {AGENTS / 'hang.py'} --submit"
    agent_run(str(root), "--agent", agent, "--timeout", "6", "--max-turns", "1", code=1)
    (line,) = turns(root)
    assert line["outcome"] == "timeout" and "ran past 6 s" in line["explanation"] and line["exit_code"] is None
    statuses = [e["status"] for e in line["iterations"]]
    assert "running" not in statuses and statuses and set(statuses) <= {"failed"}, line
    verify(root)
    from cbdsl.pipelines.loop.sandbox import load
    from cbdsl.pipelines.loop.submit import ledger_for

    ledger = ledger_for(load(root))
    try:
        assert all(e.status != "running" for e in ledger.entries())
        assert any("interrupted" in (e.error or "") for e in ledger.entries())
    finally:
        ledger.close()


def test_an_agent_that_edits_protected_files_is_restored_refused_and_recorded(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    protocol, config = (root / "PROTOCOL.md").read_text(), (root / "cbdsl.toml").read_text()
    agent = f"{shlex.quote(sys.executable)} {AGENTS / 'trespass.py'}"
    agent_run(str(root), "--agent", agent, "--max-turns", "1", code=1)
    (line,) = turns(root)
    assert line["protected_changed"] == ["PROTOCOL.md", "cbdsl.toml", "skills/extra/SKILL.md"]
    assert "which the runner restored" in line["explanation"] and line["outcome"] == "no-submission"
    assert (root / "PROTOCOL.md").read_text() == protocol and (root / "cbdsl.toml").read_text() == config
    assert not (root / "skills" / "extra").exists()
    stdout = (Path(line["transcript"]) / "stderr.txt").read_text() + (Path(line["transcript"]) / "stdout.txt").read_text()
    assert "benchmark settings changed" in stdout  # its submit, under iterations = 99, was refused
    verify(root)


def test_an_interrupted_runner_is_recorded_on_the_next_start(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    record = runner.default_record(root)
    (record / "turn-0001").mkdir(parents=True)  # the runner was killed during turn 1
    agent_run(str(root), "--agent", "scripted")
    lines = turns(root)
    assert lines[0]["turn"] == 1 and lines[0]["outcome"] == "interrupted"
    assert [t["turn"] for t in lines] == [1, 2, 3] and lines[-1]["outcome"] == "submitted"


def test_cbdsl_search_runs_as_an_agent(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    agent_run(str(root), "--agent", "search", "--max-turns", "3", "--seed", "4")
    lines = turns(root)
    assert lines[0]["agent"] == "search" and "cbdsl search --iterations 1 --seed 4" in \
        (Path(lines[0]["transcript"]) / "command.txt").read_text()
    assert sum(len([e for e in t["iterations"] if e["status"] == "scored" and e["n"] > 0]) for t in lines) == 2
    verify(root)


def test_an_agent_run_never_sees_test_scores_and_cannot_start_another(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    agent = (f"{shlex.quote(sys.executable)} -m cbdsl leaderboard --test; "
             f"{shlex.quote(sys.executable)} -m cbdsl agent run . --agent scripted")
    agent_run(str(root), "--agent", agent, "--max-turns", "1", code=1)
    (line,) = turns(root)
    err = (Path(line["transcript"]) / "stderr.txt").read_text()
    assert "never sees" in err and "may not start another" in err
    assert not list(tmp_path.glob("sb.agent/turn-0001/*.agent"))


def test_bad_agent_arguments_are_usage_errors(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    assert "unknown agent 'gpt'" in agent_run(str(root), "--agent", "gpt", code=2)
    assert "unknown placeholder {prompt}" in agent_run(str(root), "--agent", "x --task {prompt}", code=2)
    assert "inside the sandbox" in agent_run(str(root), "--agent", "scripted", "--record", str(root / "r"), code=2)


def test_presets_render_the_documented_command_lines():
    claude = presets.render(presets.PRESETS["claude"], prompt_file="/r/p.md", sandbox="/s", iteration=3,
                            submissions=1, max_turns=20)
    assert claude.startswith("claude -p \"$(cat /r/p.md)\" --output-format stream-json --verbose --max-turns 20")
    codex = presets.render(presets.PRESETS["codex"], prompt_file="/r/p.md", sandbox="/s b", iteration=3,
                           submissions=1, max_turns=20, witness_dir="/w", cbdsl_home="/h")
    assert codex == ("codex exec --json --sandbox workspace-write --add-dir /w --add-dir /h -c allow_login_shell=false "
                     "--skip-git-repo-check -C '/s b' - < /r/p.md")
    assert presets.render(presets.PRESETS["openhands"], prompt_file="/r/p.md", sandbox="/s", iteration=1,
                          submissions=1, max_turns=1) == "openhands --headless --json -f /r/p.md"


def test_usage_is_read_from_each_agents_own_events():
    claude = Usage()
    for event in ({"type": "system", "subtype": "init"},
                  {"type": "assistant", "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 100,
                                                              "output_tokens": 7}}},
                  {"type": "assistant", "message": {"usage": {"input_tokens": 6, "output_tokens": 1}}}):
        claude.update("claude", event)
    assert (claude.turns, claude.tokens) == (2, 119)
    claude.update("claude", {"type": "result", "num_turns": 2, "total_cost_usd": 0.05,
                             "usage": {"input_tokens": 11, "cache_read_input_tokens": 100, "output_tokens": 8}})
    assert (claude.turns, claude.tokens, claude.cost_usd) == (2, 119, 0.05)
    codex = Usage()
    for event in ({"type": "thread.started", "thread_id": "t"},
                  {"type": "turn.completed", "usage": {"input_tokens": 20, "cached_input_tokens": 5,
                                                       "output_tokens": 3}},
                  {"type": "turn.completed", "usage": {"input_tokens": 30, "output_tokens": 4}}):
        codex.update("codex", event)
    assert (codex.turns, codex.input_tokens, codex.output_tokens) == (2, 50, 7)
    openhands = Usage()
    for cost in (0.01, 0.03):
        openhands.update("openhands", {"llm_metrics": {"accumulated_cost": cost, "accumulated_token_usage":
                                                       {"prompt_tokens": int(cost * 1000), "completion_tokens": 2}}})
    assert (openhands.cost_usd, openhands.tokens) == (0.03, 32)
    nothing = Usage()
    nothing.update("none", {"type": "result", "num_turns": 4})
    assert nothing.turns is None and nothing.events == 1


def test_a_token_limit_stops_the_agent(env, tmp_path):
    root = make_sandbox(tmp_path / "sb")
    script = tmp_path / "chatty.py"
    script.write_text("import json, time\nfor i in range(100):\n    print(json.dumps({'type': 'turn.completed', "
                      "'usage': {'input_tokens': 400, 'output_tokens': 100}}), flush=True)\n    time.sleep(0.05)\n")
    result = runner.run(root, presets.Agent("chatty", f"{shlex.quote(sys.executable)} {script}", "codex"),
                        limits=runner.Limits(timeout=60, tokens=1200), max_turns=1, log=lambda m: None)
    (line,) = result.turns
    assert line["outcome"] == "limit" and "1500 tokens, over 1200" in line["explanation"]
    assert line["usage"]["turns"] == 3


def test_a_preset_whose_program_is_missing_is_refused_with_how_to_install_it(env, tmp_path, monkeypatch):
    root = make_sandbox(tmp_path / "sb")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path / "home"))
    out = agent_run(str(root), "--agent", "codex", code=2)
    assert "runs `codex`, which is not installed" in out and "scripts/install_agents.sh" in out
    assert not runner.default_record(root).exists()  # refused before a turn started


# --- Claude Code and Codex themselves --------------------------------------------------------------------
# The real CLIs (scripts/install_agents.sh) against tests/agents/model_api.py, a local stand-in for their model
# APIs that plays the scripted plan: the presets' flags, the CLIs' tools, permission checks and sandbox, their
# JSON events and usage totals are the programs' own. Only the model is not real.

CLAUDE = shutil.which("claude", path=presets.agent_path())
CODEX = shutil.which("codex", path=presets.agent_path())
needs_claude = pytest.mark.skipif(CLAUDE is None, reason="Claude Code is not installed: scripts/install_agents.sh")
needs_codex = pytest.mark.skipif(CODEX is None, reason="Codex is not installed: scripts/install_agents.sh")


@pytest.fixture
def model_api(env, tmp_path, monkeypatch):
    """Start the model stand-in with a plan and point both CLIs at it; their settings live in tmp."""
    servers = []
    home = tmp_path / "home"

    def start(plan: str = "curate") -> Path:
        folder = tmp_path / f"api-{plan}"
        folder.mkdir()
        port, log = folder / "port", folder / "usage.jsonl"
        servers.append(subprocess.Popen([sys.executable, str(AGENTS / "model_api.py"), "--port-file", str(port),
                                         "--log", str(log), "--plan", plan]))
        for _ in range(200):
            if port.is_file():
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port.read_text()}"
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        (home / ".codex" / "config.toml").write_text(
            'model = "gpt-5-codex"\nmodel_provider = "standin"\n[model_providers.standin]\nname = "stand-in"\n'
            f'base_url = "{url}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n')
        return log

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-for-the-local-stand-in")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-for-the-local-stand-in")
    monkeypatch.setenv("HOME", str(home))  # the CLIs' settings and sessions
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path / "cbdsl-home"))
    found = [str(Path(p).parent) for p in (CLAUDE, CODEX) if p]
    monkeypatch.setenv("PATH", os.pathsep.join([*found, os.environ["PATH"]]))
    monkeypatch.setenv("DISABLE_AUTOUPDATER", "1")
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    yield start
    for server in servers:
        server.kill()
        server.wait()


def served(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def events_of(line: dict) -> list[dict]:
    return [json.loads(x) for x in (Path(line["transcript"]) / "events.jsonl").read_text().splitlines()]


def assert_two_scored_turns(root: Path, log: Path, out: str) -> tuple[list[dict], list[dict]]:
    """Both turns scored; the model was asked for read, write, three cbdsl commands and the end, in order;
    the runner's usage of turn 1 is what the model API served in it (the CLI's own totals)."""
    assert "stopped: all 2 iterations are used; 0 iterations left" in out
    lines = turns(root)
    assert [t["outcome"] for t in lines] == ["submitted", "submitted"], lines
    assert [[e["n"] for e in t["iterations"] if e["status"] == "scored"] for t in lines] == [[0, 1], [2]]
    first = served(log)[:6]
    assert [s["step"] for s in first] == ["read", "write", "run", "run", "run", "end"] and all(s["turn"] for s in first)
    usage = lines[0]["usage"]
    assert usage["input_tokens"] == sum(s["input_tokens"] for s in first)
    assert usage["output_tokens"] == sum(s["output_tokens"] for s in first)
    shown = subprocess.run([sys.executable, "-m", "cbdsl", "show", "1"], cwd=root, capture_output=True, text=True)
    assert 'policy "model-step-1"' in shown.stdout and "plan step 1: caption and image statistics" in shown.stdout
    verify(root)
    return lines, shown.stdout


@needs_claude
@pytest.mark.parametrize("scaffold", ["open", "research"])
def test_claude_code_makes_scored_iterations_through_its_preset(model_api, tmp_path, scaffold):
    log = model_api("curate")
    root = make_sandbox(tmp_path / "sb", scaffold)
    lines, shown = assert_two_scored_turns(root, log, agent_run(str(root), "--agent", "claude", "--timeout", "120"))
    result = events_of(lines[0])[-1]  # --allowedTools let Read, Write and the cbdsl commands run
    assert result["type"] == "result" and result["permission_denials"] == [] and not result["is_error"]
    assert lines[0]["usage"]["turns"] == result["num_turns"] == 6
    assert lines[0]["usage"]["cost_usd"] == result["total_cost_usd"] > 0
    if scaffold == "research":
        assert "observation: no score yet" in shown and "hypothesis:" in shown


@needs_claude
def test_claude_codes_permissions_hold_the_agent_to_cbdsl_commands(model_api, tmp_path):
    model_api("trespass")
    root = make_sandbox(tmp_path / "sb")
    before = (root / "cbdsl.toml").read_text()
    agent_run(str(root), "--agent", "claude", "--timeout", "120", "--max-turns", "1", code=1)
    (line,) = turns(root)
    assert line["outcome"] == "no-submission" and line["protected_changed"] == []
    (denied,) = events_of(line)[-1]["permission_denials"]
    assert denied["tool_name"] == "Bash" and "cbdsl.toml" in denied["tool_input"]["command"]
    assert (root / "cbdsl.toml").read_text() == before
    verify(root)


@needs_claude
def test_claude_code_makes_every_submission_in_one_session(model_api, tmp_path):
    log = model_api("curate")
    root = make_sandbox(tmp_path / "sb", iterations=2)
    out = agent_run(str(root), "--agent", "claude", "--mode", "session", "--timeout", "120")
    assert "stopped: all 2 iterations are used; 0 iterations left" in out
    (line,) = turns(root)
    assert "Make **2 submissions** now" in (Path(line["transcript"]) / "prompt.md").read_text()
    assert line["outcome"] == "submitted" and [e["n"] for e in line["iterations"]] == [0, 1, 2]
    assert [s["step"] for s in served(log)] == ["read"] + ["write", "run", "run", "run"] * 2 + ["end"]
    verify(root)


@needs_claude
def test_a_claude_code_whose_model_hangs_is_stopped_at_its_wall_time(model_api, tmp_path):
    model_api("stall")
    root = make_sandbox(tmp_path / "sb")
    start = time.time()
    agent_run(str(root), "--agent", "claude", "--timeout", "8", "--max-turns", "1", code=1)
    (line,) = turns(root)
    assert line["outcome"] == "timeout" and 8 <= line["wall_s"] < 8 + runner.GRACE_S + 5
    assert time.time() - start < 60
    alive = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True).stdout.split()
    assert alive == []  # the CLI and everything it started were stopped with its process group
    verify(root)


@needs_claude
def test_a_token_limit_stops_claude_code_mid_turn(model_api, tmp_path):
    model_api("curate")
    root = make_sandbox(tmp_path / "sb")
    agent_run(str(root), "--agent", "claude", "--timeout", "120", "--max-tokens", "9000", "--max-turns", "1",
              code=1)
    (line,) = turns(root)
    assert line["outcome"] == "limit" and "over 9000" in line["explanation"]
    assert 9000 < line["usage"]["tokens"] < 20000 and line["iterations"] == []  # stopped before its submit
    verify(root)


@needs_claude
def test_claude_code_submits_through_cbdsls_mcp_server(model_api, tmp_path):
    log = model_api("mcp")
    root = make_sandbox(tmp_path / "sb", iterations=1)
    servers = json.dumps({"mcpServers": {"cbdsl": {"command": "cbdsl", "args": ["mcp"]}}})
    servers = servers.replace("{", "{{").replace("}", "}}")  # literal braces in a command template
    agent = ('claude -p "$(cat {prompt_file})" --output-format stream-json --verbose --strict-mcp-config '
             f"--mcp-config {shlex.quote(servers)} --permission-mode acceptEdits --allowedTools mcp__cbdsl Read Write")
    out = agent_run(str(root), "--agent", agent, "--events", "claude", "--timeout", "120")
    assert "stopped: all 1 iterations are used" in out
    (line,) = turns(root)
    assert line["outcome"] == "submitted" and [e["n"] for e in line["iterations"]] == [0, 1]
    events = events_of(line)
    init = events[0]
    assert [(s["name"], s["status"]) for s in init["mcp_servers"]] == [("cbdsl", "connected")]
    assert {f"mcp__cbdsl__{t}" for t in ("check", "compile", "submit", "log", "show", "diff", "methods",
                                         "explain", "trajectory")} <= set(init["tools"])
    assert [s["step"] for s in served(log)] == ["read", "write", "mcp", "mcp", "mcp", "end"]
    results = [b for e in events if e["type"] == "user" for b in e["message"]["content"]
               if b.get("type") == "tool_result"]
    submitted = json.loads(results[-1]["content"])  # the submit tool's structured output, as the CLI got it
    assert submitted["command"][:2] == ["cbdsl", "submit"] and submitted["output"]["status"] == "scored"
    assert events[-1]["permission_denials"] == []
    verify(root)


@needs_codex
def test_codex_makes_scored_iterations_through_its_preset(model_api, tmp_path):
    log = model_api("curate")
    root = make_sandbox(tmp_path / "sb")
    lines, _ = assert_two_scored_turns(root, log, agent_run(str(root), "--agent", "codex", "--timeout", "120"))
    events = events_of(lines[0])
    commands = [e["item"] for e in events if e["type"] == "item.completed"
                and e["item"]["type"] == "command_execution"]
    assert [c["exit_code"] for c in commands] == [0] * 5, commands  # cbdsl found on PATH, the submit written
    assert events[-1]["type"] == "turn.completed" and lines[0]["usage"]["turns"] == 1
