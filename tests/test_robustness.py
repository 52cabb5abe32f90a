"""Issue 13: no internal error and no hang for any input, in the API and the CLI alike.

Deep nesting gets E010 (parentheses count) and no stage recurses past the
stack; `check` and `fmt` stay linear in the text; lone CR, CRLF and LF give
the same positions in the CLI and the API, and byte spans point at the file;
an internal error exits 3 in `check` too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cbdsl import entry
from cbdsl.stages import check_source
from cbdsl.dsl import ast
from cbdsl.dsl import parser as parser_module
from cbdsl.dsl.diagnostics import Diagnostic, Source, position, render_all
from cbdsl.dsl.format import canonical_hash, format_policy
from cbdsl.dsl.parser import MAX_DEPTH, parse, parse_diagnostics


def codes(text: str) -> list[str]:
    return [d.code for d in parse_diagnostics(text, "t.cur")[1]]


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The real console script's exit code and output (click's test runner would hide the exit-3 boundary)."""
    return subprocess.run([sys.executable, "-m", "cbdsl", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


# --- nesting: E010, parentheses included, never a RecursionError ------------------------------

NESTS = {
    "parentheses": lambda n: "filter " + "(" * n + "x" + ")" * n + " > 1",
    "minus": lambda n: "filter " + "-" * n + "x > 1",
    "not": lambda n: "filter " + "not " * n + "x",
    "and chain": lambda n: "filter " + " and ".join(["x"] * (n + 1)),
    "sum": lambda n: "filter " + " + ".join(["x"] * (n + 1)) + " > 1",
    "calls": lambda n: "filter " + "f(" * n + "x" + ")" * n + " > 1",
    "keyword arguments": lambda n: "filter " + "f(a=" * n + "x" + ")" * n + " > 1",
    "lists": lambda n: "filter x in " + "[" * n + "1" + "]" * n,
    "middle of lists": lambda n: "filter x in " + "[x, " * n + "1" + ", x]" * n,
    "middle of calls": lambda n: "filter " + "f(1, " * n + "x" + ", k=2)" * n + " > 1",
    "comparisons": lambda n: "filter " + "x < (" * n + "1" + ") < y" * n,
    "among": lambda n: "filter " + "q(x) among (" * n + "x" + ")" * n + " > 1",
}


def deepest(nest) -> int:
    """The deepest ``n`` of a nest that still parses."""
    low, high = 1, 4 * MAX_DEPTH
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if parse_diagnostics(nest(mid))[0] is not None else (low, mid - 1)
    return low


def test_every_kind_of_nesting_counts_toward_e010_parentheses_included():
    for kind, nest in NESTS.items():
        n = deepest(nest)
        assert 0 < n <= MAX_DEPTH, kind
        assert codes(nest(n + 1)) == ["E010"], kind
        assert codes(nest(5_000)) == ["E010"], kind
    assert parse_diagnostics("filter " + "(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1))[0] is not None
    assert codes("filter " + "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1)) == ["E010"]
    # deep input with a syntax error in it gets that error
    assert codes("filter " + "f(" * 10_000 + "x" + ")" * 9_999 + " > 1") == ["E007"]
    assert codes("filter " + "(" * 10_000 + "x @" + ")" * 10_000) == ["E001"]


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _every_stage(text: str) -> list[str]:
    """Parse, format, equality, hash, JSON and the whole check of one policy; the check's codes."""
    policy = parse(text)
    formatted = format_policy(policy)
    assert parse(formatted) == policy
    canonical_hash(policy)
    assert ast.Policy.model_validate_json(policy.model_dump_json()) == policy
    assert policy.transform(lambda node: node) == policy and list(policy.walk())[0] is policy
    return [d.code for d in check_source(text, "deep.cur")[1]]


def test_the_deepest_accepted_policies_pass_every_stage_with_400_frames_to_spare():
    """As under a caller already 600 frames deep (the default limit is 1,000)."""
    limit = sys.getrecursionlimit()
    for kind, nest in NESTS.items():
        text = nest(deepest(nest))
        sys.setrecursionlimit(_depth() + 400)
        try:
            found = _every_stage(text)
        except RecursionError:
            found = ["RecursionError"]
        finally:
            sys.setrecursionlimit(limit)
        assert "E900" not in found and "RecursionError" not in found, kind


def test_deep_parentheses_in_the_cli_are_e010_for_check_fmt_and_parse(tmp_path):
    path = tmp_path / "deep.cur"
    path.write_text('policy "p"\nfilter ' + "(" * 600 + "x" + ")" * 600 + " > 1\n")
    for args in (["check", str(path)], ["fmt", str(path)], ["fmt", "--check", str(path)], ["parse", str(path)]):
        out = cli(*args)
        assert out.returncode == 1, (args, out.stderr[-500:])
        assert "error[E010]" in out.stderr and "E900" not in out.stderr and "Traceback" not in out.stderr
    fast = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['cbdsl', *sys.argv[1:]]; "
                           "from cbdsl.entry import main; main()", "check", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert fast.returncode == 1
    assert [d["code"] for d in json.loads(fast.stdout)["files"][0]["diagnostics"]] == ["E010"]


def test_check_explain_e010_says_parentheses_and_chains_count():
    out = cli("check", "--explain", "E010")
    assert out.returncode == 0
    assert "parentheses" in out.stdout and "`and`" in out.stdout and str(MAX_DEPTH) in out.stdout


# --- linear time ------------------------------------------------------------------------------


class _CountingParser:
    """Wraps the parser's Lark to count the characters it is given to parse."""

    def __init__(self, real):
        self.real, self.chars = real, 0

    def parse(self, text, *args, **kwargs):
        self.chars += len(text)
        return self.real.parse(text, *args, **kwargs)


def _chain(terms: int, error: str, at: int) -> str:
    parts = [f"words(text) > {i}" for i in range(terms)]
    parts[at] = error
    return 'policy "chain"\npool "demo"\n\nfilter ' + " and ".join(parts) + "\n"


@pytest.mark.parametrize("error, at, then", [
    ("words(text) >> 3", -2, ""),             # a wrong token near the end
    ("f(words(text)", -2, "select top x\n"),  # a bracket left open, then another clause: the chunk ends early
    ("words(text) > 3 @", 3000, "budget 10\n"),
])
def test_a_142_kb_chain_with_one_error_is_parsed_about_once(monkeypatch, error, at, then):
    text = _chain(6200, error, at) + then
    assert len(text) > 140_000
    counting = _CountingParser(parser_module.lark_parser())
    monkeypatch.setattr(parser_module, "lark_parser", lambda: counting)
    start = time.perf_counter()
    policy, diags = check_source(text, "chain.cur")
    seconds = time.perf_counter() - start
    assert policy is None and diags and all(d.code.startswith("E0") for d in diags)
    assert counting.chars <= 1.2 * len(text), f"parsed {counting.chars / len(text):.1f} times the text"
    assert seconds < 10  # about 0.3 s here; the bound only catches a hang


def _clauses(n: int, error: bool) -> str:
    text = 'policy "café"\n' + "".join(f"# why {i}\nfilter words(text) > {i}  # tuned\n" for i in range(n))
    return text + ("filter x @ 1\n" if error else "")


def _best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("error", [False, True], ids=["valid", "one error at the end"])
def test_parse_time_grows_linearly_with_commented_clauses(error):
    small, large = _clauses(400, error), _clauses(1600, error)
    ratio = _best_of(3, lambda: parse_diagnostics(large)) / _best_of(3, lambda: parse_diagnostics(small))
    assert ratio < 8, f"4x the clauses took {ratio:.1f}x the time"  # linear: about 4


def test_many_diagnostics_on_one_long_line_print_a_bounded_picture_each():
    text = "filter x in [" + ", ".join(["1e999"] * 3000) + "]\n"  # 21 KB on one line, 3,000 E011
    diags = parse_diagnostics(text, "t.cur")[1]
    assert len(diags) == 3000 and {d.code for d in diags} == {"E011"}
    shown = render_all(diags, Source(text, "t.cur"))
    assert len(shown) < 3000 * 5000  # 2,000 characters of the line at most: whole, 3,000 times 42 KB
    source_line, carets = shown.split("\n\n")[-1].splitlines()[3:5]
    assert source_line.endswith("1e999]") and carets.endswith("^^^^^ no finite value")
    assert source_line.index("1e999]") == carets.index("^")


# --- line ends: the same positions in the CLI and the API -------------------------------------

POLICY_LINES = ['policy "p"  # a comment', 'pool "demo"', "", "filter words(text) > 2 and", "  x >= 1 @", "budget 10"]


def _with(line_end: str) -> bytes:
    return (line_end.join(POLICY_LINES) + line_end).encode()


def _api_positions(data: bytes) -> list[tuple]:
    text = data.decode()
    _policy, diags = check_source(text, "p.cur")
    return [(d.code, *position(d, Source(text, "p.cur")).values()) for d in diags]


def test_line_ends_do_not_change_positions_in_the_api_or_the_cli(tmp_path):
    expected = _api_positions(_with("\n"))
    assert expected[0][:3] == ("E001", 5, 10)
    for line_end in ("\n", "\r\n", "\r"):
        assert _api_positions(_with(line_end)) == expected, repr(line_end)
        path = tmp_path / "p.cur"
        path.write_bytes(_with(line_end))
        out = cli("check", "--json", str(path))
        assert out.returncode == 1
        report = json.loads(out.stdout)["files"][0]["diagnostics"]
        assert [(d["code"], d["line"], d["column"], d["end_line"], d["end_column"]) for d in report] == expected


def test_a_caret_line_shows_the_line_without_its_line_end():
    text = _with("\r\n").decode()
    assert Source(text).line_text(5) == "  x >= 1 @"
    assert Source("a\rb\r\nc\n").line_count == 4 and Source("a\u2028b\x0cc").line_count == 1  # only CR, LF, CRLF


def test_parse_json_spans_point_at_the_file_bytes_whatever_the_line_ends(tmp_path):
    for line_end in ("\n", "\r\n", "\r"):
        data = (line_end.join(['policy "café"', "# note", "filter words(text) > 2", "select top clip"])
                + line_end).encode()
        path = tmp_path / "p.cur"
        path.write_bytes(data)
        out = cli("parse", "--json", str(path))
        assert out.returncode == 0, out.stderr
        policy = ast.Policy.model_validate_json(out.stdout)
        assert policy.model_dump() == parse(data.decode(), str(path)).model_dump()
        spans = {type(n).__name__: data[n.span.start:n.span.end].decode() for n in policy.walk() if n is not policy}
        assert spans["Filter"] == "filter words(text) > 2" and spans["Select"] == "select top clip", repr(line_end)
        assert spans["PolicyClause"] == 'policy "café"'
        assert policy.of_kind(ast.Filter)[0].comments == ("# note",)


def test_fmt_writes_lf_and_its_check_names_line_ends_as_the_only_difference(tmp_path):
    canonical = 'policy "p"\n\npool "demo"\n\nfilter x > 1  # why\n'
    path = tmp_path / "p.cur"
    path.write_bytes(canonical.replace("\n", "\r\n").encode())
    out = cli("fmt", "--check", str(path))
    assert out.returncode == 1 and "only its line ends" in out.stdout
    assert cli("fmt", str(path)).returncode == 0
    assert path.read_bytes() == canonical.encode()
    assert cli("fmt", "--check", str(path)).returncode == 0


def test_a_lone_cr_ends_a_comment_and_a_string():
    policy = parse('filter x > 1  # why\rselect top x\r')
    assert [c.kind for c in policy.clauses] == ["filter", "select"] and policy.clauses[0].trailing == "# why"
    assert codes('filter x == "a\rb"\r') == ["E008"]


def test_a_lone_surrogate_is_a_diagnostic_not_an_exception():
    policy, diags = parse_diagnostics('filter x == "\udc80"\n', "t.cur")
    assert policy is None and [d.code for d in diags] == ["E001"] and diags[0].span.start == 13
    assert "E900" not in [d.code for d in check_source("filter \udc80 > 1")[1]]
    lf, crlf = '# a\nfilter x == "\udc80"\n', '# a\r\nfilter x == "\udc80"\r\n'
    assert [position(d, Source(crlf)) for d in parse_diagnostics(crlf)[1]] == \
           [position(d, Source(lf)) for d in parse_diagnostics(lf)[1]]


# --- internal errors exit 3, check included ---------------------------------------------------


def _internal_error(monkeypatch):
    import cbdsl.compiler.check as check_module

    bug = Diagnostic("E900", "internal error: RuntimeError: kaboom; please report this with the policy file")
    monkeypatch.setattr(check_module, "check_source", lambda *_a, **_k: (None, [bug]))


def test_check_exits_3_when_cbdsl_itself_failed(tmp_path, monkeypatch, capsys):
    _internal_error(monkeypatch)
    path = tmp_path / "p.cur"
    path.write_text('policy "p"\n')
    assert entry.run_check((str(path),), False, None) == entry.EXIT_INTERNAL
    assert "E900" in capsys.readouterr().err
    for main in (entry.main, __import__("cbdsl.cli", fromlist=["main"]).main):
        monkeypatch.setattr(sys, "argv", ["cbdsl", "check", "--json", str(path)])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 3
        assert json.loads(capsys.readouterr().out)["files"][0]["diagnostics"][0]["code"] == "E900"


# --- the parser's fast construction -----------------------------------------------------------


def _node_classes() -> list[type]:
    found, todo = [], [ast.Node]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [cls for cls in found if "node" in cls.model_fields]


@pytest.mark.parametrize("cls", _node_classes(), ids=lambda c: c.__name__)
def test_trusted_builds_what_model_construct_builds(cls):
    span = ast.Span.at(1, 2, "x")
    values = {"span": span}
    required = [name for name, f in cls.model_fields.items() if f.is_required()]
    values.update({name: f"value of {name}" for name in required})
    fast, slow = cls.trusted(**values), cls.model_construct(**values)
    assert list(vars(fast).items()) == list(vars(slow).items())
    assert fast.model_fields_set == slow.model_fields_set
    assert (fast.__pydantic_extra__, fast.__pydantic_private__) == (slow.__pydantic_extra__, slow.__pydantic_private__)
    at, constructed = ast.Span.at(3, 4, "s"), ast.Span.model_construct(start=3, end=4, source="s")
    assert list(vars(at).items()) == list(vars(constructed).items())
    assert at.model_fields_set == constructed.model_fields_set
