"""``cbdsl agent run``: a coding agent driven through a sandbox's iterations, turn by turn.

Why: the research compares agents by their trajectories; this gives each turn its prompt, bounds it, keeps
what the agent printed, and never lets a misbehaving agent break the ledger. A turn starts the agent's
command (:mod:`.presets`) in the sandbox with the prompt (:mod:`.prompt`), in its own process group, with
``CBDSL_AGENT_RUN`` set (the commands that show test scores refuse to run under it), this cbdsl first on
``PATH`` and the agent CLIs ``scripts/install_agents.sh`` installed next. It reads the agent's stdout line
by line (JSON events go to ``events.jsonl``, everything to ``stdout.txt``, stderr to ``stderr.txt``),
updates the agent's own usage figures (:mod:`.usage`) and stops the group when the turn passes its wall
time, turn or token limit.

After the turn the runner restores any protected file the agent changed (``cbdsl.toml``, the cards,
``skills/``), verifies the ledger against its witness, marks an entry a killed submit left ``running`` as
failed (the ledger's own recovery), and appends one line to ``turns.jsonl`` in the run's record folder
(outside the sandbox): the turn's outcome and why, its exit code, wall time, usage and the ledger entries
it produced, beside the transcript's files. Outcomes: ``submitted``, ``no-submission``, ``crashed``,
``timeout``, ``limit``, ``interrupted`` (the runner itself was stopped mid-turn; found on the next start).

Two modes: ``turn`` starts one agent process per iteration; ``session`` starts one that is to make every
submission left. Either stops when the sandbox's iterations are used, when ``max_turns`` processes ran, or
when the ledger does not verify. A rerun resumes: the ledger says what is left, ``turns.jsonl`` the turn
numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.harness import prompt as prompts
from cbdsl.harness.presets import Agent, AgentError, agent_path, check_installed, outside_folders, render
from cbdsl.harness.usage import Usage
from cbdsl.pipelines.loop.ledger import Ledger, LedgerError
from cbdsl.pipelines.loop.sandbox import load
from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop.backends.base import BackendError
from cbdsl.pipelines.loop.submit import feedback, ledger_for, with_noise
from cbdsl.pipelines.loop.test_scores import AGENT_ENV

MODES = ("turn", "session")
RECORD = "turns.jsonl"
GRACE_S = 5.0  # between SIGTERM and SIGKILL of a stopped agent's process group


@dataclass(frozen=True)
class Limits:
    """A turn's bounds: wall seconds, and the agent's own turns and tokens where it reports them."""

    timeout: float = 1800.0
    agent_turns: int = 50
    tokens: int | None = None


@dataclass
class Result:
    """What ``run`` did: the turns it started now, and why it stopped."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    iterations_left: int = 0
    record: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"turns": self.turns, "stopped": self.stopped, "iterations_left": self.iterations_left,
                "record": str(self.record)}


def default_record(sandbox: Path) -> Path:
    """``<sandbox>.agent`` beside the sandbox: outside it, where the agent does not write."""
    return sandbox.parent / f"{sandbox.name}.agent"


def run(sandbox: str | os.PathLike, agent: Agent, *, mode: str = "turn", limits: Limits = Limits(),
        max_turns: int | None = None, record: str | os.PathLike | None = None, seed: int = 0,
        log: Callable[[str], None] = print) -> Result:
    """Drive ``agent`` through the iterations left in ``sandbox``; see the module docstring."""
    if mode not in MODES:
        raise AgentError(f"unknown mode {mode!r}: choose {' or '.join(MODES)}")
    check_installed(agent)
    cfg = load(sandbox)
    folder = Path(record).resolve() if record else default_record(cfg.root)
    if folder.is_relative_to(cfg.root):
        raise AgentError(f"the run's record {folder} is inside the sandbox, where the agent writes: choose a "
                         "folder outside it (--record)")
    folder.mkdir(parents=True, exist_ok=True)
    lines = _read_record(folder)
    _close_interrupted(folder, lines)
    result = Result(record=folder)
    # Before the agent runs: the ledger exists and its witness holds cbdsl.toml's settings (an agent that edits
    # them before its first submit is then refused), and an entry a killed run left `running` is recovered.
    problem = _settle_ledger(cfg, log)
    for folder_outside in outside_folders():  # an agent that confines its writes is given these (--add-dir)
        folder_outside.mkdir(parents=True, exist_ok=True)
    if problem:
        result.stopped = "the ledger does not verify: " + problem
        return result
    first = max((line["turn"] for line in lines), default=0) + 1
    budget = max_turns if max_turns is not None else 2 * cfg.iterations
    for turn in range(first, first + budget):
        left, last = _ledger_state(cfg)
        result.iterations_left = left
        if left <= 0:
            result.stopped = f"all {cfg.iterations} iterations are used"
            break
        line = _turn(cfg, agent, turn, 1 if mode == "turn" else left, left, last, limits, folder, seed, log)
        line["mode"] = mode
        _append(folder, line)
        result.turns.append(line)
        log(f"turn {turn}: {line['outcome']}: {line['explanation']}")
        if line.get("ledger_problem"):
            result.stopped = "the ledger does not verify: " + line["ledger_problem"]
            break
    else:
        result.stopped = f"{budget} agent turns started (--max-turns)"
    result.iterations_left = _ledger_state(cfg)[0]
    if result.iterations_left <= 0 and not result.stopped.startswith("the ledger"):
        result.stopped = f"all {cfg.iterations} iterations are used"  # also when the last turn used the last one
    return result


# --- one turn -----------------------------------------------------------------------------------------


def _turn(cfg, agent: Agent, turn: int, submissions: int, left: int, last: dict | None, limits: Limits,
          folder: Path, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """One agent process, from its prompt to its line in the record."""
    here = folder / f"turn-{turn:04d}"
    here.mkdir(parents=True, exist_ok=True)
    protocol = (cfg.root / "PROTOCOL.md").read_text() if (cfg.root / "PROTOCOL.md").is_file() else ""
    prompt_file = here / "prompt.md"
    prompt_file.write_text(prompts.compose(cfg, turn=turn, submissions=submissions, left=left, protocol=protocol,
                                           feedback=last))
    before = _max_entry(cfg)
    command = render(agent, prompt_file=prompt_file, sandbox=cfg.root, iteration=before + 1,
                     submissions=submissions, max_turns=limits.agent_turns, seed=seed)
    (here / "command.txt").write_text(command + "\n")
    guard = Guard.of(cfg.root)
    log(f"turn {turn}: {agent.name}, {submissions} submission(s) to make, {left} iterations left")
    usage = Usage()
    start = time.time()
    code, stop = _execute(command, cfg.root, agent.events, usage, limits, here, folder)
    wall = time.time() - start
    changed = guard.restore()
    problem = _settle_ledger(cfg, log)
    produced = [] if problem else _entries_after(cfg, before)
    outcome, why = _outcome(code, stop, produced, limits, changed)
    return {"turn": turn, "agent": agent.name, "outcome": outcome, "explanation": why, "exit_code": code,
            "wall_s": round(wall, 3), "started_at": start, "usage": usage.to_json(), "iterations": produced,
            "protected_changed": changed, "ledger_problem": problem, "transcript": str(here)}


def _execute(command: str, cwd: Path, events: str, usage: Usage, limits: Limits, here: Path,
             folder: Path) -> tuple[int | None, str]:
    """Run the agent's command; (exit code or None when stopped, why it was stopped or "")."""
    env = {**os.environ, AGENT_ENV: str(folder), "PATH": agent_path()}
    stop = {"why": ""}
    with open(here / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        reader = threading.Thread(target=_read_stdout, args=(proc, events, usage, limits, here, stop), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            stop["why"] = stop["why"] or "timeout"
        except BaseException:  # the runner is interrupted: the agent must not outlive it
            _stop_group(proc)
            raise
        if stop["why"]:
            _stop_group(proc)
        else:
            _kill_leftovers(proc)
        reader.join(timeout=GRACE_S)
    return (None if stop["why"] else proc.returncode), stop["why"]


def _read_stdout(proc, events: str, usage: Usage, limits: Limits, here: Path, stop: dict) -> None:
    with open(here / "stdout.txt", "wb") as raw, open(here / "events.jsonl", "wb") as jsonl:
        for line in proc.stdout:
            raw.write(line)
            raw.flush()
            try:
                event = json.loads(line)
            except ValueError:
                continue
            jsonl.write(line if line.endswith(b"\n") else line + b"\n")
            jsonl.flush()
            usage.update(events, event)
            over = _over(usage, limits)
            if over and not stop["why"]:
                stop["why"] = over
                _stop_group(proc)


def _over(usage: Usage, limits: Limits) -> str:
    if usage.turns is not None and usage.turns > limits.agent_turns:
        return f"limit: {usage.turns} agent turns, over {limits.agent_turns}"
    if limits.tokens is not None and usage.tokens is not None and usage.tokens > limits.tokens:
        return f"limit: {usage.tokens} tokens, over {limits.tokens}"
    return ""


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the agent's process group, SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        _kill_leftovers(proc)
        return


def _kill_leftovers(proc: subprocess.Popen) -> None:
    """A child the agent left behind (a backgrounded submit) is stopped with its group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(code: int | None, stop: str, produced: list[dict], limits: Limits,
             changed: list[str]) -> tuple[str, str]:
    scored = [e for e in produced if e["status"] == "scored"]
    made = (f"; it produced iteration(s) {', '.join(str(e['n']) for e in produced)} "
            f"({', '.join(e['status'] for e in produced)})") if produced else "; it produced no ledger entry"
    trespass = (f"; it changed {', '.join(changed)}, which the runner restored" if changed else "")
    if stop == "timeout":
        return "timeout", f"the agent ran past {limits.timeout:g} s and was stopped{made}{trespass}"
    if stop:
        return "limit", f"the agent passed its {stop[len('limit: '):]} and was stopped{made}{trespass}"
    if code != 0:
        return "crashed", f"the agent exited with code {code}{made}{trespass}; see its stderr.txt"
    if not scored:
        return "no-submission", f"the agent exited without a scored submission{made}{trespass}"
    return "submitted", f"scored iteration(s) {', '.join(str(e['n']) for e in scored)}{trespass}"


# --- the sandbox around a turn ------------------------------------------------------------------------


@dataclass
class Guard:
    """The protected files' bytes before a turn (None: absent), to restore what the agent changed."""

    root: Path
    files: dict[str, bytes | None]
    folders: frozenset[Path] = frozenset()

    @classmethod
    def of(cls, root: Path) -> Guard:
        return cls(root, {rel: _read(root / rel) for rel in _protected(root)}, frozenset(_skill_folders(root)))

    def restore(self) -> list[str]:
        """Put every protected file back as it was; the relative paths that had changed, sorted."""
        now = set(_protected(self.root)) | set(self.files)
        changed = []
        for rel in sorted(now):
            before, path = self.files.get(rel), self.root / rel
            if _read(path) == before:
                continue
            changed.append(rel)
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(before)
        for folder in sorted(set(_skill_folders(self.root)) - self.folders, key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()  # a folder the agent made for a file that is gone now
        return changed


def _skill_folders(root: Path) -> list[Path]:
    skills = root / "skills"
    return [p for p in skills.rglob("*") if p.is_dir()] if skills.is_dir() else []


def _protected(root: Path) -> list[str]:
    skills = root / "skills"
    inside = [str(p.relative_to(root)) for p in sorted(skills.rglob("*")) if p.is_file()] if skills.is_dir() else []
    return [*prompts.PROTECTED, *inside]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


@contextmanager
def _ledger(cfg) -> Iterator[Ledger]:
    """The sandbox's ledger (checked against its witness), closed after; it exists from the run's start on."""
    ledger = ledger_for(cfg)
    try:
        yield ledger
    finally:
        ledger.close()


def _ledger_state(cfg) -> tuple[int, dict | None]:
    """(iterations left, the latest finished entry's feedback as ``submit --json`` gives it, or None)."""
    with _ledger(cfg) as ledger:
        entries = ledger.entries()
        used = len([e for e in entries if e.status == "scored" and not e.is_baseline])
        done = [e for e in entries if e.status != "running"]
        last = with_noise(feedback(cfg, ledger, done[-1], done[-1].suite), _backend(cfg)).to_json() if done else None
    return max(0, cfg.iterations - used), last


def _backend(cfg):
    try:
        return make_backend(cfg.backend, cfg.backend_settings)
    except BackendError:
        return None  # a broken setting: the agent's submit will say so; the prompt gives no noise


def _max_entry(cfg) -> int:
    with _ledger(cfg) as ledger:
        return ledger.next_number() - 1


def _entries_after(cfg, n: int) -> list[dict[str, Any]]:
    with _ledger(cfg) as ledger:
        return [{"n": e.n, "status": e.status, "aggregate": e.aggregate, "policy_hash": e.policy_hash,
                 "selection_hash": e.selection_hash, "error": e.error} for e in ledger.entries() if e.n > n]


def _settle_ledger(cfg, log: Callable[[str], None]) -> str | None:
    """The ledger (made on the run's first call, with its witness) verifies, else the report, and the run
    stops; no entry is left ``running`` by a submit a turn's end killed (the ledger marks it failed)."""
    cfg.state.mkdir(parents=True, exist_ok=True)
    try:
        with _ledger(cfg) as ledger, ledger.submit_lock(wait=True, log=log):
            pass  # the lock verifies the ledger first, then recovers entries whose process died
    except LedgerError as err:
        return str(err)
    return None


# --- the record ---------------------------------------------------------------------------------------


def _read_record(folder: Path) -> list[dict[str, Any]]:
    path = folder / RECORD
    if not path.is_file():
        return []
    out = []
    for k, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            raise AgentError(f"{path}:{k} is not a line cbdsl wrote: restore the file or remove the line") from None
    return out


def _close_interrupted(folder: Path, lines: list[dict[str, Any]]) -> None:
    """A turn folder without its line: the runner was stopped mid-turn; say so before going on."""
    recorded = {line["turn"] for line in lines}
    for here in sorted(folder.glob("turn-*")):
        number = int(here.name.split("-")[1]) if here.name.split("-")[1].isdigit() else None
        if number is not None and number not in recorded:
            line = {"turn": number, "outcome": "interrupted", "explanation": "the runner stopped during this turn "
                    "(killed or interrupted); the ledger was recovered on the next start", "transcript": str(here),
                    "iterations": [], "usage": None, "exit_code": None}
            _append(folder, line)
            lines.append(line)


def _append(folder: Path, line: dict[str, Any]) -> None:
    with open(folder / RECORD, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_turns(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The turns recorded in a run's record folder (for reports)."""
    return _read_record(Path(folder))
