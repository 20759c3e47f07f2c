"""Stepwise samplers against direct computations (HF transformers' warpers, a plain Mirostat v2),
the driver loop on a toy engine, and strategy plugins through every way they load."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest

from harness.errors import ParamError
from strategies import STRATEGIES, get_strategy
from strategies.base import Stops
from strategies.stepwise import (
    DynamicTopP,
    DynamicTopPParams,
    DynamicTopPWarper,
    Epsilon,
    EpsilonParams,
    EpsilonWarper,
    Eta,
    EtaParams,
    EtaWarper,
    Mirostat,
    MirostatParams,
    Typical,
    TypicalParams,
    TypicalWarper,
    draw,
    nucleus_size,
)
from tests.fakes.toy_engine import random_engine


def random_logprobs(seed: int, v: int = 2000, scale: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=v) * scale
    return (x - np.log(np.exp(x).sum())).astype(np.float32)


def hf_mask(warper, lp: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    scores = torch.tensor(lp, dtype=torch.float32)[None]
    out = warper(torch.zeros((1, 1), dtype=torch.long), scores.clone())
    return torch.isfinite(out[0]).numpy()


def assert_masks_equal(mine: np.ndarray, ref: np.ndarray, lp: np.ndarray, rel: float = 1e-5) -> None:
    """Equal, except tokens whose probability sits at the cut within float32 round-off."""
    diff = np.flatnonzero(mine != ref)
    if diff.size:
        kept = lp[mine & ref]
        edge = kept.min() if kept.size else lp.max()
        assert np.all(np.abs(lp[diff] - edge) < rel * max(1.0, abs(edge)) + 1e-6), diff


@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 3.0), (2, 6.0), (3, 0.3)])
def test_typical_eta_epsilon_match_transformers(seed, scale):
    tr = pytest.importorskip("transformers")
    lp = random_logprobs(seed, scale=scale)
    for mass in (0.2, 0.9, 0.95):
        assert_masks_equal(TypicalWarper(mass).keep(lp), hf_mask(tr.TypicalLogitsWarper(mass=mass), lp), lp)
    for eps in (3e-4, 1e-3, 0.02):
        assert_masks_equal(EpsilonWarper(eps).keep(lp), hf_mask(tr.EpsilonLogitsWarper(epsilon=eps), lp), lp)
        assert_masks_equal(EtaWarper(eps).keep(lp), hf_mask(tr.EtaLogitsWarper(epsilon=eps), lp), lp)


def mirostat_direct(lps: list[np.ndarray], tau: float, eta: float, seed: int) -> list[int]:
    """Mirostat v2 as llama.cpp states it, written out plainly, with the same draw."""
    rng = np.random.default_rng(seed)
    mu = 2 * tau
    out = []
    for lp in lps:
        p = np.exp(lp.astype(np.float64))
        order = sorted(range(len(p)), key=lambda i: (-p[i], i))
        keep = [i for i in order if -math.log2(p[i]) <= mu] or order[:1]
        w = np.array([p[i] for i in keep])
        w = w / w.sum()
        u = rng.random()
        acc, pick = 0.0, keep[-1]
        for i, wi in zip(keep, w):
            acc += wi
            if u < acc:
                pick = i
                break
        out.append(pick)
        mu -= eta * (-math.log2(w[keep.index(pick)]) - tau)
    return out


def test_mirostat_matches_direct_computation():
    lps = [random_logprobs(s, v=500, scale=2.0) for s in range(30)]
    strat = Mirostat(MirostatParams(tau=3.0, eta=0.2))
    rng = np.random.default_rng(7)
    state = strat.init_state()
    got = []
    for lp in lps:
        tok, state, _ = strat.select(lp, state, got, rng)
        got.append(tok)
    assert got == mirostat_direct(lps, 3.0, 0.2, 7)


def test_draw_is_inverse_cdf():
    ids = np.array([5, 2, 9])
    counts = np.bincount([draw(ids, np.array([0.6, 0.3, 0.1]), np.random.default_rng(s)) for s in range(3000)],
                         minlength=10)
    assert counts[[5, 2, 9]] / 3000 == pytest.approx([0.6, 0.3, 0.1], abs=0.03)


def test_dynamic_top_p_rule():
    rule = DynamicTopPWarper(top_p=0.8, max_top_p=0.95, increase=0.05, decay=0.02, window=8, ngram=2)
    assert not rule.repeats([1, 2, 3, 4])
    assert rule.repeats([1, 2, 3, 1, 2])
    assert not rule.repeats([1, 2, 9, 9, 9, 9, 9, 9, 9, 1, 2])  # the earlier [1, 2] is outside the window
    assert rule.next_p(0.8, [1, 2, 3, 1, 2]) == pytest.approx(0.85)
    assert rule.next_p(0.95, [1, 2, 1, 2]) == pytest.approx(0.95)
    assert rule.next_p(0.85, [1, 2, 3]) == pytest.approx(0.83)
    assert rule.next_p(0.81, [1, 2, 3]) == pytest.approx(0.8)
    lp = random_logprobs(4)
    assert rule.keep(lp, 0.9).sum() == nucleus_size(lp, 0.9)


@pytest.mark.parametrize("strategy", [Typical(TypicalParams()), Eta(EtaParams()), Epsilon(EpsilonParams()),
                                      Mirostat(MirostatParams()), DynamicTopP(DynamicTopPParams())])
def test_sampler_decode_on_toy_engine(strategy):
    eng = random_engine(11)
    prompts = [[1], [2, 3], [4]]

    def go(seeds):
        return strategy.decode(eng, prompts, seeds=seeds, stops=Stops(10, eng.eos_token_ids))

    a, b, c = go([1, 2, 3]), go([1, 2, 3]), go([100, 200, 300])
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert [d.token_ids for d in a] != [d.token_ids for d in c]
    for d in a:
        assert d.finish_reason in ("eos", "length") and len(d.token_ids) <= 10
        assert d.engine_requests == len(d.token_ids)  # one request per live sequence per step
        assert all(s["candidates"] >= 1 and s["rank"] >= 1 for s in d.steps)


def test_sampler_replays_direct_computation_on_toy_engine():
    """Typical through the loop = the HF warper + the same draw, step by step."""
    tr = pytest.importorskip("transformers")
    eng = random_engine(12, v=600)
    out = Typical(TypicalParams(typical_p=0.7)).decode(eng, [[1, 2]], seeds=[5], stops=Stops(12))[0]
    rng = np.random.default_rng(5)
    seq = [1, 2]
    for tok in out.token_ids:
        lp = eng.fn(tuple(seq)).astype(np.float32)
        mask = hf_mask(tr.TypicalLogitsWarper(mass=0.7), lp)
        p = np.exp(lp.astype(np.float64))
        idx = np.flatnonzero(mask)
        idx = idx[np.lexsort((idx, -p[idx]))]
        assert tok == draw(idx, p[idx], rng)
        seq.append(tok)


def test_sampler_params_validation():
    with pytest.raises(ParamError, match="typical_p must be in \\(0, 1\\], got 1.5"):
        TypicalParams(typical_p=1.5)
    with pytest.raises(ParamError, match="epsilon"):
        EtaParams(epsilon=0.0)
    with pytest.raises(ParamError, match="max_top_p"):
        DynamicTopPParams(top_p=0.9, max_top_p=0.5)


def test_builtin_stepwise_strategies_registered():
    for name in ("beam", "typical", "eta", "epsilon", "mirostat", "dynamic_top_p", "wsp"):
        cls = get_strategy(name)
        assert cls.stepwise and cls.name == name and cls.description
    assert get_strategy("beam").deterministic


# ---- plugins: a module:Class string in a config, and an entry point ----------------------------------

PLUGIN = '''
from dataclasses import dataclass
from strategies.base import Params, StepwiseStrategy, param

@dataclass(frozen=True)
class FirstParams(Params):
    token: int = param(0, "the token to emit")

class First(StepwiseStrategy):
    name = "first_token"
    description = "Emits one fixed token."
    Params = FirstParams
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    mod = f"deceval_test_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, mod
    sys.modules.pop(mod, None)


def test_plugin_through_module_class_string_in_config(plugin_dir):
    from harness.config import resolve_config
    _, mod = plugin_dir
    cfg = resolve_config({"models": ["smollm2-135m"], "prompt_sets": ["tiny"],
                          "strategies": [{"name": f"{mod}:First", "token": [3, 4]}]})
    assert [s.params for s in cfg.strategies] == [{"token": 3}, {"token": 4}]
    built = cfg.strategies[0].build()
    assert built.name == "first_token" and built.params.token == 3


def test_plugin_through_entry_point(plugin_dir, monkeypatch):
    tmp, mod = plugin_dir
    dist = tmp / "deceval_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deceval-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[harness.strategies]\nfirst_token = {mod}:First\n")
    monkeypatch.setattr(STRATEGIES, "_entries", dict(STRATEGIES._entries))
    monkeypatch.setattr(STRATEGIES, "_entry_points_loaded", False)
    assert "first_token" in STRATEGIES.names()
    cls = get_strategy("first_token")
    assert cls.__name__ == "First" and cls.from_dict({"token": 9}).params.token == 9


def test_cli_lists_new_strategies(capsys):
    from harness.cli import main
    main(["strategies"])
    out = capsys.readouterr().out
    for name in ("wsp", "beam", "typical", "eta", "epsilon", "mirostat", "dynamic_top_p"):
        assert f"\n{name}  [" in "\n" + out
    assert "max_candidates = 8" in out and "weight = 1.0" in out
