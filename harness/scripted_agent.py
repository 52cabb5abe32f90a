"""A scripted agent: no model, a fixed plan of published methods, driven by the prompt and the ledger.

Why: experiments need an agent that runs anywhere, the same way every time, and exercises what a real
agent does (read the prompt, write ``policy.cur``, check, compile, submit, read the feedback), so that the
harness, the scaffolds and the reports can be tested and compared against real agents. Each plan step
cites, instantiates and adapts a catalogue method and changes the policy's structure, so it is accepted
under every scaffold (``open``, ``guide``, ``cite``, ``adapt``, ``research``).

``python -m cbdsl.harness.scripted_agent PROMPT_FILE``: it reads how many submissions the prompt asks for
and the sandbox's ``cbdsl.toml`` (pool, budget, scaffold), finds its next step from the ledger (``cbdsl
log --json``: the steps it already submitted say ``plan step K``), and submits the next steps in order;
a refused step is not retried. It prints one JSON event per step and a final ``result`` event (``num_turns``:
the cbdsl commands it ran), and exits 0; with its plan used up it says so and submits nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

#: The plan per track: (method family in words, policy body). ``{budget}`` is the sandbox's.
PLANS: dict[str, tuple[tuple[str, str], ...]] = {
    "clip": (
        ("caption and image statistics", """\
cite datacomp_basic
adapt datacomp_basic "demo-sized thresholds: captions of 3+ words, a 24 px shorter side, aspect ratio <= 3"
filter words(text) > 2
filter min(width, height) >= 24
filter max(width, height) / min(width, height) <= 3
budget {budget}
select random(seed=0)
"""),
        ("near-duplicate removal", """\
cite minhash_dedup
adapt minhash_dedup "captions of 3+ words first, then near-duplicate captions at Jaccard 0.7"
filter words(text) > 2
dedup minhash(text, threshold=0.7)
budget {budget}
select random(seed=0)
"""),
        ("image-text alignment", """\
cite datacomp_clip_score
adapt datacomp_clip_score "the demo teacher instead of ViT-L/14; the top half, English captions of 3+ words"
let clip = clip_score(image, text)
filter words(text) > 2
filter lang(text) == "en"
filter top(clip, 0.5)
budget {budget}
select random(seed=0)
"""),
    ),
    "it": (
        ("metadata rules", """\
cite random
adapt random "after metadata rules: image rows only, answers within their source's 95th length percentile"
filter has_image
filter gpt_chars <= quantile(gpt_chars, 0.95) per source
budget {budget}
select random(seed=0)
"""),
        ("answer hygiene", """\
cite exact_dedup, langid
adapt exact_dedup "on (image, answer) pairs, after dropping refusals, filler and one-word replies"
filter not matches(answer, "(?i)(i'm sorry|as an ai|i apologize|let me know if you have|happy to help)")
filter not (source == "llava_instruct" and words(answer) <= 1)
filter lang(question) == "en"
dedup exact(image, answer)
budget {budget}
select random(seed=0)
"""),
        ("training dynamics", """\
cite loss, exact_dedup
adapt loss "a noise filter: drop the highest 20% of the proxy's answer loss per source"
adapt exact_dedup "on (image, answer) pairs, after dropping refusals"
let l = loss(image, question, answer, epochs=1, seeds=1)
filter not matches(answer, "(?i)(i'm sorry|as an ai|i apologize)")
filter l <= quantile(l, 0.8) per source
dedup exact(image, answer)
budget {budget}
select random(seed=0)
"""),
    ),
}

STEP = re.compile(r"plan step (\d+)")


def emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def cbdsl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbdsl", *args], capture_output=True, text=True)


def pool_name(configured: str) -> str:
    """How a policy names the sandbox's pool: POOL.md's title (a pool given as a directory has a name there)."""
    card = Path("POOL.md")
    found = re.match(r"# Pool `([^`]+)`", card.read_text()) if card.is_file() else None
    return found.group(1) if found else configured


def submissions_asked(prompt: str) -> int:
    found = re.search(r"Make \*\*(\d+) submission", prompt)
    return int(found.group(1)) if found else 1


def steps_done(log: list[dict]) -> set[int]:
    return {int(m.group(1)) for e in log for m in [STEP.search(e.get("message") or "")] if m}


def submit_args(scaffold: str, step: int, family: str, feedback: str) -> list[str]:
    change = f"plan step {step}: {family}"
    if scaffold == "research":
        return ["--observation", feedback, "--hypothesis", f"{family} removes rows that hurt the model",
                "--change", change]
    return ["-m", change]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = Path(args[0]).read_text() if args else ""
    config = tomllib.loads(Path("cbdsl.toml").read_text())
    sandbox = config.get("sandbox", {})
    budget, scaffold = sandbox.get("budget", 5000), sandbox.get("scaffold", "open")
    pool = pool_name(sandbox.get("pool", "demo"))
    track = "it" if sandbox.get("backend") == "mini-vlm" or "it" in pool.split("-") else "clip"
    commands = 0
    logged = cbdsl("log", "--json")
    commands += 1
    done = steps_done(json.loads(logged.stdout) if logged.returncode == 0 and logged.stdout.strip() else [])
    todo = [k for k in range(1, len(PLANS[track]) + 1) if k not in done][:submissions_asked(prompt)]
    last = re.search(r"```json\n(.*?)\n```", prompt, re.S)
    feedback = json.loads(last.group(1)) if last else None
    seen = (f"iteration {feedback['iteration']} scored {feedback['aggregate']}" if feedback and
            feedback.get("aggregate") is not None else "no score yet")
    if not todo:
        emit({"type": "message", "text": f"my plan of {len(PLANS[track])} steps is used up; nothing to submit"})
    for step in todo:
        family, body = PLANS[track][step - 1]
        text = f'policy "scripted-step-{step}"\npool "{pool}"\n' + body.format(budget=budget)
        Path("policy.cur").write_text(text)
        checked, compiled = cbdsl("check", "policy.cur"), cbdsl("compile", "policy.cur")
        submitted = cbdsl("submit", "--json", *submit_args(scaffold, step, family, seen))
        commands += 3
        result = _json_out(submitted.stdout)
        failed = next((p for p in (compiled, submitted) if p.returncode != 0 and p.stderr.strip()), None)
        emit({"type": "step", "step": step, "family": family, "check": checked.returncode,
              "compile": compiled.returncode, "submit": submitted.returncode,
              "status": result.get("status"), "aggregate": result.get("aggregate"),
              "error": result.get("error") or (failed.stderr.strip()[-400:] if failed else None)})
        if result.get("aggregate") is not None:
            seen = f"iteration {result['iteration']} scored {result['aggregate']}"
    emit({"type": "result", "subtype": "success", "num_turns": commands})
    return 0


def _json_out(text: str) -> dict:
    """What ``cbdsl submit --json`` printed (its progress goes to stderr), or {} when it printed nothing."""
    try:
        return json.loads(text)
    except ValueError:
        return {}


if __name__ == "__main__":
    sys.exit(main())
