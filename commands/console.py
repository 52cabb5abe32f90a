"""What the console script (:mod:`cbdsl.entry`) and the click commands share, without click.

Exit codes, for every command: 0 ok (warnings allowed); 1 a policy has
errors, a submission was refused or failed, or the ledger is damaged or does
not verify; 2 usage error (bad flag, missing file, unknown iteration); 3
internal error (a bug in cbdsl, E900).

Click is not imported here: ``cbdsl check FILE...`` runs without it.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UsageProblem(Exception):
    """A mistake in how cbdsl was called (a missing file, a bad pool): exit 2 with this message."""


def read_policy(path: str) -> tuple[str, str]:
    """(text, display name) of a policy path, ``-`` meaning stdin.

    The bytes are decoded as they are, without newline translation: spans are
    byte offsets into the file, and the CLI and the API (given the same text)
    report the same positions whether lines end in ``\r\n``, ``\r`` or ``\n``.
    """
    if path == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        data, name = (stdin.read() if stdin is not None else sys.stdin.read()), "<stdin>"
    else:
        name = path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise UsageProblem(f"cannot read {path}: {err.strerror}") from err
    if isinstance(data, str):  # a stdin without bytes underneath (a test's StringIO)
        return data, name
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as err:
        raise UsageProblem(f"{name} is not UTF-8 text ({err.reason} at byte {err.start})") from err


#: Import names whose pip package has another name (what a missing-module message tells to install).
PIP_NAMES = {"faiss": "faiss-cpu", "open_clip": "open_clip_torch", "sklearn": "scikit-learn", "PIL": "pillow",
             "fasttext": "fasttext-wheel", "py3langid": "py3langid"}


def report_internal_error(err: Exception) -> None:
    """A bug in cbdsl, told in two lines without a traceback (CBDSL_DEBUG=1 shows it); a dependency missing
    from this environment is said as such, with what to install (an environment's gap, not a bug)."""
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        print(f"error [E901]: the Python package `{PIP_NAMES.get(top, top)}` (module `{err.name}`) is not installed "
              "in this environment, and this command needs it: install cbdsl's dependencies again (`./setup.sh`, "
              f"or `pip install -e .`), or `pip install {PIP_NAMES.get(top, top)}`", file=sys.stderr, flush=True)
        return
    print(f"internal error [E900]: {type(err).__name__}: {err}\n"
          "This is a bug in cbdsl, not in your policy. Please report it to the cbdsl issue tracker "
          "with the policy file and the command you ran (set CBDSL_DEBUG=1 for the traceback).",
          file=sys.stderr, flush=True)
