"""MAUVE (Pillutla et al. 2021, "MAUVE: Measuring the Gap Between Neural Text and Human
Text using Divergence Frontiers", NeurIPS): how close the distribution of a strategy's
continuations is to the distribution of the human continuations of the same prompts.
A set-level metric: one value per group of rows, between 0 and 1, higher is closer.

What is compared. The rows of one unit are grouped by prompt set; in each group the
references (one per prompt, the human continuations: P) and the completions (one per row:
Q) are featurised and handed to ``mauve.compute_mauve(p_features=..., q_features=...)``
(mauve-text's defaults: k-means on PCA-reduced, l2-normalised features with
``num_buckets = max(2, round(min(|P|, |Q|) / 10))``, scaling factor 5, seed 25). Every row of
the group gets the group's value; rows without a reference or with an empty completion get
None and are left out (mauve-text drops empty texts too). A group of fewer than
:data:`MIN_TEXTS` prompts gets None: a histogram of so few points says nothing.

Features. mauve-text's own featuriser downloads GPT-2 large from a model hub; here no hub
is reached. A text's feature is the final hidden state (after the last norm) at its last
token under a local causal language model in float32, the rule mauve-text applies to GPT-2
large, truncated to :data:`MAX_FEATURE_TOKENS` tokens. The model is the built-in
``smollm2-135m`` (its prepared folder, the one the engine serves), or the built-in name or
Hugging Face folder in ``DECEVAL_MAUVE_FEATURES``. The same featuriser for every strategy
and every generating model, so values compare across them; never across featurisers.

Licence. mauve-text is GPL-3.0: it is an optional extra (``pip install 'deceval[mauve]'``,
with faiss-cpu and scikit-learn) and only imported when the metric is computed. Without it
the metric is unavailable: :func:`mauve_problem` says so and how to install it, the run says
it at its start, and the column stays empty; the run goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np

from harness.metrics.core import is_error, is_missing, register_metric
from harness.models import resolve_model

log = logging.getLogger(__name__)

#: Fewest prompts with a reference (and rows with a completion) a group needs for a value.
MIN_TEXTS = 10
#: Tokens of a text the featuriser reads at most (mauve-text's max_text_length).
MAX_FEATURE_TOKENS = 1024
#: The featuriser's model unless DECEVAL_MAUVE_FEATURES names another (a built-in or a folder).
FEATURE_MODEL = "smollm2-135m"
FEATURE_ENV = "DECEVAL_MAUVE_FEATURES"
#: mauve-text's k-means seed (its default): the same features give the same value.
SEED = 25

INSTALL = "pip install 'deceval[mauve]' (mauve-text, GPL-3.0, with faiss-cpu and scikit-learn)"


def mauve_problem() -> str | None:
    """None when MAUVE can be computed here, else why not and how to install it."""
    missing = [dist for module, dist in (("mauve", "mauve-text"), ("faiss", "faiss-cpu"), ("sklearn", "scikit-learn"))
               if importlib.util.find_spec(module) is None]
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL}"
    return None


def mauve_score(p_features: Any, q_features: Any, *, num_buckets: int | str = "auto", seed: int = SEED) -> float:
    """MAUVE of two feature matrices (n x d and m x d): mauve-text's ``compute_mauve``."""
    problem = mauve_problem()
    if problem is not None:
        raise ImportError(f"metric 'mauve' is unavailable: {problem}")
    import mauve  # GPL-3.0, optional: imported only here
    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1] or not len(p) or not len(q):
        raise ValueError(f"mauve: features must be two non-empty matrices of the same width, got {p.shape} and "
                         f"{q.shape}")
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, seed=seed, verbose=False)
    return float(out.mauve)


class HiddenStateFeaturizer:
    """Texts -> the final hidden state at each text's last token under a causal language
    model folder, in float32 (one row per text). Loaded on first use; features are kept per
    text, so references shared by every strategy of a run are featurised once."""

    def __init__(self, folder: str, batch_size: int = 16) -> None:
        self.folder = folder  # a Hugging Face model folder
        self.batch_size = batch_size  # texts per forward pass
        self._model: Any = None  # the transformers base model (no LM head), float32, eval mode
        self._tokenizer: Any = None
        self._cache: dict[str, np.ndarray] = {}  # text -> its feature

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self._model = AutoModel.from_pretrained(self.folder, dtype=torch.float32).eval()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            if self._model is None:
                self._load()
            self._featurise(todo)
        return np.stack([self._cache[t] for t in texts])

    def _featurise(self, texts: list[str]) -> None:
        import torch
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i:i + self.batch_size]
            ids = [self._tokenizer(t, add_special_tokens=True, truncation=True, max_length=MAX_FEATURE_TOKENS)
                   ["input_ids"] or [self._tokenizer.eos_token_id] for t in chunk]
            width = max(len(x) for x in ids)
            pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
            batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids], dtype=torch.long)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], dtype=torch.long)
            with torch.inference_mode():
                hidden = self._model(input_ids=batch, attention_mask=mask).last_hidden_state
            for j, (t, x) in enumerate(zip(chunk, ids)):
                self._cache[t] = hidden[j, len(x) - 1].to(torch.float32).numpy().copy()
        if len(self._cache) > 50_000:
            self._cache.clear()


_FEATURIZER: HiddenStateFeaturizer | None = None


def featurizer() -> HiddenStateFeaturizer:
    """The process's featuriser: DECEVAL_MAUVE_FEATURES or the built-in smollm2-135m,
    resolved to its prepared folder (prepared now if needed)."""
    global _FEATURIZER
    ref = os.environ.get(FEATURE_ENV) or FEATURE_MODEL
    if _FEATURIZER is None or _FEATURIZER.folder != str(_resolved(ref)):
        _FEATURIZER = HiddenStateFeaturizer(str(_resolved(ref)))
    return _FEATURIZER


def _resolved(ref: str) -> Any:
    return resolve_model(ref, log=lambda *a, **k: None)


def _usable(row: dict[str, Any]) -> bool:
    return (not is_error(row) and isinstance(row.get("completion"), str) and bool(row["completion"].strip())
            and not is_missing(row.get("reference")) and bool(str(row["reference"]).strip()))


def mauve_of_rows(rows: list[dict[str, Any]], features: Callable[[Sequence[str]], np.ndarray]) -> list[float | None]:
    """One value per row: the MAUVE of its group (unit, prompt set) against the group's
    references, featurised by ``features``; None for rows left out and small groups."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if _usable(r):
            groups[(r.get("unit_id"), r.get("prompt_set"))].append(i)
    out: list[float | None] = [None] * len(rows)
    for idx in groups.values():
        references = list({rows[i].get("prompt_id", i): str(rows[i]["reference"]).strip() for i in idx}.values())
        if len(references) < MIN_TEXTS:
            continue
        completions = [rows[i]["completion"].strip() for i in idx]
        value = mauve_score(features(references), features(completions))
        for i in idx:
            out[i] = value
    return out


_WARNED: set[str] = set()


@register_metric("mauve", higher_is_better=True, needs=["reference", "features"], batch=True, default=False,
                 problem=mauve_problem, per_unit=True,
                 description="MAUVE (Pillutla et al. 2021; mauve-text, optional extra 'mauve', GPL-3.0) of the "
                             "completions against the human references of the same unit and prompt set (0-1, higher "
                             "= closer to the human text); features: smollm2-135m's final hidden state at the last "
                             "token, float32; the group's value on each of its rows; None for groups of fewer than "
                             f"{MIN_TEXTS} prompts")
def mauve_metric(rows: list[dict[str, Any]]) -> list[float | None]:
    problem = mauve_problem()
    if problem is not None:
        if problem not in _WARNED:
            _WARNED.add(problem)
            log.warning("metric 'mauve' is unavailable, its values stay empty: %s", problem)
        return [None] * len(rows)
    if not any(_usable(r) for r in rows):
        return [None] * len(rows)
    return mauve_of_rows(rows, featurizer())
