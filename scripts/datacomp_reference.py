"""DataComp's own baseline code against cbdsl's examples on one DataComp metadata folder.

    python scripts/datacomp_reference.py --datacomp DATACOMP_CHECKOUT --metadata METADATA_DIR \
        [--centroids C.npy --target-clusters IDS.txt] [--work DIR] [--workers N]

METADATA_DIR is DataComp's download layout (``NNNNNNNN.parquet`` shards, each with its ``.npz``).
For each baseline this runs DataComp's functions from ``baselines/apply_filter.py`` of the
checkout (``load_uids``, ``load_uids_with_basic_filter``, ``load_uids_with_clip_score``,
``image_filter_helper`` with ``get_threshold``), sorts and ``np.save``-s the uids as
``apply_filter`` does, runs the matching example of ``examples/`` with ``cbdsl run --format
datacomp`` on the folder imported by ``cbdsl pool import datacomp``, and compares the two
``.npy`` files byte for byte. One line per baseline; exit 1 on any difference.

DataComp's code needs pandas < 3 (it pins 1.5.1; pandas 3 refuses its ``list & Series`` in
``caption_filter``), so run it where that pandas is first on the path, e.g.
``pip install --target /tmp/pd2 "pandas==2.2.3" pytz`` then ``PYTHONPATH=/tmp/pd2 python ...``.
It also needs ``fsspec`` and ``tqdm`` (both come with cbdsl's test extra).

What cannot run offline is replaced, on both sides alike ("language aside"):
- fastText's ``lid.176.bin`` and gcld3 (language identification) say "en" for every caption, and
  the examples' `lang(text) == "en"` filters are dropped. ``fasttext.tokenize`` is the real one
  (the ``fasttext-wheel`` package);
- ``nltk`` and ``gcld3`` are imported by apply_filter but used only by baselines not run here;
  empty stand-ins are put in ``sys.modules`` when they are not installed;
- the image-based baselines need the pool's k-means centroids and the target cluster ids, which
  DataComp downloads (and computes from ImageNet-1k): pass them as ``--centroids`` (a k x d
  ``.npy``) and ``--target-clusters`` (one id per line); without them those two baselines are
  skipped. Without CUDA, ``get_centroid_ids_gpu`` is run on the CPU: the same einsum and argmax.
- the CLIP-score examples compute their score with ``clip_score(...)``; on DataComp's metadata
  they read the score DataComp ships (``clip_l14_similarity_score``, ``clip_b32_similarity_score``).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGLISH = "__label__en"

# baseline -> (example, textual changes that make the example read DataComp's metadata)
EXAMPLES = {
    "no_filter": ("datacomp_no_filter", {}),
    "basic_filter": ("datacomp_basic", {}),
    "clip_score_l14_30": ("datacomp_clip_l14_top30", {
        r'let clip = clip_score\(image, text, model="ViT-L-14", pretrained="openai"\)':
            "let clip = clip_l14_similarity_score"}),
    "laion2b": ("laion_clip_b32_028", {
        r'let clip = clip_score\(image, text, model="ViT-B-32", pretrained="openai"\)':
            "let clip = clip_b32_similarity_score"}),
    "image_based": ("datacomp_image_based", {}),
    "image_based_intersect_clip_score_l14_30": ("datacomp_image_based_and_clip", {}),
}


class _EnglishModel:
    """Stands in for fastText's lid.176.bin: every text is English (one text or a list, as predict takes)."""

    def predict(self, text, k=1):
        if isinstance(text, str):
            return (ENGLISH,), np.ones(1)
        return [[ENGLISH] for _ in text], [np.ones(1) for _ in text]


class _EnglishGcld3:
    def __init__(self, *args, **kwargs):
        pass

    def FindLanguage(self, text):  # noqa: N802 - gcld3's name
        return types.SimpleNamespace(language="en")


def load_datacomp(checkout: Path):
    """DataComp's apply_filter module from a checkout, with the offline stand-ins above."""
    sys.path.insert(0, str(checkout))
    for name in ("nltk", "nltk.corpus"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.modules["nltk.corpus"].wordnet = getattr(sys.modules["nltk.corpus"], "wordnet", None)
    sys.modules["nltk"].corpus = sys.modules["nltk.corpus"]
    gcld3 = sys.modules.setdefault("gcld3", types.ModuleType("gcld3"))
    import fasttext

    from baselines import apply_filter as af

    gcld3.NNetLanguageIdentifier = _EnglishGcld3
    af.gcld3 = gcld3
    fasttext.load_model = lambda path: _EnglishModel()
    af.download = lambda name, root=None: f"(offline {name})"
    import torch

    if not torch.cuda.is_available():
        def get_centroid_ids_cpu(features, centroids, batch_size, device):
            labels = torch.zeros(features.shape[0], dtype=torch.long)
            for i in range(0, features.shape[0], batch_size):
                similarity = torch.einsum("ik, jk -> ij", features[i:i + batch_size, :].float(), centroids)
                labels[i:i + batch_size] = torch.argmax(similarity, dim=1).long()
            return labels

        af.get_centroid_ids_gpu = get_centroid_ids_cpu
    return af


def image_uids(af, metadata: Path, centroids: Path, clusters: Path, fraction: float | None, workers: int):
    """image_filter_helper over every shard in this process (load_uids_with_image_filter's worker loop)."""
    import fsspec
    import torch

    pool_centroids = torch.from_numpy(np.load(centroids).astype(np.float32))
    target = torch.tensor([int(line) for line in clusters.read_text().split()], dtype=torch.long).unique()
    fs, url = fsspec.core.url_to_fs(str(metadata))
    send, receive = mp.Queue(), mp.Queue()
    roots = [(fs, str(x.split(".parquet")[0])) for x in fs.ls(url) if ".parquet" in x]
    for job in roots:
        send.put(job)
    arch = threshold = None
    if fraction is not None:
        arch = "l14"
        threshold = af.get_threshold(str(metadata), "clip_l14_similarity_score", fraction, workers)
    af.image_filter_helper(pool_centroids, target, 1024, 0, send, receive, arch=arch, threshold=threshold)
    return np.concatenate([receive.get(timeout=60) for _ in roots])


def datacomp_subset(af, name: str, args) -> bytes:
    m, w = str(args.metadata), args.workers
    if name == "no_filter":
        uids = af.load_uids(m, w)
    elif name == "basic_filter":
        uids = af.load_uids_with_basic_filter(m, w)
    elif name == "clip_score_l14_30":
        uids = af.load_uids_with_clip_score(m, "l14", None, 0.3, w)
    elif name == "laion2b":
        uids = af.load_uids_with_clip_score(m, "b32", 0.28, None, w, gcld3_en_filter=True)
    else:
        fraction = 0.3 if name.startswith("image_based_intersect") else None
        uids = image_uids(af, args.metadata, args.centroids, args.target_clusters, fraction, w)
    uids.sort()
    out = io.BytesIO()
    np.save(out, uids)
    return out.getvalue()


def language_aside(text: str, subs: dict[str, str]) -> str:
    """The example without its language filter, reading the scores DataComp ships."""
    text = re.sub(r'^filter lang\(text\) == "en"\n', "", text, flags=re.MULTILINE)
    for pattern, replacement in subs.items():
        text = re.sub(pattern, replacement, text)
    return text


def cbdsl(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cbdsl", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cbdsl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def cbdsl_subset(name: str, pool: Path, work: Path) -> bytes:
    example, subs = EXAMPLES[name]
    policy = work / f"{example}.cur"
    policy.write_text(language_aside((ROOT / "examples" / f"{example}.cur").read_text(encoding="utf-8"), subs),
                      encoding="utf-8")
    cbdsl("run", str(policy), "--pool", str(pool), "--format", "datacomp", "--out", str(work / name))
    return (work / name / "subset.npy").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datacomp", type=Path, required=True, help="a mlfoundations/datacomp checkout")
    parser.add_argument("--metadata", type=Path, required=True, help="DataComp metadata: parquet + npz shards")
    parser.add_argument("--centroids", type=Path, help="the pool's k-means centroids (.npy), for image-based")
    parser.add_argument("--target-clusters", type=Path, help="target centroid ids, one per line, for image-based")
    parser.add_argument("--work", type=Path, help="where the imported pool and the subsets go (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=2, help="DataComp's num_workers")
    args = parser.parse_args()
    if not (args.datacomp / "baselines" / "apply_filter.py").is_file():
        parser.error(f"{args.datacomp} is not a mlfoundations/datacomp checkout (no baselines/apply_filter.py)")
    image = args.centroids is not None and args.target_clusters is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="datacomp-reference-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = work / "pool"
    if not (pool / "pool.json").is_file():
        cbdsl("pool", "import", "datacomp", str(args.metadata), str(pool))
        if image:
            cbdsl("pool", "add-asset", str(pool), "pool-centroids", str(args.centroids), "--kind", "centroids")
            cbdsl("pool", "add-asset", str(pool), "imagenet1k-clusters", str(args.target_clusters), "--kind", "ids")
    af = load_datacomp(args.datacomp)
    failed = 0
    for name in EXAMPLES:
        if name.startswith("image_based") and not image:
            print(f"{name:<42} skipped (needs --centroids and --target-clusters)")
            continue
        theirs, ours = datacomp_subset(af, name, args), cbdsl_subset(name, pool, work)
        same = theirs == ours
        failed += not same
        n_theirs, n_ours = (len(np.load(io.BytesIO(b))) for b in (theirs, ours))
        print(f"{name:<42} {'identical' if same else 'DIFFERENT'}  DataComp {n_theirs} uids, cbdsl {n_ours}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
