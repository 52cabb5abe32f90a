"""Design rule 8 at `cbdsl check`: model, checkpoint and tokenizer parameters name pool assets, never paths.

A path-like value (path syntax, a model file's suffix, or a file that exists)
is E209 with the fix as the first hint: register the file as a ``model``
asset and name it. Names that are not paths (open_clip models and tags, the
Hugging Face hub, builtin tokenizers, asset names) check clean. The run-time
side (missing and wrong-kind assets, cache keys) is tested with each scorer:
tests/test_clip.py, tests/test_text_scorers.py.
"""

from __future__ import annotations

import pytest

from cbdsl.stages import check_source

SCHEMA = {"id": "str", "image": "binary", "text": "str"}


def errors(expr: str) -> list:
    _, diags = check_source(f"let x = {expr}\n", "p.cur", SCHEMA)
    return [d for d in diags if d.is_error]


@pytest.mark.parametrize(("expr", "param", "path"), [
    ('clip_score(image, text, checkpoint="/models/clip/w.safetensors")', "checkpoint", "/models/clip/w.safetensors"),
    ('clip_score(image, text, checkpoint="w.pt")', "checkpoint", "w.pt"),
    ('image_embedding(image, model="ViT-B-32", pretrained="/weights/open_clip.bin")', "checkpoint",
     "/weights/open_clip.bin"),
    ('text_embedding(text, model="local-dir:/models/my-clip")', "checkpoint", "/models/my-clip"),
    ('perplexity(text, checkpoint="~/models/gpt2")', "checkpoint", "~/models/gpt2"),
    ('ccnet_bucket(text, checkpoint="models/gpt2")', "checkpoint", "models/gpt2"),
    ('token_count(text, tokenizer="/tok/tokenizer.json")', "tokenizer", "/tok/tokenizer.json"),
    ('token_count(text, tokenizer="gpt2/")', "tokenizer", "gpt2/"),
])
def test_a_path_is_refused_with_the_register_fix(expr: str, param: str, path: str) -> None:
    found = errors(expr)
    assert [d.code for d in found] == ["E209"], [d.message for d in found]
    assert "never a file" in found[0].message
    assert found[0].hints[0] == (f"register it with `cbdsl pool add-asset POOL NAME {path} --kind model` and write "
                                 f'{param}="NAME"')


def test_a_file_on_disk_is_a_path_even_without_slash(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert errors('perplexity(text, checkpoint="gpt2-small")') == []
    (tmp_path / "gpt2-small").mkdir()
    assert [d.code for d in errors('perplexity(text, checkpoint="gpt2-small")')] == ["E209"]


@pytest.mark.parametrize("expr", [
    'clip_score(image, text, checkpoint="my-clip")',
    'clip_score(image, text, model="ViT-B-32", pretrained="laion2b_s34b_b79k")',
    'clip_score(image, text, model="ViT-B/32", pretrained="openai")',
    'image_embedding(image, model="hf-hub:timm/ViT-B-16-SigLIP")',
    'clip_score(image, text, model="ViT-B-32", checkpoint="b32-weights")',
    'perplexity(text, checkpoint="gpt2-small")',
    'perplexity(text)',
    'token_count(text, tokenizer="gpt2-tok")',
    'token_count(text, tokenizer="bytes")',
])
def test_names_check_clean(expr: str) -> None:
    assert [d.message for d in errors(expr)] == []


def test_a_name_that_is_not_an_asset_name_says_what_one_is() -> None:
    found = errors('perplexity(text, checkpoint="My GPT")')
    assert [d.code for d in found] == ["E209"] and "not an asset name" in found[0].message
    assert 'checkpoint="my-model"' in found[0].hints[0]
