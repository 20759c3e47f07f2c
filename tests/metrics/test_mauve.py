"""MAUVE: known answers on constructed features (one distribution -> about 1, disjoint ones ->
near 0), the grouping of a unit's rows, the optional-import path (unavailable, said how to
install, never a crash), and a run of the continuation task into Parquet with features from
the local SmolLM2 folder."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.analysis.leaderboard import build_leaderboard, to_markdown
from harness.config import resolve_config
from harness.driver import runner
from harness.metrics import get_metric, score_rows
from harness.metrics import mauve as mauve_module
from harness.metrics.mauve import MIN_TEXTS, mauve_of_rows, mauve_problem, mauve_score
from tests.fakes.scripted_runner import use_scripted_runner


@pytest.fixture()
def mauve_installed():
    if mauve_problem() is not None:
        pytest.fail(f"these tests need the 'mauve' extra of the dev install: {mauve_problem()}")


def _cloud(seed: int, n: int = 200, d: int = 16, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return x


def test_the_same_features_score_one_and_samples_of_one_distribution_near_one(mauve_installed):
    p = _cloud(0)
    assert mauve_score(p, p.copy()) == pytest.approx(1.0, abs=1e-6)
    assert mauve_score(p, _cloud(1)) > 0.9


def test_disjoint_distributions_score_near_zero_and_partial_overlap_in_between(mauve_installed):
    p = _cloud(0)
    far = mauve_score(p, _cloud(1, shift=50.0))
    half = mauve_score(p, np.vstack([_cloud(2, n=100), _cloud(3, n=100, shift=50.0)]))
    assert far < 0.05
    assert far < half < mauve_score(p, _cloud(1))


def test_features_of_another_width_are_refused(mauve_installed):
    with pytest.raises(ValueError, match=r"same width, got \(200, 16\) and \(200, 8\)"):
        mauve_score(_cloud(0), _cloud(1, d=8))


def _rows(n: int, completion, unit="u1", prompt_set="s", **extra) -> list[dict]:
    return [{"unit_id": unit, "prompt_set": prompt_set, "prompt_id": f"p{i}", "reference": f"ref {i}",
             "completion": completion(i), "error": None, **extra} for i in range(n)]


def _features(texts):
    """Text 'ref i' and 'same i' -> a point of one cloud, anything else -> a far one."""
    out = []
    for t in texts:
        i = int(t.split()[-1])
        v = np.random.default_rng(i).normal(size=8)
        if not t.startswith(("ref", "same")):
            v[0] += 50.0
        out.append(v)
    return np.array(out)


def test_each_group_of_a_unit_and_prompt_set_gets_its_value_on_every_row(mauve_installed):
    n = 40
    rows = (_rows(n, lambda i: f"same {i}") + _rows(n, lambda i: f"other {i}", prompt_set="t")
            + _rows(MIN_TEXTS - 1, lambda i: f"same {i}", unit="u2"))
    rows[3]["reference"] = None  # no reference: left out
    rows[4]["completion"] = "  "  # empty: left out, as mauve-text drops empty texts
    rows[5]["error"] = "engine rejected the request"
    values = mauve_of_rows(rows, _features)
    same, other, small = values[:n], values[n:2 * n], values[2 * n:]
    assert same[3] is None and same[4] is None and same[5] is None
    kept = [v for v in same if v is not None]
    assert len(kept) == n - 3 and len(set(kept)) == 1 and kept[0] > 0.9
    assert len(set(other)) == 1 and other[0] < 0.05
    assert small == [None] * (MIN_TEXTS - 1)  # fewer than MIN_TEXTS prompts: no value


def test_several_samples_per_prompt_compare_with_one_reference_per_prompt(mauve_installed):
    seen = []

    def features(texts):
        seen.append(list(texts))
        return _features(texts)

    rows = _rows(20, lambda i: f"same {i}") + _rows(20, lambda i: f"same {i + 100}")
    for r in rows[20:]:
        r["prompt_id"] = f"p{int(r['reference'].split()[1])}"  # a second sample of each prompt
    mauve_of_rows(rows, features)
    references, completions = seen
    assert len(references) == 20 and len(completions) == 40


def test_the_metric_is_registered_opt_in_with_its_direction_and_needs():
    m = get_metric("mauve")
    assert m.higher_is_better is True and m.batch and not m.default
    assert m.needs == {"reference", "features"}
    assert "GPL-3.0" in m.description and "optional extra 'mauve'" in m.description


def test_without_mauve_text_the_metric_says_so_and_how_to_install_and_leaves_values_empty(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mauve", None)  # not importable
    problem = mauve_problem()
    assert problem == ("mauve-text not installed: pip install 'deceval[mauve]' (mauve-text, GPL-3.0, with faiss-cpu "
                       "and scikit-learn)")
    assert get_metric("mauve").unavailable() == problem
    rows = _rows(20, lambda i: f"same {i}")
    score_rows(rows, ["mauve", "length"])
    assert [r["mauve"] for r in rows] == [None] * 20
    assert "metric 'mauve' is unavailable" in caplog.text or problem in mauve_module._WARNED
    with pytest.raises(ImportError, match=r"metric 'mauve' is unavailable: mauve-text not installed: pip install"):
        mauve_score(_cloud(0), _cloud(1))


def _config(tmp_path: Path, limit: int) -> dict:
    model = tmp_path / "tiny-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 32}))
    return {"run_name": "mauve", "models": [{"model": str(model), "name": "tiny"}], "chat": False,
            "prompt_sets": [{"name": "pydoc_continuation", "limit": limit}],
            "strategies": [{"name": "greedy"}, {"name": "top_p", "top_p": 0.9}],
            "generation": {"max_tokens": 8}, "metrics": ["mauve", "diversity"],
            "output": {"dir": str(tmp_path / "reports")}}


def test_a_run_without_mauve_text_goes_on_and_says_the_metric_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mauve", None)
    use_scripted_runner(monkeypatch, lambda unit, p: p.reference, completion_tokens=8)
    out = io.StringIO()
    outcome = runner.run(resolve_config(_config(tmp_path, 12), str(tmp_path / "c.yaml")), out=out, progress=False)
    assert outcome.ok and outcome.units_done == 2
    assert ("metric mauve is unavailable here, its column stays empty: mauve-text not installed: pip install "
            "'deceval[mauve]'") in out.getvalue()
    for f in (outcome.run_dir / "samples").rglob("*.parquet"):
        t = pq.read_table(f).to_pydict()
        assert t["mauve"] == [None] * 12 and all(v is not None for v in t["diversity"])


def test_a_continuation_run_scores_mauve_with_the_local_models_features(tmp_path, monkeypatch, mauve_installed):
    # greedy "writes" the human continuations themselves, top_p a text of another kind
    def script(unit, p):
        if unit.strategy.name == "greedy":
            return " " + p.reference
        return " " + " ".join(["0x%04x" % (int(p.id[-2:]) * 97 + k) for k in range(12)])

    use_scripted_runner(monkeypatch, script, completion_tokens=8)
    outcome = runner.run(resolve_config(_config(tmp_path, 20), str(tmp_path / "c.yaml")), out=io.StringIO(),
                         progress=False)
    assert outcome.ok
    got = {}
    for f in (outcome.run_dir / "samples").rglob("*.parquet"):
        t = pq.read_table(f).to_pydict()
        (name,) = set(t["strategy_name"])
        assert len(set(t["mauve"])) == 1  # one value per unit and prompt set, on each row
        got[name] = t["mauve"][0]
    assert got["greedy"] == pytest.approx(1.0, abs=1e-6)
    assert got["top_p"] < 0.1
    assert mauve_module.featurizer()([" x"]).shape == (1, 576)  # SmolLM2-135M's hidden size
    # the leaderboard ranks it, and gives no interval over prompts for one value per unit
    lb = build_leaderboard([outcome.run_dir], metrics=["mauve", "diversity"], n_boot=200)
    rows = lb.table[lb.table["metric"] == "mauve"].set_index("strategy")
    assert rows.loc["greedy", "rank"] == 1 and rows.loc["greedy", "direction"] == "higher"
    assert rows["ci_low"].isna().all() and set(rows["ci"]) == {"one value per unit"}
    assert lb.table[lb.table["metric"] == "diversity"]["ci"].eq("prompts").all()
    assert "[no CI]" in to_markdown(lb)


def test_the_gate_decides_nothing_on_one_value_per_unit_and_refuses_to_gate_it(tmp_path):
    from harness.analysis.regression import compare
    from harness.config import GateConfig
    from tests.fakes.reports import METRICS, unit_rows, write_report

    def report(run_id, value):
        rows = unit_rows("greedy", 0.8, 1, run_id)
        for r in rows:
            r["mauve"] = value
        return write_report(tmp_path, run_id, {"greedy": rows}, metrics=METRICS + ["mauve"])

    base, cand = report("b", 0.62), report("c", 0.41)
    gated = compare(base, cand, GateConfig(gates={"mauve": 0.0, "exact_match": 0.0}))
    assert not gated.passed
    assert any("mauve has one value per unit" in f for f in gated.failures), gated.failures
    row = gated.table[gated.table["metric"] == "mauve"].iloc[0]
    assert (row["baseline"], row["candidate"]) == (pytest.approx(0.62), pytest.approx(0.41))
    assert math.isnan(row["ci_low"]) and row["verdict"] == "n/a"  # never a zero-width "regressed"
    assert compare(base, cand, GateConfig(gates={"exact_match": 0.0})).passed  # shown, not gated: no failure
