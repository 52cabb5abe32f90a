"""The scaffold rules as warnings of `cbdsl check`, for a policy inside a scaffolded sandbox.

Apart from :mod:`cbdsl.pipelines.loop.sandbox`, so that a check outside a sandbox loads neither the ledger
nor the scaffold rules (`cbdsl check` imports this module only when the policy sits in a sandbox).
"""

from __future__ import annotations

from pathlib import Path

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic
from cbdsl.pipelines.loop.ledger import Ledger, LedgerError
from cbdsl.pipelines.loop.sandbox import SandboxError, load
from cbdsl.scaffolds.modes import history_of, scaffold_warnings


def sandbox_scaffold_warnings(policy: ast.Policy, root: Path) -> list[Diagnostic]:
    """:func:`~cbdsl.scaffolds.modes.scaffold_warnings` for a policy inside the sandbox at ``root``, against its
    ledger (what `cbdsl check` adds to a policy's diagnostics)."""
    try:
        cfg = load(root)
    except SandboxError:
        return []  # `cbdsl submit` reports a broken cbdsl.toml; check is about the policy
    if cfg.scaffold in ("open", "guide"):
        return []
    history = []
    if (cfg.state / "ledger.sqlite").is_file():
        try:
            ledger = Ledger(cfg.state / "ledger.sqlite")
            try:
                history = history_of(ledger.entries())
            finally:
                ledger.close()
        except LedgerError:
            return []  # a damaged ledger is `cbdsl verify`'s and `submit`'s to report; check is about the policy
    return scaffold_warnings(policy, cfg.scaffold, history)
