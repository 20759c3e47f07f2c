"""Hand-made sample rows: whole report rows (:func:`make_rows`) for the Parquet tests, rows as
the scorer sees them (:func:`row`) for the metric tests, and a unit file whose data pages
are corrupted behind an intact footer (:func:`corrupt_data_pages`)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from harness import metrics as M


def make_rows(unit_id: str, n: int, strategy: str):
    return [{
        "run_id": "r1", "unit_id": unit_id, "model_ref": "m", "strategy_name": strategy, "strategy_label": strategy,
        "strategy_id": "sid", "strategy_params": json.dumps({}), "prompt_set": "s", "prompt_id": f"p{i}",
        "prompt_hash": "h", "prompt": f"prompt {i}", "reference": "x" if i % 2 else None, "aliases": ["y"],
        "sample_index": 0, "seed": 123, "base_seed": 0, "completion": f"out {i}", "prompt_tokens": 5,
        "completion_tokens": 3, "finish_reason": "eos", "latency_s": 0.1, "unit_seconds": 1.0, "cached_tokens": 0,
        "engine_requests": 1, "computed_tokens": 8, "steps": [{"token_id": 1, "logprob": -0.5}] if i == 0 else None,
        "error": None, "exact_match": 1.0 if i % 2 else None,
    } for i in range(n)]


def row(completion, **kw):
    base = {"unit_id": "u1", "prompt_id": "p1", "prompt_set": "s", "base_seed": 0, "sample_index": 0,
            "prompt": "Question: ?\nAnswer:", "reference": None, "aliases": [], "completion": completion,
            "completion_tokens": 10, "finish_reason": "length", "latency_s": 0.5, "unit_seconds": 2.0,
            "computed_tokens": 30, "error": None}
    base.update(kw)
    return base


def score(name, rows):
    M.score_rows(rows, [name])
    return [r[name] for r in rows]


def corrupt_data_pages(path: Path) -> None:
    """Flip bytes inside the first column chunk's data; the footer stays intact and readable."""
    md = pq.ParquetFile(path).metadata
    col = md.row_group(0).column(md.schema.names.index("completion"))
    start = col.data_page_offset + 20
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + 16, col.data_page_offset + col.total_compressed_size)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).metadata[b"deceval"]  # the footer still says "unit X, done"
