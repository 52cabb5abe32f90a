"""Model parameters name pool assets, never files (design rule 8).

A policy reads only the pool and the scorers, so weights, a from_pretrained
folder or a tokenizer reach it as a ``model`` asset of the pool
(``cbdsl pool add-asset POOL NAME PATH --kind model``), named in the policy
(``checkpoint="my-clip"``, ``tokenizer="gpt2-tok"``). :func:`asset_name` is
the check-time half (a parameter validator: no pool, no Polars, no torch);
:func:`model_asset` the run-time half, through the pool card.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_core import PydanticCustomError

from cbdsl.pipelines.data.card import ASSET_NAME
from cbdsl.scorers.api import read_asset

LOCAL_DIR = "local-dir:"
#: Suffixes of files that hold a model or a tokenizer: a value ending in one is a file, not a name.
FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json", ".model", ".onnx", ".npz", ".gguf",
                 ".h5", ".msgpack", ".txt")


def looks_like_path(value: str, *, slash: bool = True) -> bool:
    """A file path rather than a name: absolute or relative path syntax, a model file's suffix, or a file on disk.

    ``slash=False`` lets a ``/`` pass (open_clip spells some model names ``ViT-B/32``)."""
    if value.startswith(("/", "~", "./", "../", LOCAL_DIR)) or "\\" in value or (slash and "/" in value):
        return True
    return Path(value).suffix.lower() in FILE_SUFFIXES or os.path.exists(value)


def register_fix(param: str, value: str) -> str:
    """The hint that turns a path into an asset: the command to register it and the parameter to write."""
    path = value[len(LOCAL_DIR):] if value.startswith(LOCAL_DIR) else value
    return (f"register it with `cbdsl pool add-asset POOL NAME {path} --kind model` and write "
            f'{param}="NAME"')


def path_error(param: str, value: str, *, fix_param: str | None = None) -> PydanticCustomError:
    """The check error for a path given where a model is named (E209 with the fix as its hint)."""
    return PydanticCustomError(
        "asset_path", "`{value}` is a file path: a policy names a pool asset, never a file",
        {"value": value, "hint": register_fix(fix_param or param, value)})


def asset_name(param: str, value: str) -> str:
    """``value`` when it can name a model asset; else the check error with the fix (a validator's body)."""
    if looks_like_path(value):
        raise path_error(param, value)
    if not ASSET_NAME.fullmatch(value):
        raise PydanticCustomError(
            "asset_name", "`{value}` is not an asset name (lower case letters, digits and _ . -)",
            {"value": value, "hint": f'name a model asset of the pool: {param}="my-model"; '
                                     f"{register_fix(param, 'PATH')}"})
    return value


def model_asset(pool, name: str, who: str) -> tuple[Path, str]:
    """The file or directory of the pool's model asset ``name`` and its sha256; a RunError with the fix when
    ``name`` is missing or of another kind."""
    path = read_asset(pool, name, ("model",), who)
    return path, pool.card.assets[name].sha256
