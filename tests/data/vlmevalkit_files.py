"""VLMEvalKit's result files, written as VLMEvalKit writes them (open-compass/VLMEvalKit @e8e78f05).

Each writer makes the frame VLMEvalKit's code makes and dumps it as its
``dump`` does (pandas ``to_csv(index=False, quoting=csv.QUOTE_ALL)``: every
field quoted, ``\\n`` line ends). :func:`write_run` lays out a run as
``run.py`` does: the files in ``OUT/M/T<YYYYMMDD>-<HHMMSS>/``, each linked
into ``OUT/M/``. Used by the reader's tests and by the stand-in ``run.py`` of
the recipe's end-to-end test. Standard library only (the stand-in runs it).
"""

from __future__ import annotations

import csv
from pathlib import Path

MME_PERCEPTION = ["OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position", "posters",
                  "scene"]
MME_REASONING = ["code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation"]


def dump_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    """pandas' ``to_csv(index=False, quoting=csv.QUOTE_ALL)`` of a frame with these columns and rows."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])


def mcq_acc(path: Path, overall: float, split: str = "none") -> None:
    """``report_acc`` (utils/multiple_choice.py): split, Overall, then l2-category and category columns;
    fractions."""
    dump_csv(path, ["split", "Overall", "coarse_perception", "fine-grained_perception (instance-level)"],
             [[split, overall, min(1.0, overall + 0.05), max(0.0, overall - 0.05)]])


def vqa_acc(path: Path, overall: float, categories: bool = False) -> None:
    """``ImageVQADataset.evaluate_heuristic`` / ``VizWiz.evaluate``: ``d2df`` of Overall (and categories), percent."""
    if categories:
        dump_csv(path, ["Overall", "counting", "reading"], [[overall, overall - 1.5, overall + 2.0]])
    else:
        dump_csv(path, ["Overall"], [[overall]])


def mme_score(path: Path, category: float) -> None:
    """``MME_rating`` (utils/yorn.py): one row, perception, reasoning, then each category's acc + acc+ (0-200)."""
    cats = {c: category for c in MME_PERCEPTION + MME_REASONING}
    perception = sum(cats[c] for c in MME_PERCEPTION)
    reasoning = sum(cats[c] for c in MME_REASONING)
    dump_csv(path, ["perception", "reasoning", *cats], [[perception, reasoning, *cats.values()]])


def pope_score(path: Path, f1: float) -> None:
    """``POPE_rating``: split, Overall (F1 x 100), acc, precision, recall; the Overall row, then the splits."""
    rows = [["Overall", f1, f1 + 1.0, f1 - 2.0, f1 + 3.0]]
    rows += [[s, f1 + d, f1 + d + 1.0, f1 - 2.0, f1 + 3.0] for s, d in (("adversarial", -2.0), ("random", 1.5),
                                                                         ("popular", 0.5))]
    dump_csv(path, ["split", "Overall", "acc", "precision", "recall"], rows)


def mmvet_score(path: Path, overall: float) -> None:
    """``MMVet_acc`` (utils/mmvet.py): Category, tot, acc (percent); capabilities, then Overall."""
    rows = [[c, 50, overall + k] for k, c in enumerate(["rec", "ocr", "know", "gen", "spat", "math"])]
    dump_csv(path, ["Category", "tot", "acc"], rows + [["Overall", 218, overall]])


#: VLMEvalKit dataset -> (score file suffix, writer); scores are on each writer's own scale
WRITERS = {
    "MME": ("_score.csv", mme_score),
    "POPE": ("_score.csv", pope_score),
    "MMBench_DEV_EN": ("_acc.csv", lambda p, s: mcq_acc(p, s, "dev")),
    "SEEDBench_IMG": ("_acc.csv", mcq_acc),
    "ScienceQA_TEST": ("_acc.csv", lambda p, s: mcq_acc(p, s, "test")),
    "TextVQA_VAL": ("_acc.csv", lambda p, s: vqa_acc(p, s, categories=True)),
    "GQA_TestDev_Balanced": ("_acc.csv", vqa_acc),
    "VizWiz": ("_acc.csv", vqa_acc),
}


def write_run(out: Path, model: str, scores: dict[str, float], run: str = "T20260801-120000",
              judge: str = "gpt-4-turbo") -> Path:
    """The files of one VLMEvalKit run of ``model`` (dataset -> score on its writer's scale; ``MMVet`` too),
    in ``out/model/run/`` and linked into ``out/model/``, as run.py leaves them; returns ``out/model``."""
    folder = out / model
    (folder / run).mkdir(parents=True, exist_ok=True)
    for dataset, score in scores.items():
        if dataset == "MMVet":
            name, writer = f"{model}_MMVet_{judge}_score.csv", mmvet_score
        else:
            suffix, writer = WRITERS[dataset]
            name = f"{model}_{dataset}{suffix}"
        writer(folder / run / name, score)
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(run) / name)
    return folder
