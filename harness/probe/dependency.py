"""``deceval probe dependency MODEL``: how far back a model's context matters, measured.

For each held-out text and each of its last ``positions`` token positions t, the model's
next-token distribution given the whole context before t+1 (p) is compared with the one
given only the last k tokens (q_k), for every k of ``ks``:

    KL(p || q_k) = sum_v p(v) * (ln p(v) - ln q_k(v))       (nats; full vocabulary)

A text's value at k is the mean over its positions; the curve is the mean over texts at
each k, with a percentile bootstrap CI over texts. The effective length is the smallest k
whose mean KL is below ``threshold``; its CI is that rule applied to bootstrap resamples of
the texts (a resample whose curve never falls below the threshold counts as "beyond the
largest k"). The seed paper's dependency length n*ln(m*h)/ln(V) (harness.models.capacity)
is reported beside it for m in {1, 2, 4}.

Why transformers and not the vLLM engine: the KL needs p and q over the whole vocabulary
(49,152 or 262,144 tokens), and a vLLM request returns at most ``max_logprobs`` top tokens,
as Python objects, per position. The probe runs the same prepared weights (the folder the
engine serves) in float32 with torch, taking logits at the scored positions only.

Held-out texts: the prose of Python's own documentation topics (``pydoc_data``, in every
Python), never used by a prompt set; or a file of the user's (``--texts``: .txt with texts
separated by blank lines, or .jsonl with {"id", "text"}).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.analysis.stats import bootstrap_ci
from harness.errors import ConfigError
from harness.models import capacity, get_spec, model_architecture, prepare
from harness.report import inside, write_json_atomic

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128)
SEED_MS = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class ProbeConfig:
    model: str
    texts: int = 24                   # held-out texts
    context: int = 192                # tokens of each text used: the full context ends here
    positions: int = 8                # the last positions of each text that are scored
    ks: tuple[int, ...] = DEFAULT_KS  # truncated context lengths
    threshold: float = 0.1            # nats: the effective length is the first k below it
    source: str = "pydoc"             # "pydoc" or a .txt/.jsonl path
    n_boot: int = 2000
    seed: int = 0
    batch_tokens: int = 8192          # tokens per forward pass

    def validate(self) -> None:
        for name, low in (("texts", 2), ("context", 2), ("positions", 1), ("n_boot", 100), ("batch_tokens", 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"probe dependency: {name} must be an integer >= {low}, got {v!r}")
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks) or list(self.ks) != sorted(set(self.ks)):
            raise ConfigError(f"probe dependency: ks must be increasing integers >= 1, got {list(self.ks)!r}")
        if self.ks[-1] > self.context - self.positions:
            raise ConfigError(f"probe dependency: the largest k ({self.ks[-1]}) must be at most context - positions "
                              f"({self.context} - {self.positions} = {self.context - self.positions}), so that every "
                              f"truncated context is shorter than the full one; raise context or lower ks")
        if not (isinstance(self.threshold, (int, float)) and self.threshold > 0):
            raise ConfigError(f"probe dependency: threshold must be > 0 nats, got {self.threshold!r}")


@dataclass
class ProbeResult:
    config: ProbeConfig
    out_dir: Path
    curve: list[dict[str, Any]]          # per k: mean KL and its CI over texts
    effective_length: int | None          # None: the curve stays above the threshold up to max(ks)
    effective_ci: tuple[float, float]     # inf: beyond the largest k
    seed_lengths: dict[str, float]        # "m=1" -> n ln(m h) / ln V
    texts: list[str] = field(default_factory=list)
    reused: bool = False                  # read back from an earlier run of the same probe

    def as_dict(self) -> dict[str, Any]:
        return {"config": {**asdict(self.config), "ks": list(self.config.ks)}, "curve": self.curve,
                "effective_length": self.effective_length,
                "effective_length_ci": [_json_num(x) for x in self.effective_ci],
                "seed_dependency_length": self.seed_lengths, "texts": self.texts}


def _json_num(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


# ---- held-out texts ---------------------------------------------------------------------------

def _prose(text: str) -> str:
    """The prose lines of a documentation topic: no indented (code/grammar) lines, no heading rules."""
    keep = [ln.strip() for ln in text.splitlines() if ln and not ln[0].isspace() and not re.fullmatch(r"[*=\-~^]+", ln)]
    return re.sub(r"\s+", " ", " ".join(keep)).strip()


def held_out_texts(source: str) -> list[tuple[str, str]]:
    """(id, text) pairs, in a stable order."""
    if source == "pydoc":
        from pydoc_data.topics import topics
        return [(f"pydoc-{k}", _prose(topics[k])) for k in sorted(topics)]
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"probe dependency: --texts {source!r} is not a file; give a .txt (texts separated by "
                          f"blank lines) or .jsonl ({{\"id\", \"text\"}} per line), or leave it out for the built-in "
                          f"held-out texts")
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out.append((str(rec["id"]), str(rec["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{i}: expected a JSON object with 'id' and 'text' ({exc})") from None
        return out
    parts = [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip()]
    return [(f"{path.stem}-{i:03d}", re.sub(r"\s+", " ", p)) for i, p in enumerate(parts)]


# ---- the measure ------------------------------------------------------------------------------

def kl_divergence(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of two log-probability arrays (rows: positions, columns: vocabulary)."""
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    p = np.exp(logp)
    return np.maximum((p * (logp - logq)).sum(axis=-1), 0.0)  # >= 0; rounding can dip below


def effective_length(ks: Sequence[int], means: Sequence[float], threshold: float) -> int | None:
    """The smallest k whose mean KL is below ``threshold``; None when none is."""
    for k, m in zip(ks, means):
        if m < threshold:
            return int(k)
    return None


def effective_length_ci(ks: Sequence[int], per_text: np.ndarray, threshold: float, *, n_boot: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the effective length over bootstrap resamples of the texts
    (``per_text``: texts x ks); a resample that never falls below the threshold is inf."""
    rng = np.random.default_rng(seed)
    n = per_text.shape[0]
    curves = per_text[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)  # n_boot x ks
    below = curves < threshold
    first = np.where(below.any(axis=1), np.asarray(ks, dtype=float)[below.argmax(axis=1)], np.inf)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(first, [alpha, 1 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def seed_lengths(architecture: dict[str, Any]) -> dict[str, float]:
    """The seed paper's dependency length n*ln(m*h)/ln(V) for m in {1, 2, 4}."""
    return {f"m={m:g}": capacity(architecture["hidden_size"], architecture["num_hidden_layers"],
                                 architecture["vocab_size"], m)["dependency_length"] for m in SEED_MS}


class DistributionSource:
    """Next-token log-distributions of a prepared model folder, in float32 on the CPU (the
    weights load on the first request: a probe found finished needs the tokenizer only)."""

    def __init__(self, folder: Path, batch_tokens: int) -> None:
        from transformers import AutoTokenizer

        self.folder = folder
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.prefix = list(self.tokenizer("")["input_ids"])  # what the tokenizer puts before every text (BOS)
        self.batch_tokens = batch_tokens
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=torch.float32).eval()
        return self._model

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def last_logprobs(self, windows: list[list[int]], keep: int = 1) -> np.ndarray:
        """Log-softmax at the last ``keep`` positions of each (equal-length) window:
        windows x keep x vocabulary, float32."""
        import torch

        out = []
        step = max(1, self.batch_tokens // max(1, len(windows[0])))
        with torch.inference_mode():
            for i in range(0, len(windows), step):
                ids = torch.tensor(windows[i:i + step], dtype=torch.long)
                logits = self.model(input_ids=ids, logits_to_keep=keep).logits[:, -keep:, :]
                out.append(torch.log_softmax(logits.float(), dim=-1).numpy())
        return np.concatenate(out, axis=0)


def measure(src: Any, token_lists: list[list[int]], cfg: ProbeConfig) -> np.ndarray:
    """texts x ks: each text's mean KL(p(.|full) || p(.|last k)) over its last positions."""
    prefix = list(src.prefix)
    L, P = cfg.context, cfg.positions
    bodies = [t[:L] for t in token_lists]
    full = src.last_logprobs([prefix + b for b in bodies], keep=P)  # texts x P x V: predictions after t = L-P..L-1
    result = np.empty((len(bodies), len(cfg.ks)))
    for j, k in enumerate(cfg.ks):
        windows = [prefix + b[t - k + 1:t + 1] for b in bodies for t in range(L - P, L)]
        q = src.last_logprobs(windows, keep=1)[:, 0, :].reshape(len(bodies), P, -1)
        for i in range(len(bodies)):
            result[i, j] = kl_divergence(full[i], q[i]).mean()
    return result


def run_probe(cfg: ProbeConfig, out_root: Path | str = "reports", *, log: Any = print) -> ProbeResult:
    """Measure, then write per_text.parquet, curve.parquet, probe.json, probe.md and curve.png
    into ``<out_root>/probe-dependency-<model>-<hash>/``."""
    import pandas as pd

    cfg.validate()
    spec = get_spec(cfg.model)
    folder = prepare(cfg.model, log=lambda m: log(f"deceval: {m}"))
    arch = model_architecture(folder)
    src = DistributionSource(folder, cfg.batch_tokens)
    chosen: list[tuple[str, list[int]]] = []
    for tid, text in held_out_texts(cfg.source):
        ids = src.encode(text)
        if len(ids) >= cfg.context:
            chosen.append((tid, ids))
        if len(chosen) == cfg.texts:
            break
    if len(chosen) < 2:
        raise ConfigError(f"probe dependency: {cfg.source!r} has {len(chosen)} text(s) of at least {cfg.context} "
                          f"tokens; it needs 2 or more (lower --context or give longer texts)")
    key = json.dumps({**asdict(cfg), "ks": list(cfg.ks), "texts_used": [t for t, _ in chosen]}, sort_keys=True)
    root = Path(out_root)
    out_dir = inside(root, root / f"probe-dependency-{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = _finished(out_dir, cfg, [t for t, _ in chosen])
    if done is not None:
        log(f"probe dependency {spec.name}: finished before ({out_dir / 'probe.json'}: same config and texts); "
            f"not measured again")
        return done
    log(f"probe dependency {spec.name}: {len(chosen)} texts x {cfg.positions} positions, k in {list(cfg.ks)}")
    per_text = measure(src, [ids for _, ids in chosen], cfg)
    rows = [{"model": spec.name, "text_id": tid, "k": int(k), "kl": float(per_text[i, j])}
            for i, (tid, _) in enumerate(chosen) for j, k in enumerate(cfg.ks)]
    pd.DataFrame(rows).to_parquet(out_dir / "per_text.parquet", index=False)
    curve = []
    for j, k in enumerate(cfg.ks):
        ci = bootstrap_ci(per_text[:, j], n_boot=cfg.n_boot, seed=cfg.seed)
        curve.append({"model": spec.name, "k": int(k), "mean_kl": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
                      "n_texts": ci.n})
    pd.DataFrame(curve).to_parquet(out_dir / "curve.parquet", index=False)
    eff = effective_length(cfg.ks, [c["mean_kl"] for c in curve], cfg.threshold)
    eff_ci = effective_length_ci(cfg.ks, per_text, cfg.threshold, n_boot=cfg.n_boot, seed=cfg.seed)
    res = ProbeResult(cfg, out_dir, curve, eff, eff_ci, seed_lengths(arch), [t for t, _ in chosen])
    write_json_atomic(out_dir / "probe.json", {"model": spec.name, "architecture": arch, **res.as_dict()})
    (out_dir / "probe.md").write_text(to_markdown(res), encoding="utf-8")
    plot_curve(res, out_dir / "curve.png")
    return res


def _finished(out_dir: Path, cfg: ProbeConfig, texts: list[str]) -> ProbeResult | None:
    """The result in ``out_dir`` when probe.json is whole, for this config and these texts,
    and its Parquet files are there; else None (the probe runs again)."""
    try:
        state = json.loads((out_dir / "probe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    want = {**asdict(cfg), "ks": list(cfg.ks)}
    if state.get("config") != want or state.get("texts") != texts or len(state.get("curve") or []) != len(cfg.ks) \
            or not all((out_dir / f).is_file() for f in ("per_text.parquet", "curve.parquet")):
        return None
    lo, hi = (float(x) for x in state["effective_length_ci"])
    return ProbeResult(cfg, out_dir, state["curve"], state["effective_length"], (lo, hi),
                       state["seed_dependency_length"], texts, reused=True)


def effective_line(res: ProbeResult) -> str:
    cfg = res.config
    lo, hi = res.effective_ci
    eff = f"> {cfg.ks[-1]}" if res.effective_length is None else str(res.effective_length)
    span = lambda x: f"> {cfg.ks[-1]}" if math.isinf(x) else f"{x:g}"  # noqa: E731
    return (f"effective length (first k with mean KL < {cfg.threshold:g} nats): {eff} tokens "
            f"[95% CI {span(lo)}, {span(hi)}]")


def to_markdown(res: ProbeResult) -> str:
    cfg = res.config
    lines = [f"# Dependency probe: {cfg.model}", "",
             f"Mean KL(p(. | full context) || p(. | last k tokens)) in nats over {len(res.texts)} held-out texts "
             f"({cfg.source}), the last {cfg.positions} of {cfg.context} tokens of each; 95% bootstrap CI over "
             f"texts.", "", "| k | mean KL | 95% CI |", "| ---: | ---: | --- |"]
    lines += [f"| {c['k']} | {c['mean_kl']:.4f} | [{c['ci_low']:.4f}, {c['ci_high']:.4f}] |" for c in res.curve]
    lines += ["", effective_line(res) + ".", "",
              "The seed paper's dependency length n ln(m h) / ln V: " +
              ", ".join(f"{m}: {v:.2f}" for m, v in res.seed_lengths.items()) + " tokens.", "",
              "![KL against k](curve.png)", ""]
    return "\n".join(lines)


def plot_curve(res: ProbeResult, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot needs the 'metrics' extra
        return None
    ks = [c["k"] for c in res.curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [c["mean_kl"] for c in res.curve], "-o", color="tab:blue", label="mean KL over texts")
    ax.fill_between(ks, [c["ci_low"] for c in res.curve], [c["ci_high"] for c in res.curve], alpha=0.25,
                    color="tab:blue", label="95% bootstrap CI")
    ax.axhline(res.config.threshold, color="gray", ls=":", label=f"threshold {res.config.threshold:g} nats")
    for (m, v), c in zip(res.seed_lengths.items(), ("tab:red", "tab:orange", "tab:green")):
        ax.axvline(v, color=c, ls="--", label=f"seed n ln(mh)/ln V, {m}: {v:.1f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("k: context tokens kept")
    ax.set_ylabel("KL(p(.|full) || p(.|last k)) [nats]")
    ax.set_title(f"{res.config.model}: how far back the context matters", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
