"""A model provider for the real agent CLIs: the Anthropic Messages API and the OpenAI Responses API, answering
as a model that follows a plan.

Why: Claude Code and Codex install from npm (``scripts/install_agents.sh``), but their models need an API key and
the internet. Claude Code reads ``ANTHROPIC_BASE_URL``; Codex reads a provider's ``base_url`` from its
``config.toml``. This server speaks both APIs as the CLIs use them (server-sent events when ``stream`` is set) and
plays the model's part of a cbdsl turn from what the CLI sends it: it reads the turn's prompt (how many
submissions, the scaffold's submit line, the latest feedback), asks the CLI to read ``policy.cur`` (the pool and
budget come from the tool's result), to write a plan step of :data:`cbdsl.harness.scripted_agent.PLANS`, to run
``cbdsl check``, ``cbdsl compile`` and the submit line, and ends its turn. Claude Code gets its Read, Write and
Bash tools; Codex its ``exec_command`` (a here-document writes the policy). Everything else is the real program:
the preset's flags, the CLI's permission checks and sandbox, its tools, its JSON events and its usage totals.

``python tests/agents/model_api.py --port-file F --log L [--plan curate|mcp|trespass|stall]``: serves on a free port
of 127.0.0.1 (written to F once it listens) until killed; every answer's usage is appended to L as JSON.
``mcp`` checks, compiles and submits through ``cbdsl mcp``'s tools (Claude Code started with it as an MCP
server) instead of the shell. ``trespass`` asks for a command outside Claude Code's allowlist first (the CLI
must deny it) and then ends its turn; ``stall`` never answers the turn's requests (a model that hangs: the
runner's wall-time limit must stop the CLI).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cbdsl.harness.scripted_agent import PLANS

FORBIDDEN = "python3 -c 'open(\"cbdsl.toml\", \"a\").write(\"# changed\")'"
"""The trespass plan's command: not a cbdsl command, so ``Bash(cbdsl:*)`` must not let it run."""
TURN = "cbdsl curation run"  # in the prompt's first line: tells the turn's request from the CLI's side requests

# A plan step: ("read",), ("write", text), ("run", command), ("mcp", tool, arguments) or ("end", text).
Step = tuple


def plan_steps(prompt: str, policy: str, plan: str) -> list[Step]:
    """The turn after its first read, given the prompt and ``policy.cur`` as the read returned it."""
    if plan == "trespass":
        return [("run", FORBIDDEN), ("end", "I changed nothing.")]
    wanted = int(re.search(r"Make \*\*(\d+) submission", prompt).group(1))
    feedback = re.search(r"```json\n(.*?)\n```", prompt, re.S)
    last = json.loads(feedback.group(1)) if feedback else None
    seen = f"iteration {last['iteration']} scored {last['aggregate']}" if last else "no score yet"
    pool, budget = re.search(r'pool "([^"]+)"', policy), re.search(r"budget (\S+)", policy)
    if not (pool and budget):  # the read failed: say what it returned, as a model would, and stop
        return [("end", "I could not read policy.cur: " + policy[:200])]
    pool, budget = pool.group(1), budget.group(1)
    track = "it" if "it" in pool.split("-") else "clip"
    first = (last["iteration"] + 1) if last else 1
    out: list[Step] = []
    for step in range(first, min(first + wanted, len(PLANS[track]) + 1)):
        family, body = PLANS[track][step - 1]
        change = f"plan step {step}: {family}"
        args = (["--observation", seen, "--hypothesis", f"{family} removes rows that hurt the model", "--change",
                 change] if "--observation" in prompt else ["-m", change])
        out.append(("write", f'policy "model-step-{step}"\npool "{pool}"\n' + body.format(budget=budget)))
        if plan == "mcp":  # cbdsl's own MCP tools instead of the shell
            out += [("mcp", "check", {"files": ["policy.cur"]}), ("mcp", "compile", {}),
                    ("mcp", "submit", {"message": change})]
        else:
            out += [("run", "cbdsl check policy.cur"), ("run", "cbdsl compile policy.cur"),
                    ("run", shlex.join(["cbdsl", "submit", "--json", *args]))]
    return out + [("end", f"Submitted {len(out) // 4} plan step(s)." if out else "My plan is used up.")]


def next_step(prompt: str, results: list[str], plan: str) -> Step:
    """The step after ``results`` (the tool results so far): a read first, then the plan, then its end."""
    if plan != "trespass" and not results:
        return ("read",)
    todo = plan_steps(prompt, results[0] if results else "", plan)
    return todo[min(len(results) - (plan != "trespass"), len(todo) - 1)]


# --- Anthropic Messages (Claude Code) ----------------------------------------------------------------


def _texts(content) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def _text_of(content) -> str:
    return "".join(b.get("text", "") for b in _texts(content) if isinstance(b, dict))


def messages_turn(body: dict) -> tuple[str, list[str]]:
    """The prompt (a text block of the first user message; the CLI adds reminders around it) and tool results."""
    messages = body.get("messages") or []
    prompt = next((b["text"] for b in _texts(messages[0].get("content")) if TURN in b.get("text", "")), "") \
        if messages else ""
    results = [_text_of(b.get("content")) for m in messages for b in _texts(m.get("content"))
               if b.get("type") == "tool_result"]
    return prompt, results


def messages_block(step: Step, sandbox: str, n: int) -> dict:
    if step[0] == "end":
        return {"type": "text", "text": step[1]}
    if step[0] == "mcp":
        return {"type": "tool_use", "id": f"toolu_{n:04d}", "name": f"mcp__cbdsl__{step[1]}", "input": step[2]}
    name, args = {"read": ("Read", {"file_path": f"{sandbox}/policy.cur"}),
                  "write": ("Write", {"file_path": f"{sandbox}/policy.cur", "content": step[-1]}),
                  "run": ("Bash", {"command": step[-1], "description": "Run a cbdsl command"})}[step[0]]
    return {"type": "tool_use", "id": f"toolu_{n:04d}", "name": name, "input": args}


def messages_events(body: dict, block: dict, usage: dict, n: int) -> list[tuple[str, dict]]:
    stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
    message = {"id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": body.get("model"),
               "stop_sequence": None, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    start = {**block, "input": {}} if block["type"] == "tool_use" else {**block, "text": ""}
    delta = ({"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
             if block["type"] == "tool_use" else {"type": "text_delta", "text": block["text"]})
    return [("message_start", {"type": "message_start", "message": message}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": {"output_tokens": usage["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"})]


# --- OpenAI Responses (Codex) ------------------------------------------------------------------------


def responses_turn(body: dict) -> tuple[str, list[str]]:
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    prompt = next((_text_of([{"text": c.get("text", "")} for c in i.get("content") or []]) for i in items
                   if i.get("role") == "user" and TURN in json.dumps(i.get("content"))), "")
    results = [i["output"] if isinstance(i.get("output"), str) else json.dumps(i.get("output")) for i in items
               if i.get("type") == "function_call_output"]
    return prompt, results


def responses_item(step: Step, sandbox: str, n: int) -> dict:
    if step[0] == "end":
        return {"type": "message", "id": f"msg_{n:04d}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": step[1], "annotations": []}]}
    cmd = {"read": "cat policy.cur", "write": f"cat > policy.cur <<'CBDSL_POLICY'\n{step[-1]}CBDSL_POLICY",
           "run": step[-1]}[step[0]]
    return {"type": "function_call", "id": f"fc_{n:04d}", "call_id": f"call_{n:04d}", "name": "exec_command",
            "arguments": json.dumps({"cmd": cmd, "workdir": sandbox}), "status": "completed"}


def responses_events(body: dict, item: dict, usage: dict, n: int) -> list[tuple[str, dict]]:
    response = {"id": f"resp_{n:04d}", "object": "response", "created_at": 0, "model": body.get("model"),
                "status": "in_progress", "output": []}
    total = {"input_tokens": usage["input_tokens"], "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": usage["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": usage["input_tokens"] + usage["output_tokens"]}
    return [("response.created", {"type": "response.created", "response": response}),
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                            "item": {**item, "status": "in_progress"}}),
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
            ("response.completed", {"type": "response.completed", "response": {
                **response, "status": "completed", "output": [item], "usage": total}})]


# --- the server ----------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    plan = "curate"
    log: Path
    lock = threading.Lock()
    count = 0

    def log_message(self, *args) -> None:  # quiet: the usage log is the record
        pass

    def do_HEAD(self) -> None:  # Claude Code's connectivity probe
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if "count_tokens" in self.path:
            self._json(200, {"input_tokens": len(json.dumps(body.get("messages"))) // 4})
            return
        responses = self.path.split("?")[0].endswith("/responses")
        prompt, results = (responses_turn if responses else messages_turn)(body)
        found = re.search(r"You work in the sandbox (.+?) \(your working directory\)", prompt)
        if found and self.plan == "stall":
            threading.Event().wait()  # until the server is killed
        step = next_step(prompt, results, self.plan) if found else ("end", "ok")  # a side request: plain text
        with self.lock:
            Handler.count += 1
            n = Handler.count
        block = (responses_item if responses else messages_block)(step, found.group(1) if found else "", n)
        usage = {"input_tokens": len(json.dumps(body.get("input" if responses else "messages"))) // 4,
                 "output_tokens": len(json.dumps(block)) // 4}
        if not responses:
            usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        with self.lock, open(self.log, "a") as f:
            f.write(json.dumps({"n": n, "api": "responses" if responses else "messages", "step": step[0],
                                "turn": bool(found), **usage}) + "\n")
        if not responses and not body.get("stream"):
            self._json(200, {"id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": body.get("model"),
                             "content": [block], "stop_reason": "tool_use" if step[0] != "end" else "end_turn",
                             "stop_sequence": None, "usage": usage})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for name, data in (responses_events if responses else messages_events)(body, block, usage, n):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json(self, code: int, data: dict) -> None:
        out = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--plan", choices=("curate", "mcp", "trespass", "stall"), default="curate")
    args = parser.parse_args()
    Handler.plan, Handler.log = args.plan, args.log
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
