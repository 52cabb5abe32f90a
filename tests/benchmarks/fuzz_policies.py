"""Fuzz the front end: seeded mutations of every policy in examples/ and tests/bad/.

The promise under test (issue 13): for any text, `cbdsl check` and `cbdsl fmt`
answer with diagnostics, never a traceback or an internal error (E900), in
time linear in the text, and what `fmt` writes parses back to the same policy
and formats to itself. Each case is one mutation of one corpus file (a byte
flip, a token deleted, swapped, repeated or replaced, a truncation, unicode
inserted, line ends turned into CRLF or lone CR, deep nesting of parentheses,
calls, lists, `not` or `-`, a long `and` / `or` / `+` chain, a huge file, or a
few of these at once). Each case runs in this process, as the CLI runs it:

- check: ``check_source`` (parse, resolve, type check; no pool), as `cbdsl check` does;
- fmt: ``parse_diagnostics`` then ``format_policy``, as `cbdsl fmt` does;
- round trip: the formatted text parses to an equal policy and formats to itself;
- line ends: a case whose line ends were changed reports the same codes at the same
  line:column as its `\\n` form; every span lies inside the text.

with a timer per case (a case over ``--slow`` seconds is slow; one over
``--timeout`` is stopped and counted), and with only ``--frames`` stack
frames to spare, as under a caller already some hundreds of frames deep.
It prints one JSON object: the counts, the slowest cases, and every failure
with the command that replays it.

    .venv/bin/python tests/benchmarks/fuzz_policies.py [--mutations 2000] [--seed 0]
    .venv/bin/python tests/benchmarks/fuzz_policies.py --seed 0 --replay 1234 [--dump case.cur]
    .venv/bin/python tests/benchmarks/fuzz_policies.py --large [--runs 3]

``--replay INDEX`` runs case INDEX of seed ``--seed`` again and shows its
mutation, outcome and any traceback; ``--dump FILE`` writes its text (bytes
as the CLI would read them). ``--large`` times the named large inputs of
issue 13 (the 142 KB `and` chain with one error, 10,000-deep parentheses, a
150 KB file) cold through the CLI (`cbdsl check`, `cbdsl fmt --check`) and in
process. tests/test_fuzz.py runs the same mutators at small sizes on every
test run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "examples").glob("*.cur")) + sorted((ROOT / "tests" / "bad").glob("*.cur"))

# --- mutators: (rng, text, scale) -> (text, what was done) -------------------------------------

#: Sizes of the heavy mutations at scale 1.0; the test suite runs them smaller.
DEPTHS = (20, 50, 99, 100, 101, 150, 300, 486, 1000, 3000, 10_000)
CHAIN_LENGTHS = (20, 50, 100, 101, 150, 500, 1000, 3000, 6000, 10_000)
HUGE_BYTES = (20_000, 50_000, 100_000, 150_000)

_TOKEN = re.compile(r"\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9_.eE]*%?"
                    r"|==|!=|<=|>=|\s+|.", re.DOTALL)
_VOCABULARY = ["filter", "let", "pool", "select", "budget", "mix", "dedup", "cite", "adapt", "policy", "fliter",
               "and", "or", "not", "in", "per", "among", "by", "top", "of", "tokens", "true", "false", "x",
               "words", "(", ")", "[", "]", "{", "}", ",", ":", "=", "==", "<", ">=", "+", "-", "*", "/", "%",
               "#", '"', "'", "\\", "@", "&&", ";", "0", "1e999", "0.5", "30%", "\n", "\n\n", ""]
_UNICODE = ["é", "ß", "☕", "中文", "🙂", "\u200b", "\u200f", "\u00a0", "\u2028", "\u0085", "\ufeff", "\u0301",
            "\U0001f600", "\x00", "\x1b", "\ufffd", "\u3000", "\udc80"]
_CONDITIONS = ["x > 1", "words(text) > 2", "clip >= quantile(clip, 0.3) per source", "source in ['a', \"b\"]",
               "not matches(text, \"a|b\")", "len(text) + 1 <= 2 * width"]


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _spots(tokens: list[str]) -> list[int]:
    return [i for i, t in enumerate(tokens) if not t.isspace()] or [0]


def byte_flip(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    done = []
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256) if rng.random() < 0.5 else data[at] ^ (1 << rng.randrange(8))
        done.append(at)
    return data.decode("utf-8", errors="replace"), f"bytes changed at {done}"


def token_edit(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    tokens = _tokens(text) or [""]
    spots = _spots(tokens)
    done = []
    for _ in range(rng.randint(1, 3)):
        at = rng.choice(spots) if tokens else 0
        kind = rng.choice(["delete", "swap", "repeat", "replace"])
        if kind == "delete":
            tokens[at] = ""
        elif kind == "swap":
            other = rng.choice(spots)
            tokens[at], tokens[other] = tokens[other], tokens[at]
        elif kind == "repeat":
            tokens[at] = tokens[at] * rng.randint(2, 3)
        else:
            tokens[at] = rng.choice(_VOCABULARY)
        done.append(f"{kind}@{at}")
    return "".join(tokens), " ".join(done)


def truncate(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    at = rng.randint(0, len(text))
    return text[:at], f"cut at {at} of {len(text)}"


def unicode(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    chars = list(text)
    done = []
    for _ in range(rng.randint(1, 4)):
        at, what = rng.randint(0, len(chars)), rng.choice(_UNICODE)
        chars.insert(at, what)
        done.append(f"{ascii(what)}@{at}")
    return "".join(chars), " ".join(done)


def line_ends(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    style = rng.choice(["crlf", "cr", "mixed"])
    lf = _as_lf(text)
    if style == "crlf":
        return lf.replace("\n", "\r\n"), style
    if style == "cr":
        return lf.replace("\n", "\r"), style
    return "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lf.split("\n")[:-1]) + lf.split("\n")[-1], style


def _as_lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pick(rng: random.Random, sizes: tuple[int, ...], scale: float) -> int:
    return max(2, int(rng.choice(sizes) * scale))


def _with_clause(rng: random.Random, text: str, clause: str) -> str:
    """``text`` with ``clause`` added on its own line, at the end or between two lines."""
    lines = text.split("\n")
    at = rng.randint(0, len(lines))
    return "\n".join(lines[:at] + [clause] + lines[at:])


# What closes each opener of a deep nest; some put the nest in the middle of a list, call or comparison.
_CLOSERS = {"(": ")", "f(": ")", "[": "]", "-": "", "not ": "", "g(a=": ")", "q(x) among (": ")", "[x, ": ", x]",
            "h(1, ": ", k=2)", "x < (": ") < y"}


def deep_nesting(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    depth = _pick(rng, DEPTHS, scale)
    kind = rng.choice(["parens", "call", "list", "minus", "not", "mixed"])
    openers = {"parens": ["("], "call": ["f(", "h(1, "], "list": ["[", "[x, "], "minus": ["-"], "not": ["not "],
               "mixed": list(_CLOSERS)}[kind]
    closers = _CLOSERS
    chosen = [rng.choice(openers) for _ in range(depth)]
    inner = rng.choice(_CONDITIONS)
    body = "".join(chosen) + inner + "".join(closers[o] for o in reversed(chosen))
    broken = rng.random() < 0.25
    if broken and ")" in body:
        cut = body.rindex(")")
        body = body[:cut] + body[cut + 1:]  # one closer missing: the error path with a deep parser stack
    return _with_clause(rng, text, f"filter {body} > 0"), f"{kind} x{depth}{' unclosed' if broken else ''}"


def long_chain(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    length = _pick(rng, CHAIN_LENGTHS, scale)
    op = rng.choice(["and", "or", "+"])
    sep = rng.choice([f" {op} ", f" {op}\n    ", f"\n    {op} "])
    terms = [f"words(text) > {i}" if op != "+" else f"w{i}" for i in range(length)]
    error = ""
    if rng.random() < 0.5:
        at = rng.randrange(length)
        terms[at], error = rng.choice([("words(text) >> 3", ">>"), ("x @ 1", "@"), ("", "missing term"),
                                       ("f(x", "unclosed"), ("'abc", "unterminated string"), ("1e999", "E011")])
        error = f", {error} at term {at}"
    chain = sep.join(terms) + (" > 1" if op == "+" else "")
    return _with_clause(rng, text, f"filter {chain}"), f"{op} x{length}{error}"


def huge(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    target = _pick(rng, HUGE_BYTES, scale)
    body = text if text.strip() else 'filter x > 1\n'
    copies = max(1, target // max(1, len(body)))
    out = (body.rstrip("\n") + "\n") * copies
    error = ""
    if rng.random() < 0.5:
        out, error = token_edit(rng, out, scale)
        error = f", then {error}"
    return out, f"{copies} copies ({len(out.encode())} bytes){error}"


def combined(rng: random.Random, text: str, scale: float) -> tuple[str, str]:
    done = []
    for _ in range(rng.randint(2, 3)):
        name = rng.choice(SMALL)
        text, what = MUTATORS[name](rng, text, scale)
        done.append(f"{name}({what})")
    return text, " + ".join(done)


MUTATORS = {f.__name__: f for f in (byte_flip, token_edit, truncate, unicode, line_ends, deep_nesting, long_chain,
                                     huge, combined)}
SMALL = ("byte_flip", "token_edit", "truncate", "unicode", "line_ends")


@dataclass
class Case:
    seed: int
    index: int
    file: str
    mutator: str
    detail: str
    text: str
    original: str

    @property
    def replay(self) -> str:
        return f".venv/bin/python tests/benchmarks/fuzz_policies.py --seed {self.seed} --replay {self.index}"


def make_case(seed: int, index: int, scale: float = 1.0, corpus: list[Path] = CORPUS,
              mutator: str | None = None) -> Case:
    """Case ``index`` of ``seed``: always the same file, mutation and text."""
    rng = random.Random(f"{seed}:{index}")
    path = corpus[index % len(corpus)]
    original = path.read_text(encoding="utf-8")
    name = mutator or rng.choice(list(MUTATORS))
    text, detail = MUTATORS[name](rng, original, scale)
    return Case(seed, index, str(path.relative_to(ROOT)), name, detail, text, original)


# --- running one case ------------------------------------------------------------------------


@dataclass
class Outcome:
    check_s: float = 0.0
    fmt_s: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # kind -> what happened (a traceback's tail)
    codes: list[str] = field(default_factory=list)


class _Timeout(BaseException):
    """A case over its time limit (not an Exception: the API's boundary must not turn it into an E900)."""


def _stop(_signum, _frame):
    raise _Timeout()


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _tail(err: BaseException) -> str:
    return "".join(traceback.format_exception(err)[-3:]).strip()[-600:]


def _positions(text: str, diags) -> list[tuple]:
    from cbdsl.dsl.diagnostics import Source, position

    source = Source(text)
    return [(d.code, *position(d, source).values()) for d in diags]


def run_case(text: str, frames: int = 600, timeout: float = 30.0) -> Outcome:
    """Check, format and round-trip one text with a timer, as the CLI would, with ``frames`` stack frames left."""
    from cbdsl.stages import check_source
    from cbdsl.dsl.format import format_policy
    from cbdsl.dsl.parser import parse, parse_diagnostics

    out = Outcome()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_depth() + frames)
    previous = signal.signal(signal.SIGALRM, _stop) if timeout else None
    step = "check"
    try:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        start = time.perf_counter()
        try:
            _policy, diags = check_source(text, "fuzz.cur")
        except _Timeout:
            raise
        except BaseException as err:  # noqa: BLE001 - anything escaping the API's boundary is a traceback
            out.failures["traceback"] = _tail(err)
            diags = []
        out.check_s = time.perf_counter() - start
        out.codes = [d.code for d in diags]
        internal = [d.message for d in diags if d.code == "E900"]
        if internal:
            out.failures["e900"] = internal[0]
        size = len(text.encode("utf-8", "surrogatepass"))
        if any(d.span is not None and not 0 <= d.span.start <= d.span.end <= size for d in diags):
            out.failures["span_outside_text"] = str([(d.code, d.span) for d in diags][:3])
        if "\r" in text and not internal:
            same = _positions(text, diags) == _positions(_as_lf(text), check_source(_as_lf(text), "fuzz.cur")[1])
            if not same:
                out.failures["line_end_mismatch"] = "positions differ from the text with \\n line ends"
        step = "fmt"
        start = time.perf_counter()
        try:
            policy, _diags = parse_diagnostics(text, "fuzz.cur")
            formatted = format_policy(policy) if policy is not None else None
        except _Timeout:
            raise
        except BaseException as err:  # noqa: BLE001
            out.failures["fmt_crash"] = _tail(err)
            policy = formatted = None
        out.fmt_s = time.perf_counter() - start
        if formatted is not None:
            step = "round trip"
            try:
                again = parse(formatted, "formatted.cur")
                if again != policy or format_policy(again) != formatted:
                    out.failures["round_trip"] = "the formatted text parses to another policy or formats differently"
            except _Timeout:
                raise
            except BaseException as err:  # noqa: BLE001
                out.failures["round_trip"] = _tail(err)
    except _Timeout:
        out.failures["timeout"] = f"stopped after {timeout} s in {step}"
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        sys.setrecursionlimit(limit)
    return out


# --- the run ---------------------------------------------------------------------------------

KINDS = ("traceback", "e900", "fmt_crash", "round_trip", "line_end_mismatch", "span_outside_text", "timeout")


def fuzz(mutations: int, seed: int, slow: float, frames: int, timeout: float, top: int) -> dict:
    counts = {kind: 0 for kind in KINDS} | {"slow": 0}
    by_mutator: dict[str, int] = {}
    worst: list[tuple[float, dict]] = []
    failures: list[dict] = []
    times = []
    started = time.perf_counter()
    for index in range(mutations):
        case = make_case(seed, index)
        outcome = run_case(case.text, frames, timeout)
        by_mutator[case.mutator] = by_mutator.get(case.mutator, 0) + 1
        seconds = max(outcome.check_s, outcome.fmt_s)
        times.append(seconds)
        about = {"index": index, "file": case.file, "mutation": f"{case.mutator}: {case.detail}"[:300],
                 "bytes": len(case.text.encode("utf-8", "surrogatepass")), "check_s": round(outcome.check_s, 3),
                 "fmt_s": round(outcome.fmt_s, 3), "codes": sorted(set(outcome.codes))[:6], "replay": case.replay}
        if seconds > slow:
            counts["slow"] += 1
        for kind, what in outcome.failures.items():
            counts[kind] += 1
            if len(failures) < 50:
                failures.append({**about, "failure": kind, "what": what})
        worst.append((seconds, about))
        worst = sorted(worst, key=lambda w: -w[0])[:top]
        if (index + 1) % 1000 == 0:
            print(f"{index + 1} cases, {time.perf_counter() - started:.0f} s: {counts}", file=sys.stderr, flush=True)
    ordered = sorted(times)
    return {
        "mutations": mutations, "seed": seed, "corpus_files": len(CORPUS), "counts": counts,
        "ok": all(v == 0 for v in counts.values()),
        "by_mutator": dict(sorted(by_mutator.items())),
        "seconds_per_case": {"median": round(statistics.median(ordered), 4),
                             "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3), "max": round(ordered[-1], 3)},
        "slow_s": slow, "frames": frames, "elapsed_s": round(time.perf_counter() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "slowest": [about for _s, about in worst], "failures": failures,
    }


def replay(seed: int, index: int, dump: str | None, frames: int, timeout: float) -> dict:
    case = make_case(seed, index)
    if dump:
        Path(dump).write_bytes(case.text.encode("utf-8", "surrogatepass"))
    outcome = run_case(case.text, frames, timeout)
    return {"index": index, "seed": seed, "file": case.file, "mutation": case.mutator, "detail": case.detail,
            "bytes": len(case.text.encode("utf-8", "surrogatepass")), "check_s": round(outcome.check_s, 3),
            "fmt_s": round(outcome.fmt_s, 3), "codes": outcome.codes[:20], "failures": outcome.failures,
            "text_head": case.text[:300]}


# --- the large inputs of issue 13, timed cold through the CLI ---------------------------------


def large_inputs() -> dict[str, bytes]:
    """The named inputs: what the fuzzer of issue 13 found slowest, rebuilt deterministically."""
    head = 'policy "chain"\npool "demo"\n\n'
    terms = [f"words(text) > {i}" for i in range(6200)]  # 142 KB
    chain = head + "filter " + " and ".join(terms) + "\n"
    wrong = list(terms)
    wrong[-2] = "words(text) >> 3"  # one error near the end: the worst place for re-parsing
    chain_error = head + "filter " + " and ".join(wrong) + "\n"
    examples = "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.cur")))
    huge = examples * (150_000 // len(examples))
    commented = head + "".join(f"# why {i}\nfilter words(text) > {i}  # tuned\n" for i in range(3600))
    return {
        "and_chain_one_error_142k": chain_error.encode(),
        "and_chain_one_error_142k_crlf": chain_error.replace("\n", "\r\n").encode(),
        "and_chain_valid_142k": chain.encode(),
        "parens_10000_deep": (head + "filter " + "(" * 10_000 + "x" + ")" * 10_000 + " > 1\n").encode(),
        "calls_10000_deep_unclosed": (head + "filter " + "f(" * 10_000 + "x" + ")" * 9_999 + " > 1\n").encode(),
        "examples_repeated_150k": huge.encode(),
        "examples_repeated_150k_one_error": (huge[:len(huge) // 2] + "filter x @ 1\n" + huge[len(huge) // 2:]).encode(),
        "commented_filters_150k": commented.encode(),
        "commented_filters_150k_one_error": (commented + "filter x @ 1\n").encode(),
    }


def _cold(cmd: list[str], runs: int) -> float:
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True)
        walls.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1) or b"Traceback" in proc.stderr:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode()[-2000:]}")
    return statistics.median(walls)


def large(runs: int) -> dict:
    import shutil
    import tempfile

    from cbdsl.stages import check_source
    from cbdsl.dsl.format import format_policy
    from cbdsl.dsl.parser import parse_diagnostics

    cbdsl = shutil.which("cbdsl", path=str(Path(sys.executable).parent)) or "cbdsl"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in large_inputs().items():
            path = Path(tmp) / f"{name}.cur"
            path.write_bytes(data)
            text = data.decode()
            check_s, fmt_s = [], []
            for _ in range(runs):
                start = time.perf_counter()
                _policy, diags = check_source(text, name)
                check_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                policy, _ = parse_diagnostics(text, name)
                if policy is not None:
                    format_policy(policy)
                fmt_s.append(time.perf_counter() - start)
            results[name] = {
                "bytes": len(data), "codes": sorted({d.code for d in diags}),
                "cli_check_s": round(_cold([cbdsl, "check", str(path)], runs), 3),
                "cli_fmt_check_s": round(_cold([cbdsl, "fmt", "--check", str(path)], runs), 3),
                "in_process_check_s": round(statistics.median(check_s), 3),
                "in_process_fmt_s": round(statistics.median(fmt_s), 3),
            }
    worst = max(max(r["cli_check_s"], r["cli_fmt_check_s"]) for r in results.values())
    return {"runs": runs, "inputs": results, "slowest_cli_s": worst, "target_s": 1.0, "meets_target": worst < 1.0,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=2000, help="cases in all, spread over the corpus files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=int, metavar="INDEX", help="run case INDEX of --seed again and show it")
    parser.add_argument("--dump", metavar="FILE", help="with --replay: write the case's text there")
    parser.add_argument("--slow", type=float, default=1.0, help="seconds over which a check or fmt is slow")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds after which a case is stopped")
    parser.add_argument("--frames", type=int, default=600, help="stack frames left to each case")
    parser.add_argument("--top", type=int, default=10, help="slowest cases to show")
    parser.add_argument("--large", action="store_true", help="time the named large inputs through the CLI")
    parser.add_argument("--runs", type=int, default=3, help="with --large: runs per input, median")
    args = parser.parse_args()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if args.large:
        result = large(args.runs)
    elif args.replay is not None:
        result = replay(args.seed, args.replay, args.dump, args.frames, args.timeout)
    else:
        result = fuzz(args.mutations, args.seed, args.slow, args.frames, args.timeout, args.top)
    print(json.dumps(result, indent=2, ensure_ascii=True))
    if not args.large and args.replay is None and not result["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
