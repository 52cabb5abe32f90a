"""VLMEvalKit's result files read as cbdsl metrics: the instruction-tuning track's evaluation, read back.

Why: LLaVA-1.5's evaluation runs VLMEvalKit (``python run.py --data ... --work-dir OUT``),
which writes one score file per benchmark; the ``command`` and ``ray``
backends read them with ``metrics_format = "vlmevalkit"`` (``metrics`` then
names the folder), so the GPU side needs LLaVA and VLMEvalKit, not cbdsl.

What VLMEvalKit writes (read at open-compass/VLMEvalKit @e8e78f05):

- ``run.py``: model ``M``'s files go to ``OUT/M/T<YYYYMMDD>-<HHMMSS>/`` and each
  is symlinked into ``OUT/M/`` once its dataset is evaluated; a dataset whose
  evaluation raises is logged and skipped, and ``run.py`` still exits 0. So
  every benchmark asked for must have its file, else a BackendError names it.
- ``vlmeval/smp/file.py`` ``dump``: CSV by pandas ``to_csv(index=False,
  quoting=csv.QUOTE_ALL)``.
- Multiple choice (``image_mcq.py`` ``evaluate_heuristic``, ``utils/multiple_choice.py``
  ``report_acc``; MMBench_DEV_EN, SEEDBench_IMG, ScienceQA_TEST):
  ``M_D_acc.csv``, columns ``split, Overall, <categories>``, a row per split,
  accuracies as **fractions** (``np.mean(hit)``).
- VQA (``image_vqa.py`` ``ImageVQADataset.evaluate_heuristic``, ``VizWiz.evaluate``;
  TextVQA_VAL, GQA_TestDev_Balanced, VizWiz): ``M_D_acc.csv``, one row,
  ``Overall`` (and splits or categories) in **percent**; no ``split`` column.
- MME (``utils/yorn.py`` ``MME_rating``): ``M_MME_score.csv``, one row,
  ``perception`` (the sum of 10 categories, each acc + acc+ in percent: 0-2000),
  ``reasoning`` (4 categories: 0-800), then the categories.
- POPE (``POPE_rating``): ``M_POPE_score.csv``, columns ``split, Overall, acc,
  precision, recall``; the ``Overall`` row's ``Overall`` is F1 x 100.
- MMVet (``MMVet.evaluate``, ``utils/mmvet.py`` ``MMVet_acc``; needs a GPT judge):
  ``M_MMVet_<judge>_score.csv``, columns ``Category, tot, acc``; the
  ``Overall`` row's ``acc`` in percent.

cbdsl reports every benchmark in percent (0-100): multiple-choice fractions
x 100, and MME as its total over its maximum, ``(perception + reasoning) /
2800 x 100``, so that the aggregate, the plain mean over benchmarks, weighs
MME like the others (its raw sums are kept under ``details``; LLaVA-1.5's paper
quotes perception alone, 1510.7 for the 7B model).
"""

from __future__ import annotations

import argparse
import csv
import json
from fnmatch import fnmatchcase
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cbdsl.pipelines.loop.backends.base import BackendError, check_metrics

RUN_DIR = re.compile(r"^T\d{8}[-_]")
"""VLMEvalKit's per-run folders inside ``OUT/M/`` (``T20260801-120000``; older: ``T20250101_G<hash>``)."""

MME_MAX = {"perception": 2000.0, "reasoning": 800.0}

SCORE_FILES = ("*_acc.csv", "*_score.csv")
"""The file names the reader reads (what the ray backend ships back from a cluster)."""

FORMATS_READ = ("multiple choice and VQA `M_D_acc.csv`, `M_MME_score.csv`, `M_POPE_score.csv`, "
                "`M_MMVet_<judge>_score.csv`")


def read_results(path: str | Path, benchmarks: Sequence[str] = ()) -> dict[str, Any]:
    """The metrics of the VLMEvalKit results at ``path`` (``OUT/M``, or ``OUT`` holding one model's folder).

    ``benchmarks`` (VLMEvalKit's dataset names) are required, each a BackendError naming its file when it
    is missing or garbled; none given: every result file there."""
    folder = model_folder(Path(path))
    model = folder.name
    names = list(benchmarks) or discover(folder)
    if not names:
        raise _nothing(folder)
    scores: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for name in names:
        file = result_file(folder, model, name)
        scores[name], details[name] = read_benchmark(file, name)
        details[name]["file"] = str(file)
    metrics = {"benchmarks": scores, "aggregate": sum(scores.values()) / len(scores), "scale": "percent",
               "model": model, "details": details}
    return check_metrics(metrics, str(folder))


def model_folder(path: Path) -> Path:
    """``path`` if it holds result files; else its one model folder (``OUT`` given for ``OUT/M``)."""
    if not path.is_dir():
        raise BackendError(f"no VLMEvalKit results folder at {path}: the evaluation wrote nothing there "
                           "(`metrics` names VLMEvalKit's --work-dir or its model folder, relative to {workdir})")
    if any(path.glob("*.csv")):
        return path
    models = [p for p in sorted(path.iterdir()) if p.is_dir() and p.name != "logs" and not RUN_DIR.match(p.name)]
    if len(models) == 1:
        return models[0]
    if models:
        raise BackendError(f"no VLMEvalKit result files in {path}; it holds the folders of {len(models)} models "
                           f"({', '.join(p.name for p in models)}): name one")
    raise _nothing(path)


def _nothing(folder: Path) -> BackendError:
    model = folder.name
    return BackendError(f"no VLMEvalKit result files in {folder}: expected files of model `{model}` such as "
                        f"{model}_MME_score.csv ({FORMATS_READ}); did the evaluation run, and is `{model}` the model "
                        "name it was given?")


def discover(folder: Path) -> list[str]:
    """The benchmarks with a result file in a model folder, sorted."""
    model = folder.name
    found = set()
    for file in folder.glob(f"{model}_*_acc.csv"):
        found.add(file.name[len(model) + 1:-len("_acc.csv")])
    for name in ("MME", "POPE"):
        if (folder / f"{model}_{name}_score.csv").exists():
            found.add(name)
    if any(folder.glob(f"{model}_MMVet_*_score.csv")):
        found.add("MMVet")
    return sorted(found)


def result_file(folder: Path, model: str, name: str) -> Path:
    """The file holding benchmark ``name``'s scores: in the model folder (VLMEvalKit's links), else in its
    latest run folder; a BackendError saying which file it looked for."""
    if name == "MMVet":
        pattern = f"{model}_MMVet_*_score.csv"
    elif name in ("MME", "POPE"):
        pattern = f"{model}_{name}_score.csv"
    elif name.startswith(("MME", "POPE", "MMVet")):
        raise BackendError(f"benchmark {name!r}: cbdsl reads VLMEvalKit's MME, POPE and MMVet score files, not "
                           f"{name}'s; name it as VLMEvalKit does (MME, POPE, MMVet) or drop it")
    else:
        pattern = f"{model}_{name}_acc.csv"
    runs = sorted((p for p in folder.iterdir() if p.is_dir() and RUN_DIR.match(p.name)), reverse=True)
    for place in (folder, *runs):
        hits = sorted(p for p in place.iterdir() if fnmatchcase(p.name, pattern) and "_score_fine" not in p.name)
        if len(hits) > 1:
            raise BackendError(f"benchmark {name}: {len(hits)} files match {place / pattern} "
                               f"({', '.join(p.name for p in hits)}); keep one judge's results")
        if hits:
            if not hits[0].is_file():
                raise BackendError(f"benchmark {name}: {hits[0]} is a broken link (its run folder was removed?)")
            return hits[0]
    raise BackendError(f"benchmark {name}: VLMEvalKit wrote no {folder / pattern}; its evaluation failed or did "
                       "not run (VLMEvalKit logs a failed dataset and goes on: see its log, under the work dir's "
                       "logs/), or the dataset name differs from VLMEvalKit's")


def read_benchmark(file: Path, name: str) -> tuple[float, dict[str, Any]]:
    """One benchmark's score in percent and the raw numbers it came from."""
    rows = _rows(file)
    columns = set(rows[0])
    if name == "MME":
        values = {k: _number(file, rows[0], k, 0.0, top) for k, top in MME_MAX.items()}
        total = values["perception"] + values["reasoning"]
        return total / sum(MME_MAX.values()) * 100, {**values, "sum": total}
    if name == "POPE":
        row = _row(file, rows, "split", "Overall")
        f1 = _number(file, row, "Overall", 0.0, 100.0)
        return f1, {"f1": f1, **{k: _number(file, row, k, 0.0, 100.0) for k in ("acc", "precision", "recall")
                                 if k in row}}
    if name == "MMVet":
        row = _row(file, rows, "Category", "Overall")
        return _number(file, row, "acc", 0.0, 100.0), {"judge": file.name.split("_MMVet_", 1)[1][:-len("_score.csv")]}
    if "split" in columns:  # report_acc: a row per split, fractions
        if len(rows) > 1:
            splits = ", ".join(r["split"] for r in rows)
            raise BackendError(f"{file}: {len(rows)} rows, one per split ({splits}); cbdsl reads the benchmark of one "
                               "split: evaluate a dataset of one split (e.g. MMBench_DEV_EN)")
        fraction = _number(file, rows[0], "Overall", 0.0, 1.0)
        return fraction * 100, {"split": rows[0]["split"], "fraction": fraction}
    return _number(file, rows[0], "Overall", 0.0, 100.0), {}


def _rows(file: Path) -> list[dict[str, str]]:
    try:
        with open(file, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [row for row in reader if any((v or "").strip() for v in row.values())]
            header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BackendError(f"{file}: cannot read it as VLMEvalKit's CSV ({err})") from None
    if not header or not rows:
        raise BackendError(f"{file}: {'empty' if not header else 'a header and no rows'}; VLMEvalKit writes a "
                           "header and at least one row (was the file cut short?)")
    if any(None in row for row in rows):
        raise BackendError(f"{file}: a row has more values than the header has columns (is it garbled?)")
    return rows


def _row(file: Path, rows: list[dict[str, str]], key: str, value: str) -> dict[str, str]:
    if key not in rows[0]:
        raise BackendError(f"{file}: no `{key}` column (its columns: {', '.join(rows[0])})")
    match = [r for r in rows if r[key] == value]
    if not match:
        raise BackendError(f"{file}: no row with {key} = {value} (its {key}s: {', '.join(r[key] for r in rows)})")
    return match[0]


def _number(file: Path, row: dict[str, str], column: str, low: float, high: float) -> float:
    if column not in row:
        raise BackendError(f"{file}: no `{column}` column (its columns: {', '.join(row)})")
    text = (row[column] or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise BackendError(f"{file}: `{column}` is {text!r}, not a number") from None
    if math.isnan(value) or not low <= value <= high:
        raise BackendError(f"{file}: `{column}` is {text}, outside {low:g}-{high:g}; "
                           + ("a fraction is expected here (VLMEvalKit's report_acc)" if high == 1.0
                              else "is this VLMEvalKit's file for this benchmark?"))
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m cbdsl.pipelines.loop.backends.vlmevalkit DIR [--benchmarks A,B] [--out FILE]``: the metrics
    of a VLMEvalKit results folder as cbdsl reads them (printed, or written to FILE)."""
    ap = argparse.ArgumentParser(prog="python -m cbdsl.pipelines.loop.backends.vlmevalkit",
                                 description=main.__doc__.split("\n")[0])
    ap.add_argument("folder", help="VLMEvalKit's --work-dir, or its model folder inside")
    ap.add_argument("--benchmarks", default="", help="comma-separated dataset names that must be there")
    ap.add_argument("--out", help="write the metrics JSON here instead of printing it")
    args = ap.parse_args(argv)
    try:
        metrics = read_results(args.folder, [b for b in args.benchmarks.split(",") if b])
    except BackendError as err:
        print(f"vlmevalkit: {err}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
