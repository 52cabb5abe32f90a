"""The contamination audit: a selection against the evaluation sets registered as pool assets.

The policy language cannot name the evaluation sets (DESIGN 8); this is the
second guard. Each eval asset (kind ``eval``) is a table with a ``text``
column and/or an ``image_sha256`` column. A selected row is flagged when

- its normalized text hashes equal to an eval text's (exact match), or
- its image bytes hash equal to an eval image's, or
- for text-only eval sets, at least ``ngram_flag`` of its word 8-grams occur
  in the eval set (n-gram overlap, as Curation-Bench's audit does).

The verdict: ``clean`` (no row flagged), ``warning`` (under ``high_risk``
of the selection flagged) or ``high risk`` (refused by ``submit``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

import polars as pl

NGRAM = 8


@dataclass(frozen=True)
class AuditPolicy:
    ngram: int = NGRAM
    ngram_flag: float = 0.5  # share of a row's n-grams found in an eval set that flags the row
    high_risk: float = 0.01  # share of flagged rows at which the selection is refused


@dataclass
class AuditResult:
    verdict: str  # clean | warning | high risk
    flagged: int
    rows: int
    by_asset: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)  # a few offending rows: id, asset, reason

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "flagged": self.flagged, "rows": self.rows,
                "by_asset": self.by_asset, "examples": self.examples}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _text_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def _ngrams(text: str, n: int) -> set[str]:
    words = normalize(text).split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _image_hashes(pool, rows: pl.DataFrame) -> list[str | None] | None:
    """The sha256 of each selected row's image: the bytes of a binary ``image`` column; for an ``image`` column
    of paths, the pool's ``image_sha256`` column where it has one (the demo instruction pool), else the files'
    bytes (a missing file is the pool's error, naming it); None when the pool has no images."""
    if "image" not in rows.columns:
        return None
    if pool.schema.get("image") != "image":
        return [hashlib.sha256(b).hexdigest() if b is not None else None for b in rows.get_column("image").to_list()]
    if "image_sha256" in rows.columns:
        return rows.get_column("image_sha256").to_list()
    data = pool.read_images(rows.get_column("image").to_list())
    return [hashlib.sha256(b).hexdigest() if b is not None else None for b in data]


def audit(pool, selection: pl.DataFrame, policy: AuditPolicy = AuditPolicy(), examples: int = 10) -> AuditResult:
    """Audit the selected rows of ``pool`` against every eval asset of the pool."""
    id_col = pool.id_column
    ids = selection.get_column(id_col)
    assets = {name: info for name, info in pool.card.assets.items() if info.kind == "eval"}
    if not assets or ids.len() == 0:
        return AuditResult("clean", 0, ids.len())
    columns = [c for c in ("text", "image", "image_sha256") if c in pool.schema]
    rows = pool.scan([id_col, *columns]).filter(pl.col(id_col).is_in(ids.implode())).collect()
    flagged: dict[str, tuple[str, str]] = {}
    by_asset: dict[str, int] = {}
    texts = rows.get_column("text").to_list() if "text" in rows.columns else None
    image_hashes = _image_hashes(pool, rows)
    row_ids = rows.get_column(id_col).cast(pl.String).to_list()
    for name, _info in sorted(assets.items()):
        table = pool.read_asset(name)
        if not isinstance(table, pl.DataFrame):
            table = pl.DataFrame({"text": list(table)})
        hits = 0
        if "image_sha256" in table.columns and image_hashes is not None:
            eval_images = set(table.get_column("image_sha256").to_list())
            for rid, digest in zip(row_ids, image_hashes):
                if digest is not None and digest in eval_images:
                    flagged.setdefault(rid, (name, "image identical to an eval image"))
                    hits += 1
        elif "text" in table.columns and texts is not None:
            eval_texts = table.get_column("text").fill_null("").to_list()
            exact = {_text_hash(t) for t in eval_texts}
            grams: set[str] = set()
            for t in eval_texts:
                grams |= _ngrams(t, policy.ngram)
            for rid, text in zip(row_ids, texts):
                if text is None:
                    continue
                if _text_hash(text) in exact:
                    flagged.setdefault(rid, (name, "text identical to an eval text"))
                    hits += 1
                    continue
                own = _ngrams(text, policy.ngram)
                if own and len(own & grams) / len(own) >= policy.ngram_flag:
                    share = len(own & grams) / len(own)
                    flagged.setdefault(rid, (name, f"{share:.0%} of its {policy.ngram}-grams occur in the eval set"))
                    hits += 1
        by_asset[name] = hits
    n = ids.len()
    verdict = "clean" if not flagged else ("high risk" if len(flagged) / n >= policy.high_risk else "warning")
    shown = [{"id": rid, "asset": a, "reason": r} for rid, (a, r) in sorted(flagged.items())[:examples]]
    return AuditResult(verdict, len(flagged), n, by_asset, shown)
