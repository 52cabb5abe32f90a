"""CLIP: cbdsl-tiny (tinyclip), its teacher, and the clip_score / image_embedding / text_embedding scorers.

Fast tests use random or briefly trained weights and tiny configs; the ones
that need the real teacher (trained once, about a minute, then cached under
``$CBDSL_HOME/models``) are marked slow.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import open_clip
import polars as pl
import pytest
import torch

from cbdsl.stages import compile_source
from cbdsl.stages import check_source
from cbdsl.stages import lower
from cbdsl.pipelines.data.demo import generate_clean, make_demo
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset, write_pool
from cbdsl.scorers.api import ScoreContext
from cbdsl.scaffolds.catalogue import get_method
from cbdsl.scorers.models import clip_eval, clip_loading, clip_training, teacher, tinyclip
from cbdsl.scorers.models.images import ImagePrep, decode
from cbdsl.scorers.models.recipe import Recipe
from cbdsl.scorers.registry import registry

#: A config small enough that training it takes a second or two.
MICRO = tinyclip.TinyConfig(embed_dim=16, patch_size=8, vision_width=32, vision_layers=1, vision_head_width=16,
                            context_length=16, text_width=32, text_heads=1, text_layers=1)
QUICK = dataclasses.replace(teacher.TEACHER, rows=256, steps=4, batch_size=64, warmup=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """cbdsl-tiny weights after a few steps of training (random-ish, but a real checkpoint file)."""
    data = generate_clean(256, 5, stream="teacher")
    model = tinyclip.build(seed=3)
    clip_training.train(model, data["image"].to_list(), data["text"].to_list(),
                        Recipe(steps=3, batch_size=64, threads=1))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    tinyclip.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return generate_clean(96, 9, stream="eval")


@pytest.fixture(scope="module")
def weights_pool(tmp_path_factory, checkpoint, rows) -> Pool:
    """A small pool of ``rows`` with ``checkpoint`` registered as the model asset ``tiny-ckpt``."""
    path = tmp_path_factory.mktemp("wpool") / "pool"
    write_pool(rows, path, name="w")
    return add_asset(path, "tiny-ckpt", checkpoint, kind="model")


@pytest.fixture
def small_teacher(tmp_path, monkeypatch):
    """Make the default teacher a 4-step one under a private CBDSL_HOME, so policies can use it fast."""
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(teacher, "TEACHER", QUICK)
    return tmp_path / "home" / "models"


def score(entry_id: str, columns: list[pl.Series], pool: Pool | None = None, **params):
    entry = registry().get(entry_id)
    ctx = ScoreContext(params=entry.params.model_validate(params), pool=pool, ids=pl.Series(range(len(columns[0]))))
    return entry.compute(ctx, *columns)


def independent(model, images: list[bytes], texts: list[str]) -> np.ndarray:
    """The cosine computed apart from the scorer: open_clip's own transform per image, numpy normalization."""
    transform = tinyclip.preprocess()
    x = torch.stack([transform(decode(b)) for b in images])
    with torch.no_grad():
        a = model.encode_image(x).double().numpy()
        b = model.encode_text(tinyclip.tokenize(texts)).double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


# ---------------------------------------------------------------- tinyclip


def test_build_is_open_clip_and_seeded() -> None:
    a, b = tinyclip.build(MICRO, seed=1), tinyclip.build(MICRO, seed=1)
    assert isinstance(a, open_clip.CLIP)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = tinyclip.build(MICRO, seed=2)
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)
    tokens = tinyclip.tokenize(["a red circle"], MICRO)
    assert tokens.shape == (1, MICRO.context_length) and tokens.dtype == torch.int64


def test_tokenizer_needs_no_download() -> None:
    tokens = tinyclip.tokenize(["a small red striped circle in the top left corner", "été"])
    assert tokens.shape == (2, tinyclip.TINY.context_length)
    assert int(tokens[0, 0]) == 49406 and 49407 in tokens[0].tolist()  # open_clip's start and end tokens


def test_register_makes_open_clip_build_it(tmp_path) -> None:
    name = tinyclip.register(MICRO, name="cbdsl-micro-test", directory=tmp_path)
    model = open_clip.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tinyclip.build(MICRO).parameters())


def test_mini_config_is_open_clips_resnet_and_trains_deterministically(tmp_path) -> None:
    cfg = tinyclip.MINI.open_clip_config()["vision_cfg"]
    assert cfg["layers"] == [1, 1, 1, 1] and "patch_size" not in cfg
    assert "patch_size" in tinyclip.TINY.open_clip_config()["vision_cfg"]  # the teacher's ViT keeps its config
    assert tinyclip.TinyConfig(vision_layers=[1, 1, 1, 1], vision_width=16, vision_head_width=16) == tinyclip.MINI
    model = open_clip.create_model(tinyclip.register(tinyclip.MINI, name="cbdsl-mini-test", directory=tmp_path))
    built = tinyclip.build(tinyclip.MINI, seed=0)
    assert type(model.visual) is type(built.visual) is open_clip.model.ModifiedResNet
    assert [p.shape for p in model.parameters()] == [p.shape for p in built.parameters()]
    x = torch.rand(8, 3, 32, 32)
    tokens = tinyclip.tokenize(["a red circle", "a blue square"] * 4)
    recipe = Recipe(steps=2, batch_size=4, threads=1)
    a, b = (clip_training.train(tinyclip.build(tinyclip.MINI, seed=0), x, tokens, recipe) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert tinyclip.encode_images(a, x).shape == (8, tinyclip.MINI.embed_dim)


def test_image_prep_equals_the_open_clip_transform() -> None:
    """The split path (PIL steps on threads, normalize per batch) is the transform itself, up to rounding."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((32, 32), (20, 45), (7, 9), (64, 48))]
    files = []
    for p in pictures:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="PNG")
        files.append(buf.getvalue())
    for size, transform in ((32, tinyclip.preprocess()), (224, open_clip.image_transform(224, is_train=False))):
        prep = ImagePrep.from_transform(transform, size)
        pixels, ok = prep.batch([*files, b"not an image", None])
        assert ok.tolist() == [True] * 4 + [False, False]
        fast = prep.normalize(torch.from_numpy(pixels[:4]))
        slow = torch.stack([transform(decode(f)) for f in files])
        assert fast.shape == slow.shape and torch.allclose(fast, slow, atol=1e-5)


def test_train_callback_sees_per_sample_losses() -> None:
    data = generate_clean(100, 4, stream="teacher")
    model = tinyclip.build(MICRO)
    steps = []
    clip_training.train(model, data["image"].to_list(), data["text"].to_list(),
                        Recipe(steps=5, batch_size=40, lr=1e-3, threads=1), callback=steps.append)
    assert [s.step for s in steps] == list(range(5))
    assert [s.epoch for s in steps] == [0, 0, 1, 1, 2] and [s.epoch_end for s in steps] == [False, True, False, True, True]
    first = steps[0]
    assert first.losses.shape == (40,) and first.indices.shape == (40,)
    assert abs(float(first.losses.mean()) - first.loss) < 1e-5  # the mean of the per-sample losses is CLIP's loss
    assert len(set(first.indices.tolist())) == 40 and not model.training


def test_train_is_deterministic_and_restores_global_state() -> None:
    data = generate_clean(64, 4, stream="teacher")
    x, t = tinyclip.load_images(data["image"].to_list(), MICRO), tinyclip.tokenize(data["text"].to_list(), MICRO)
    torch.manual_seed(123)
    before = torch.rand(1)
    recipe = Recipe(steps=3, batch_size=32, seed=5, threads=1)
    models = [clip_training.train(tinyclip.build(MICRO, seed=7), x, t, recipe) for _ in range(2)]
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # build's seeding does not leak into the caller's RNG
    assert not torch.are_deterministic_algorithms_enabled()
    for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(p, q)


def test_deterministic_kernels_without_the_nan_fill_and_restored() -> None:
    import torch.utils.deterministic as det

    assert det.fill_uninitialized_memory  # torch's default
    with clip_training.deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled() and not det.fill_uninitialized_memory
    assert not torch.are_deterministic_algorithms_enabled() and det.fill_uninitialized_memory


def test_the_gpu_training_context_holds_attention_to_its_math_kernel_and_restores_everything() -> None:
    """What `deterministic_algorithms(cuda=True)` changes for a GPU training, checked where it can be: the
    flags and the attention kernels (on a CPU a fused kernel is then refused), all restored after. Whether a
    GPU run is then the same bytes twice is measured on the device (NOTES.md)."""
    import os

    import torch.nn.functional as F

    cuda = torch.backends.cuda

    def kernels():
        return (cuda.math_sdp_enabled(), cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
                cuda.cudnn_sdp_enabled())

    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"  # set on import, before any cuBLAS call
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, kernels())
    q = torch.randn(1, 2, 4, 8)
    with clip_training.deterministic_algorithms(cuda=True):
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert kernels() == (True, False, False, False)  # math only
        assert torch.equal(F.scaled_dot_product_attention(q, q, q), F.scaled_dot_product_attention(q, q, q))
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, kernels()) == before
    assert not torch.are_deterministic_algorithms_enabled()


def test_encoders_give_unit_vectors(rows) -> None:
    model = tinyclip.build(MICRO)
    img = tinyclip.encode_images(model, rows["image"].to_list(), batch_size=40)
    txt = tinyclip.encode_texts(model, rows["text"].to_list(), batch_size=40)
    assert img.shape == txt.shape == (len(rows), MICRO.embed_dim) and img.dtype == torch.float32
    assert torch.allclose(img.norm(dim=1), torch.ones(len(rows)), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(len(rows)), atol=1e-5)


def test_teacher_is_deterministic_and_reused(tmp_path) -> None:
    """Two fresh trainings (tiny config) give the same file; a present checkpoint is reused, not retrained."""
    runs = [teacher.teacher(tmp_path / name, config=MICRO, recipe=QUICK) for name in ("a", "b")]
    (_, path_a, sha_a), (_, path_b, sha_b) = runs
    assert sha_a == sha_b == tinyclip.file_sha256(path_a)
    assert path_a.name == path_b.name and path_a.name.startswith("cbdsl-tiny-teacher-")
    mtime = path_a.stat().st_mtime_ns
    model, path, sha = teacher.teacher(tmp_path / "a", config=MICRO, recipe=QUICK)
    assert (path, sha) == (path_a, sha_a) and path.stat().st_mtime_ns == mtime
    meta = path.with_suffix(".json").read_text()
    assert '"zero_shot_accuracy"' in meta and '"seconds"' in meta
    other = teacher.teacher_path(tmp_path / "a", config=MICRO, recipe=dataclasses.replace(QUICK, steps=5))
    assert other != path  # the recipe is part of the key


# ---------------------------------------------------------------- the scorers


def test_entries_are_registered_once_as_gpu_model_scorers() -> None:
    reg = registry()
    for name, output in (("clip_score", "float"), ("image_embedding", "embedding"), ("text_embedding", "embedding")):
        entry = reg.get(name)
        assert entry is not None and entry.compute is not None and entry.cost == "gpu_model"
        assert entry.output == output and entry.method == "clip_score" and entry.version is not None
    assert reg.get("clip_score").signature() == (
        'clip_score(image, text, model="cbdsl-tiny", pretrained="", checkpoint="", batch_size=auto, prefix="", '
        'scale="cosine")')


def test_clip_score_equals_an_independent_computation(checkpoint, rows, weights_pool) -> None:
    images, texts = rows["image"].to_list(), rows["text"].to_list()
    kw = {"pool": weights_pool, "checkpoint": "tiny-ckpt"}
    got = score("clip_score", [rows["image"], rows["text"]], batch_size=40, **kw)
    assert got.dtype == pl.Float32 and got.null_count() == 0
    expected = independent(tinyclip.load(checkpoint), images, texts)
    np.testing.assert_allclose(got.to_numpy(), expected, atol=2e-5)
    scaled = score("clip_score", [rows["image"], rows["text"]], scale="clipscore", **kw)
    np.testing.assert_allclose(scaled.to_numpy(), 2.5 * np.maximum(expected, 0), atol=5e-5)
    prefixed = score("clip_score", [rows["image"], rows["text"]], prefix="A photo depicts", **kw)
    np.testing.assert_allclose(prefixed.to_numpy(),
                               independent(tinyclip.load(checkpoint), images, [f"A photo depicts {t}" for t in texts]),
                               atol=2e-5)


def test_embeddings_are_unit_float32_arrays_and_bad_rows_are_null(rows, weights_pool) -> None:
    images = rows["image"].to_list()
    images[3] = b"\x89PNG broken"
    texts = rows["text"].to_list()
    texts[5] = None
    image_series, text_series = pl.Series(images, dtype=pl.Binary), pl.Series(texts, dtype=pl.String)
    kw = {"pool": weights_pool, "checkpoint": "tiny-ckpt"}
    img = score("image_embedding", [image_series], **kw)
    txt = score("text_embedding", [text_series], **kw)
    for series in (img, txt):
        assert series.dtype == pl.Array(pl.Float32, tinyclip.TINY.embed_dim) and len(series) == len(rows)
    assert img.is_null().to_list().index(True) == 3 and img.null_count() == 1
    assert txt.is_null().to_list().index(True) == 5 and txt.null_count() == 1
    for series in (img.drop_nulls(), txt.drop_nulls()):
        np.testing.assert_allclose(np.linalg.norm(series.to_numpy(), axis=1), 1.0, atol=1e-5)
    cos = score("clip_score", [image_series, text_series], **kw)
    assert cos.is_null().to_list()[3] and cos.is_null().to_list()[5] and cos.null_count() == 2
    both = (img.to_numpy() * txt.to_numpy()).sum(1)
    keep = [i for i in range(len(rows)) if i not in (3, 5)]
    np.testing.assert_allclose(cos.to_numpy()[keep], both[keep], atol=2e-5)


def test_inputs_are_required_and_params_are_checked() -> None:
    def errors(text: str) -> list[tuple[str, str]]:
        _, diags = check_source(text, "p.cur", {"id": "str", "image": "binary", "text": "str"})
        return [(d.code, d.message) for d in diags if d.is_error]

    assert errors("let c = clip_score(image, text)\nfilter c > 0.2") == []
    assert errors('let c = clip_score(image, text, model="ViT-L-14", pretrained="openai", scale="clipscore")\n'
                  "filter c > 0.2") == []
    assert errors("let c = clip_score()\nfilter c > 0.2")[0][0] == "E211"
    assert errors("let c = clip_score(text, image)\nfilter c > 0.2")[0][0] == "E207"
    code, message = errors('let c = clip_score(image, text, model="ViT-B-32")\nfilter c > 0.2')[0]
    assert code == "E209" and 'pretrained="openai"' in message and "checkpoint" in message
    assert errors('let c = clip_score(image, text, pretrained="openai")\nfilter c > 0.2')[0][0] == "E209"
    assert errors('let c = clip_score(image, text, scale="cos")\nfilter c > 0.2')[0][0] == "E209"
    assert errors("dedup semantic(image_embedding(image), eps=0.05)") == []


@pytest.mark.parametrize("method", ["clip_score", "datacomp_clip_score", "laion_clip_threshold"])
def test_catalogue_canonical_forms_check_clean(method: str) -> None:
    _, diags = check_source(get_method(method).canonical, f"{method}.canonical")
    assert [d.message for d in diags if d.is_error] == []


# ---------------------------------------------------------------- a policy, end to end


@pytest.fixture
def demo_pool(tmp_path) -> Pool:
    return Pool.open(make_demo(tmp_path / "demo", rows=500, seed=3))


def run(text: str, pool: Pool):
    compiled = compile_source(text, "policy.cur", pool)
    return execute(lower(compiled.plan, pool.schema), pool)


POLICY = "let clip = clip_score(image, text)\nfilter clip >= quantile(clip, 0.3)\n"


def test_policy_runs_and_the_second_run_computes_nothing(demo_pool, small_teacher, monkeypatch) -> None:
    calls: list[int] = []
    original = clip_loading.embed

    def counting(ctx, images, texts):
        calls.append(len(images if images is not None else texts))
        return original(ctx, images, texts)

    monkeypatch.setattr(clip_loading, "embed", counting)
    first = run(POLICY, demo_pool)
    assert calls == [500] and first.selection.height == 350  # the 30% quantile keeps 70% (no ties, no nulls)
    files = sorted(Path(demo_pool.scores_dir).glob("clip_score-*.parquet"))
    assert len(files) == 1 and any(small_teacher.glob("cbdsl-tiny-teacher-*.safetensors"))
    mtime = files[0].stat().st_mtime_ns
    second = run(POLICY, demo_pool)
    assert calls == [500], "the second run must read the score file, not compute"
    assert files[0].stat().st_mtime_ns == mtime
    assert second.selection_hash() == first.selection_hash()
    cached = pl.read_parquet(files[0])
    assert cached.height == 500 and cached["value"].dtype == pl.Float32

    run(POLICY.replace("clip_score(image, text)", 'clip_score(image, text, scale="clipscore")'), demo_pool)
    assert calls == [500, 500]
    assert len(list(Path(demo_pool.scores_dir).glob("clip_score-*.parquet"))) == 2  # a parameter changes the key


def test_teacher_identity_is_in_the_cache_key(demo_pool, small_teacher, monkeypatch) -> None:
    run(POLICY, demo_pool)
    monkeypatch.setattr(teacher, "TEACHER", dataclasses.replace(QUICK, steps=5))  # another teacher
    run(POLICY, demo_pool)
    assert len(list(Path(demo_pool.scores_dir).glob("clip_score-*.parquet"))) == 2


def test_a_bogus_pretrained_tag_is_a_clear_error(demo_pool) -> None:
    text = 'let clip = clip_score(image, text, model="ViT-B-32", pretrained="no-such-tag")\nfilter clip > 0.2\n'
    with pytest.raises(RunError) as err:
        run(text, demo_pool)
    assert "no pretrained tag `no-such-tag` for model `ViT-B-32`" in err.value.message
    assert any("openai" in h for h in err.value.hints) and any("checkpoint=" in h for h in err.value.hints)


def test_an_unknown_model_and_a_missing_or_wrong_checkpoint_are_clear_errors(weights_pool, tmp_path) -> None:
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, model="ViT-B-23", pretrained="openai")\nfilter c > 0.2\n', weights_pool)
    assert "no model `ViT-B-23`" in err.value.message and any("ViT-B-32" in h for h in err.value.hints)
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, checkpoint="tiny-ckp")\nfilter c > 0.2\n', weights_pool)
    assert "names the asset `tiny-ckp`, which pool `w` does not have" in err.value.message
    assert "`tiny-ckpt` (model)" in err.value.message and "--kind model" in err.value.hints[0]
    (tmp_path / "corpus.txt").write_text("a red circle\n")
    pool = add_asset(weights_pool.path, "some-corpus", tmp_path / "corpus.txt", kind="corpus")
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, checkpoint="some-corpus")\nfilter c > 0.2\n', pool)
    assert "needs an asset of kind `model`, but `some-corpus` is of kind `corpus`" in err.value.message
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    pool = add_asset(weights_pool.path, "junk", tmp_path / "junk.safetensors")
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, checkpoint="junk")\nfilter c > 0.2\n', pool)
    assert "checkpoint `junk` does not hold cbdsl-tiny weights" in err.value.message


def test_known_tag_without_weights_says_which_and_how(demo_pool, monkeypatch) -> None:
    """Offline, a known tag fails at once (no minute of retries), naming the weights and the checkpoint way out."""
    import huggingface_hub as hub
    cfg = open_clip.get_pretrained_cfg("RN50", "openai")
    model_id, filename = os.path.split(cfg["hf_hub"])  # as open_clip reads it
    if isinstance(hub.try_to_load_from_cache(model_id, filename or "open_clip_pytorch_model.bin"), str):
        pytest.skip("these weights are in the local Hugging Face cache")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, model="RN50", pretrained="openai")\nfilter c > 0.2\n', demo_pool)
    assert "could not load the `openai` weights of open_clip model `RN50`" in err.value.message
    assert any("checkpoint=" in h and "without internet" in h for h in err.value.hints)


def _scores(pool: Pool) -> dict[str, pl.DataFrame]:
    return {f.name: pl.read_parquet(f) for f in Path(pool.scores_dir).glob("clip_score-*.parquet")}


def test_checkpoint_asset_end_to_end_and_its_content_in_the_cache_key(tmp_path, rows) -> None:
    """A cbdsl-tiny weights file registered as a model asset scores as the weights themselves; new weights under the
    same name give a new cache entry, the same weights again none."""
    write_pool(rows, tmp_path / "pool", name="w")
    policy = 'let c = clip_score(image, text, checkpoint="my-clip")\nfilter c >= quantile(c, 0.5)\n'
    files = []
    for seed in (4, 5, 4):
        weights = tmp_path / f"tiny-{seed}.safetensors"
        tinyclip.save(tinyclip.build(seed=seed), weights)
        pool = add_asset(tmp_path / "pool", "my-clip", weights, kind="model")
        assert run(policy, pool).selection.height == 48
        files.append(sorted(_scores(pool)))
    assert len(files[0]) == 1 and len(files[1]) == 2 and files[2] == files[1]  # seed 4 again: its scores are there
    cached = _scores(pool)[files[0][0]]
    got = dict(zip(cached["id"].to_list(), cached["value"].to_list(), strict=True))
    expected = independent(tinyclip.load(tmp_path / "tiny-4.safetensors"), rows["image"].to_list(),
                           rows["text"].to_list())
    np.testing.assert_allclose([got[i] for i in rows["id"].to_list()], expected, atol=2e-5)


def test_open_clip_model_with_a_checkpoint_asset_file_or_folder(weights_pool, tmp_path) -> None:
    """Any open_clip architecture takes a weights asset; an open_clip model folder (open_clip_config.json and
    weights, what `local-dir:` loads) names its own architecture."""
    import json

    tinyclip.register(MICRO, name="cbdsl-micro-ckpt", directory=tmp_path)
    model = tinyclip.build(MICRO, seed=4)
    tinyclip.save(model, tmp_path / "micro.safetensors")
    folder = tmp_path / "micro-folder"
    folder.mkdir()
    tinyclip.save(model, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": MICRO.open_clip_config()}))
    pool = add_asset(weights_pool.path, "micro", tmp_path / "micro.safetensors")
    pool = add_asset(pool.path, "micro-dir", folder)
    by_file = run('let c = clip_score(image, text, model="cbdsl-micro-ckpt", checkpoint="micro")\n'
                  "filter c >= quantile(c, 0.5)\n", pool)
    by_folder = run('let c = clip_score(image, text, checkpoint="micro-dir")\nfilter c >= quantile(c, 0.5)\n', pool)
    assert by_file.selection.height == by_folder.selection.height == 48
    assert by_file.selection_hash() == by_folder.selection_hash()  # the same weights, loaded either way
    with pytest.raises(RunError) as err:
        run('let c = clip_score(image, text, model="ViT-B-32", checkpoint="micro-dir")\nfilter c > 0\n', pool)
    assert "open_clip model folder" in err.value.message and "leave `model` out" in err.value.hints[0]
    entry = registry().get("clip_score")
    assert entry.version(entry.params(model="cbdsl-micro-ckpt", checkpoint="micro")) == "cbdsl-micro-ckpt:checkpoint:micro"


# ---------------------------------------------------------------- the real teacher (slow)


@pytest.mark.slow
def test_teacher_is_reused_and_knows_the_attributes() -> None:
    model, path, sha = teacher.teacher()
    again, path2, sha2 = teacher.teacher()
    assert (path2, sha2) == (path, sha)
    acc = clip_eval.zero_shot_accuracy(model, rows=500)
    assert acc["captions"]["mean"] > 2 * acc["captions"]["chance"]
    assert acc["words"]["mean"] > 1.5 * acc["words"]["chance"]
    assert acc["mismatch_auc"] > 0.9


@pytest.mark.slow
def test_teacher_scores_mismatched_captions_lower(tmp_path) -> None:
    pool = Pool.open(make_demo(tmp_path / "demo", rows=600, seed=0))
    compiled = compile_source("let clip = clip_score(image, text)\nfilter clip > -2\n", "p.cur", pool)
    result = execute(lower(compiled.plan, pool.schema), pool)
    assert result.selection.height == 600
    scores = pl.read_parquet(next(Path(pool.scores_dir).glob("clip_score-*.parquet")))
    labels = pool.read_asset("demo-defects")
    joined = scores.join(labels, on="id")
    mismatched = joined.filter(pl.col("mismatched"))["value"].mean()
    clean = joined.filter(~pl.col("mismatched") & ~pl.col("spam") & ~pl.col("blank"))["value"].mean()
    assert mismatched < clean - 0.1, (mismatched, clean)
    spam = joined.filter(pl.col("spam"))["value"].mean()
    assert spam < clean
