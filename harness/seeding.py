"""Per-sample seeds.

A sampled output depends only on (base seed, prompt id, sample index): not on the
strategy, the unit, the actor that ran it or how many replicas there were. Sharing seeds
across strategies gives paired comparisons common random numbers.
"""

from __future__ import annotations

import hashlib


def sample_seed(base_seed: int, prompt_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}\0{prompt_id}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
