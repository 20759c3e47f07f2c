"""The GPU layout on paper (harness.driver.gpu_layout, ``deceval placement``): which node,
GPUs and placement-group bundles each engine gets for data parallel x tensor parallel."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.driver.gpu_layout import EngineSlot, plan_gpu_layout


def test_eight_gpus_on_two_nodes_with_tp2_make_four_strict_pack_groups_spread_over_the_nodes():
    layout = plan_gpu_layout(nodes=2, gpus_per_node=4, tp=2)
    assert layout.slots == (
        EngineSlot(0, 0, (0, 1), 0, (0, 1), "STRICT_PACK"), EngineSlot(1, 1, (0, 1), 1, (0, 1), "STRICT_PACK"),
        EngineSlot(2, 0, (2, 3), 2, (0, 1), "STRICT_PACK"), EngineSlot(3, 1, (2, 3), 3, (0, 1), "STRICT_PACK"))
    assert layout.used == 8 and layout.as_dict()["data_parallel_size"] == 4


@pytest.mark.parametrize("tp,dp", [(1, 8), (2, 4), (4, 2)])
def test_every_gpu_is_used_once_and_no_group_spans_nodes(tp, dp):
    layout = plan_gpu_layout(nodes=2, gpus_per_node=4, tp=tp)
    assert len(layout.slots) == dp
    taken = [(s.node, g) for s in layout.slots for g in s.gpus]
    assert sorted(taken) == [(n, g) for n in range(2) for g in range(4)]  # each GPU exactly once
    assert all(len(s.gpus) == tp for s in layout.slots)
    assert [sum(1 for s in layout.slots if s.node == n) for n in range(2)] == [dp // 2, dp // 2]  # spread evenly
    if tp == 1:
        assert all(s.placement_group is None and s.bundles == () for s in layout.slots)


def test_fewer_replicas_leave_gpus_idle_and_say_so():
    layout = plan_gpu_layout(nodes=2, gpus_per_node=4, tp=2, replicas=3)
    assert [s.node for s in layout.slots] == [0, 1, 0] and layout.used == 6
    assert "2 GPU(s) left idle" in layout.render()


@pytest.mark.parametrize("kw,msg", [
    ({"tp": 8}, "tensor_parallel_size 8 > 4 GPUs per node"),
    ({"tp": 2, "replicas": 5}, "at most 4"),
    ({"tp": 0}, "at least 1"),
])
def test_layouts_that_cannot_fit_name_the_setting(kw, msg):
    with pytest.raises(ValueError, match=msg):
        plan_gpu_layout(nodes=2, gpus_per_node=4, **kw)


def test_cli_prints_the_plan_and_its_json(capsys):
    assert main(["placement", "--nodes", "2", "--gpus-per-node", "4", "--tp", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 engine(s) (data parallel 4 x tensor parallel 2), 8 of 8 GPUs used" in text
    assert text.count("STRICT_PACK") == 4
    assert main(["placement", "--nodes", "2", "--gpus-per-node", "4", "--tp", "2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(e["node"], e["gpus"]) for e in plan["engines"]] == [(0, [0, 1]), (1, [0, 1]), (0, [2, 3]), (1, [2, 3])]
    assert main(["placement", "--gpus-per-node", "4", "--tp", "8"]) == 2
    assert "lower tensor_parallel_size" in capsys.readouterr().err
