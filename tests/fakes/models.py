"""A built-in model's cache folder that looks prepared but holds no model."""

from __future__ import annotations

import json
from pathlib import Path

from harness.models import MARKER_NAME, get_spec
from harness.models.catalogue import MARKER_FORMAT


def fake_prepared(cache: Path, name: str) -> Path:
    """A folder that looks prepared (valid marker, config, weights file) but holds no model."""
    spec = get_spec(name)
    folder = cache / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 32, "num_attention_heads": 2})
    )
    (folder / "model.safetensors").write_bytes(b"")
    marker = {"format": MARKER_FORMAT, "name": spec.name, "packages": list(spec.packages)}
    (folder / MARKER_NAME).write_text(json.dumps(marker))
    return folder
