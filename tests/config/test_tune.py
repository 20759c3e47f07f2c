"""The tune: section (harness.config.tune): search spaces, budgets, objective and constraints,
and clear errors that name the key, what was expected and the value."""

from __future__ import annotations

import pytest

from harness.config import parse_tune_config
from harness.errors import ConfigError

GOOD = {"objective": "exact_match", "trials": 4, "constraints": {"rep_2": {"max": 0.2}},
        "families": [{"name": "greedy"}, {"name": "top_p", "top_p": {"low": 0.5, "high": 1.0}, "temperature": 0.7},
                     {"name": "min_p", "min_p": [0.05, 0.1]},
                     {"name": "wsp", "label": "wsp-k", "max_candidates": {"low": 2, "high": 8}}]}


def test_spaces_fixed_values_direction_and_grids():
    t = parse_tune_config(GOOD, "c.yaml")
    assert t.direction == "maximize" and t.metrics == ["exact_match", "rep_2"]
    fams = {f.key: f for f in t.families}
    assert fams["greedy"].space == {} and fams["top_p"].fixed == {"temperature": 0.7}
    assert fams["top_p"].space["top_p"].kind == "float" and fams["wsp-k"].space["max_candidates"].kind == "int"
    assert fams["min_p"].grid_size == 2 and fams["top_p"].grid_size is None
    assert parse_tune_config({**GOOD, "objective": "rep_2"}, "c").direction == "minimize"


@pytest.mark.parametrize("edit,message", [
    ({"objective": "length"}, "tune.objective: metric 'length' has no direction"),
    ({"objective": "exact_mach"}, "tune.objective: unknown metric 'exact_mach'"),
    ({"trials": 0}, "tune.trials: expected an integer in [1, 500], got 0"),
    ({"dev_fraction": 1.0}, "tune.dev_fraction: must be in (0, 1), got 1"),
    ({"baseline": "nope"}, "tune.baseline: 'nope' is not one of the families"),
    ({"constraints": {"rep_2": 0.2}}, "tune.constraints.rep_2: expected {min: x} and/or {max: y}, got 0.2"),
    ({"families": [{"name": "top_p", "top_p": {"low": 0.5, "high": 1.5}}]},
     "tune.families[0].top_p: 1.5 is not a valid value: top_p must be in (0, 1], got 1.5"),
    ({"families": [{"name": "top_p", "top_p": {"low": 0.9, "high": 0.5}}]},
     "tune.families[0].top_p: low must be below high, got low=0.9, high=0.5"),
    ({"families": [{"name": "top_p", "top_q": [0.5]}]}, "tune.families[0].top_q: not a parameter of strategy 'top_p'"),
    ({"families": [{"name": "greedy"}, {"name": "greedy"}]}, "a second family called 'greedy'; give each family"),
    ({"families": [{"name": "top_p", "top_p": {"low": 0.5, "high": 1.0, "log": True, "step": 0.1}}]},
     "tune.families[0].top_p.step: must be > 0 and cannot go with log: true"),
    ({"families": []}, "tune.families: expected a list of strategy families"),
    ({"budget": 3}, "tune: unknown key(s) ['budget']"),
])
def test_errors_name_the_key_the_rule_and_the_value(edit, message):
    with pytest.raises(ConfigError) as err:
        parse_tune_config({**GOOD, **edit}, "c.yaml")
    assert message in str(err.value) and str(err.value).startswith("c.yaml: tune")
