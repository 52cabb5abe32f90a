"""`cbdsl mcp` driven by the official MCP SDK's own client over stdio (issue 16, part 3): list the tools, call
each one, and see errors come back as tool errors with the diagnostic's code, line and hint."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from click.testing import CliRunner
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from cbdsl.cli import cli
from cbdsl.commands.mcp_server import explain_failure
from cbdsl.pipelines.data.demo import make_demo
from test_loop import set_backend

TOOLS = {"check", "explain", "compile", "submit", "log", "show", "diff", "methods", "trajectory"}
POLICY = 'policy "p"\npool "demo"\nfilter words(text) > 2\nbudget 100\nselect random(seed=3)\n'


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    make_demo(tmp_path / "pools" / "demo", rows=400, seed=0)
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "pools"))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    root = tmp_path / "sb"
    out = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "100", "--iterations", "2"])
    assert out.exit_code == 0, out.output
    set_backend(root)
    (root / "policy.cur").write_text(POLICY)
    return root


def session_calls(root, calls):
    """Start `cbdsl mcp --root ROOT` as the client's subprocess, list the tools, make ``calls`` in order."""
    import os

    params = StdioServerParameters(command=sys.executable, args=["-m", "cbdsl", "mcp", "--root", str(root)],
                                   env={k: v for k, v in os.environ.items() if k.startswith(("CBDSL_", "PYTHON"))},
                                   cwd=str(root))

    async def go():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            results = [await session.call_tool(name, args) for name, args in calls]
            return listed, results

    return anyio.run(go)


def test_every_tool_is_listed_with_schemas_and_answers(sandbox):
    calls = [("check", {}), ("explain", {"run": True}), ("compile", {}), ("submit", {"message": "words > 2"}),
             ("log", {}), ("show", {"n": 1}), ("diff", {"old": "@0"}), ("methods", {"method_id": "random"}),
             ("trajectory", {})]
    listed, results = session_calls(sandbox, calls)
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and tool.input_schema["type"] == "object"
        assert set(tool.output_schema["properties"]) == {"command", "output"}
    assert set(tools["submit"].input_schema["required"]) == {"message"}
    for (name, _), result in zip(calls, results):
        assert not result.is_error, (name, result.content)
        assert result.structured_content["command"][:2] == ["cbdsl", name]
        assert json.loads(result.content[0].text) == result.structured_content  # the text mirrors the structure
    out = {name: r.structured_content["output"] for (name, _), r in zip(calls, results)}
    assert out["check"]["files"][0]["ok"] is True
    assert out["compile"]["canonical_text"] == POLICY
    assert out["submit"]["iteration"] == 1 and out["submit"]["status"] == "scored"
    assert set(out["submit"]["benchmarks"]) == {"rows", "share7"} and out["submit"]["selected"] == 100
    assert [e["iteration"] for e in out["log"]] == [0, 1]  # the baseline, then the submission
    assert out["show"]["n"] == 1 and out["show"]["policy_text"] == POLICY
    assert out["diff"]["class"] == "new-family" and out["trajectory"]["summary"]["iterations"] == 1
    assert out["methods"]["id"] == "random"


def test_errors_are_tool_errors_with_code_line_and_hint(sandbox):
    (sandbox / "bad.cur").write_text('policy "p"\npool "demo"\nfilter wordz(text) > 2\nbudget 100\n'
                                     'select random(seed=3)\n')
    _, results = session_calls(sandbox, [("check", {"files": ["bad.cur"]}), ("show", {"n": 7}),
                                         ("methods", {"method_id": "no_such_method"})])
    check, show, methods = results
    assert check.is_error and "E102 at bad.cur:3:8" in check.content[0].text
    assert "did you mean `words`?" in check.content[0].text
    assert show.is_error and "7" in show.content[0].text and "Traceback" not in show.content[0].text
    assert methods.is_error and "no_such_method" in methods.content[0].text


def test_a_failure_without_json_keeps_the_commands_own_words():
    assert explain_failure("", "Error: no cbdsl.toml here; run `cbdsl init`\n") == \
        "Error: no cbdsl.toml here; run `cbdsl init`"
    assert explain_failure("", "") == "the command failed without a message"
