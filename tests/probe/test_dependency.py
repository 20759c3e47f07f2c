"""The dependency probe: the KL, the effective length and its CI, the held-out texts, on
a toy source whose context reach the test chooses; then once on the real SmolLM2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import rel_entr

from harness.cli import main
from harness.errors import ConfigError
from harness.probe import ProbeConfig
from harness.probe.dependency import (effective_length, effective_length_ci, held_out_texts, kl_divergence, measure,
                                      seed_lengths)

V = 50


class ReachSource:
    """Next-token log-distributions that depend on the last ``reach`` tokens only (and on
    nothing before them): KL(full || last k) is 0 exactly when k >= reach."""

    prefix = [0]

    def __init__(self, reach: int) -> None:
        self.reach = reach

    def _logp(self, seq: list[int]) -> np.ndarray:
        tail = tuple(seq[1:][-self.reach:])  # without the prefix (BOS)
        rng = np.random.default_rng(abs(hash(tail)) % 2**32)
        x = rng.normal(size=V) * 3
        return x - np.log(np.exp(x).sum())

    def last_logprobs(self, windows, keep=1):
        return np.stack([np.stack([self._logp(w[:len(w) - keep + 1 + i]) for i in range(keep)]) for w in windows])


def test_kl_divergence_matches_scipy_and_is_zero_for_equal_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, V)), rng.normal(size=(3, V))
    lp = a - np.log(np.exp(a).sum(1, keepdims=True))
    lq = b - np.log(np.exp(b).sum(1, keepdims=True))
    np.testing.assert_allclose(kl_divergence(lp, lq), rel_entr(np.exp(lp), np.exp(lq)).sum(1), rtol=1e-10)
    assert np.all(kl_divergence(lp, lp) == 0)


@pytest.mark.parametrize("reach", [1, 3, 6])
def test_measure_finds_the_reach_of_the_context(reach):
    rng = np.random.default_rng(reach)
    texts = [list(rng.integers(1, V, size=40)) for _ in range(5)]
    ks = (1, 2, 3, 4, 6, 8, 16)
    cfg = ProbeConfig("smollm2-135m", texts=5, context=32, positions=4, ks=ks)
    per_text = measure(ReachSource(reach), texts, cfg)
    assert per_text.shape == (5, len(ks))
    for j, k in enumerate(ks):
        assert (np.all(per_text[:, j] == 0) if k >= reach else np.all(per_text[:, j] > 0.01)), (k, per_text[:, j])
    means = per_text.mean(axis=0)
    assert effective_length(ks, means, 1e-9) == reach
    lo, hi = effective_length_ci(ks, per_text, 1e-9, n_boot=200)
    assert lo == hi == reach  # every resample has the same reach


def test_effective_length_ci_spans_the_texts_disagreement_and_inf_when_never_below():
    ks = (1, 2, 4)
    per_text = np.array([[1.0, 0.05, 0.0], [1.0, 0.5, 0.0], [1.0, 0.05, 0.0], [1.0, 0.5, 0.0]])
    assert effective_length(ks, per_text.mean(axis=0), 0.1) == 4
    lo, hi = effective_length_ci(ks, per_text, 0.1, n_boot=2000)
    assert (lo, hi) == (2.0, 4.0)  # some resamples pick only the short-reach texts
    assert effective_length(ks, [1.0, 0.9, 0.5], 0.1) is None
    assert effective_length_ci(ks, np.ones((3, 3)), 0.1, n_boot=200) == (float("inf"), float("inf"))


def test_seed_lengths_are_the_capacity_formula():
    arch = {"hidden_size": 576, "num_hidden_layers": 30, "vocab_size": 49152}
    got = seed_lengths(arch)
    assert list(got) == ["m=1", "m=2", "m=4"]
    assert got["m=2"] == pytest.approx(30 * np.log(2 * 576) / np.log(49152))


def test_held_out_texts_builtin_file_and_errors(tmp_path):
    builtin = held_out_texts("pydoc")
    assert len(builtin) > 50 and all(t for _, t in builtin) and builtin == held_out_texts("pydoc")  # stable
    assert not any(line.startswith("   ") for _, t in builtin for line in t.splitlines())
    txt = tmp_path / "t.txt"
    txt.write_text("first text\nspans lines\n\n\nsecond text\n")
    assert held_out_texts(str(txt)) == [("t-000", "first text spans lines"), ("t-001", "second text")]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "x"}) + "\n{\"id\": 2}\n")
    with pytest.raises(ConfigError, match=r"b.jsonl:2: expected a JSON object with 'id' and 'text'"):
        held_out_texts(str(bad))
    with pytest.raises(ConfigError, match="is not a file"):
        held_out_texts(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("over, word", [({"ks": (4, 2)}, "ks must be increasing"), ({"threshold": 0}, "threshold"),
                                        ({"ks": (1, 200)}, "largest k"), ({"texts": 1}, "texts must be")])
def test_config_errors_name_the_option(over, word):
    with pytest.raises(ConfigError, match=word):
        ProbeConfig("smollm2-135m", **over).validate()


def test_cli_bad_option_is_one_line(capsys):
    assert main(["probe", "dependency", "smollm2-135m", "--threshold", "-1"]) == 2
    assert "threshold must be > 0" in capsys.readouterr().err


@pytest.mark.engine
def test_real_probe_on_smollm2_writes_parquet_json_and_plot(tmp_path, smollm2_path, capsys):
    import pandas as pd

    rc = main(["probe", "dependency", "smollm2-135m", "--n-texts", "3", "--context", "48", "--positions", "2",
               "--ks", "1,8,32", "--n-boot", "200", "--output-dir", str(tmp_path)])
    assert rc == 0
    (out,) = tmp_path.glob("probe-dependency-smollm2-135m-*")
    curve = pd.read_parquet(out / "curve.parquet")
    per_text = pd.read_parquet(out / "per_text.parquet")
    assert list(curve["k"]) == [1, 8, 32] and set(curve["n_texts"]) == {3} and len(per_text) == 9
    assert (per_text["kl"] >= 0).all() and curve["mean_kl"].iloc[0] > curve["mean_kl"].iloc[-1]  # more context: closer
    probe = json.loads((out / "probe.json").read_text())
    assert probe["architecture"]["vocab_size"] == 49152 and set(probe["seed_dependency_length"]) == {"m=1", "m=2", "m=4"}
    assert (out / "curve.png").stat().st_size > 1000 and "effective length" in (out / "probe.md").read_text()
    assert "effective length" in capsys.readouterr().out
    # the same probe again: read back (its files are checked), not measured again
    before = (out / "per_text.parquet").stat().st_mtime_ns
    assert main(["probe", "dependency", "smollm2-135m", "--n-texts", "3", "--context", "48", "--positions", "2",
                 "--ks", "1,8,32", "--n-boot", "200", "--output-dir", str(tmp_path)]) == 0
    assert "not measured again" in capsys.readouterr().out and (out / "per_text.parquet").stat().st_mtime_ns == before
    (out / "curve.parquet").unlink()  # a probe missing a file runs again
    assert main(["probe", "dependency", "smollm2-135m", "--n-texts", "3", "--context", "48", "--positions", "2",
                 "--ks", "1,8,32", "--n-boot", "200", "--output-dir", str(tmp_path)]) == 0
    assert "not measured again" not in capsys.readouterr().out and (out / "curve.parquet").is_file()
