"""The test scores: the suite's test part, recorded where the researcher looks and the agent does not.

Why: the feedback an agent reads is what it optimizes; if it were also what
ranks it, an agent could fit the benchmark instead of curating. So a backend
may score a test part of its suite beside the dev part
(:func:`~cbdsl.pipelines.loop.backends.base.split_test`): the dev scores go to
the ledger and the feedback as before; the test scores go only here, one JSON
line per scored iteration in the witness's folder (``<key>.test.jsonl``
beside ``<key>.json``, outside the sandbox, ``$CBDSL_WITNESS_DIR``), and are
read by ``cbdsl leaderboard --test`` and ``cbdsl trajectory --test``.

A line names its iteration, the selection it scored and the suite; a reader
takes the last line of an iteration whose ledger entry is scored with the
same selection and suite, so a line left by a submission that failed after
it was written is never shown.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError

#: Set by ``cbdsl agent run`` in the environment of the agent it starts: the commands that show test scores
#: refuse to run there.
AGENT_ENV = "CBDSL_AGENT_RUN"


def record(witness, n: int, selection_hash: str, suite: str, test: dict[str, Any]) -> None:
    """Append iteration ``n``'s test scores (``{"benchmarks": ..., "aggregate": ...}``) to the record of the
    sandbox of ``witness`` (flushed and fsynced before the ledger entry is finished)."""
    line = json.dumps({"iteration": n, "selection_hash": selection_hash, "suite": suite,
                       "benchmarks": test["benchmarks"], "aggregate": test["aggregate"],
                       "recorded_at": time.time()}, sort_keys=True)
    with witness.locked():
        try:
            fd = os.open(witness.test_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise LedgerError(f"cannot write the test scores to {witness.test_path} ({err.strerror}): set "
                              "CBDSL_WITNESS_DIR to a folder you can write, outside the sandbox") from None


def read(witness, entries) -> dict[int, dict[str, Any]]:
    """The test scores of the scored ``entries`` (ledger entries) by iteration: the last line recorded for
    each with the entry's selection and suite; an iteration without one is left out."""
    try:
        text = witness.test_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise LedgerError(f"cannot read the test scores {witness.test_path} ({err.strerror})") from None
    wanted = {e.n: (e.selection_hash, e.suite) for e in entries if e.status == "scored"}
    out: dict[int, dict[str, Any]] = {}
    lines = text.splitlines()
    for k, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            n = line["iteration"]
            key = (line["selection_hash"], line["suite"])
            float(line["aggregate"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if k == len(lines) and not text.endswith("\n"):
                continue  # a line cut by a crash mid-append: its iteration was never finished
            raise LedgerBroken(f"{witness.test_path}:{k} is not a line cbdsl wrote: restore the file from a backup, "
                               "or remove the line") from None
        if wanted.get(n) == key:
            out[n] = line
    return out


def refuse_in_agent_run(command: str) -> str | None:
    """Why ``command`` (one that would show test scores) may not run here, or None: an agent started by
    ``cbdsl agent run`` must never read the test part."""
    if os.environ.get(AGENT_ENV):
        return (f"`{command}` shows the test scores, which an agent run never sees ({AGENT_ENV} is set): "
                "the researcher runs it outside the agent's session")
    return None
