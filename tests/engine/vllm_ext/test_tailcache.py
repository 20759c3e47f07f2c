"""The tail cache's bookkeeping (harness.engine.vllm_ext.tailcache), by hand, with small fake requests and
scheduler outputs; the real engine's use of it is in test_stepwise_engine.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from harness.engine.vllm_ext import TAIL_ARG
from harness.engine.vllm_ext.tailcache import TailCacheConnector, TailCacheMetadata

BS = 4  # a small block size keeps the hand-made cases readable


def connector(slots: int = 8) -> TailCacheConnector:
    cfg = SimpleNamespace(cache_config=SimpleNamespace(block_size=BS),
                          kv_transfer_config=SimpleNamespace(
                              kv_connector_extra_config={"slots": slots},
                              is_kv_producer=True))
    return TailCacheConnector(cfg, role=None, kv_cache_config=None)


def request(rid: str, prompt: list[int], opt_in: bool = True) -> SimpleNamespace:
    return SimpleNamespace(request_id=rid, prompt_token_ids=prompt, num_prompt_tokens=len(prompt),
                           sampling_params=SimpleNamespace(extra_args={TAIL_ARG: True} if opt_in else None))


def blocks(ids: list[int]) -> SimpleNamespace:
    return SimpleNamespace(get_block_ids=lambda: (ids,))


def step(new=(), cached=(), scheduled=None):
    """A scheduler output: new = [(req_id, num_computed)], cached = [(req_id, num_computed, new block ids)]."""
    return SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=r, num_computed_tokens=c) for r, c in new],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[r for r, _, _ in cached],
                                              num_computed_tokens=[c for _, c, _ in cached],
                                              new_block_ids=[(b,) if b else None for _, _, b in cached],
                                              resumed_req_ids=set()),
        num_scheduled_tokens=scheduled or {})


def admit(conn, req, local_hit, block_ids):
    """What the scheduler does for a new request: ask, allocate, report."""
    ext, is_async = conn.get_num_new_matched_tokens(req, local_hit)
    assert is_async is False
    conn.update_state_after_alloc(req, blocks(block_ids), ext)
    return ext


def test_stores_a_partial_tail_and_loads_it_for_the_next_token():
    conn = connector()
    a = request("a", [1, 2, 3, 4, 5, 6])  # blocks [1-4][5,6 + 2 free]
    assert admit(conn, a, 0, [10, 11]) == 0
    meta = conn.build_connector_meta(step(new=[("a", 0)], scheduled={"a": 6}))
    assert meta.loads == [] and meta.stores == [(0, 11)]  # slot 0 <- block 11, which holds tokens 4..5
    conn.request_finished(a, [10, 11])

    b = request("b", [1, 2, 3, 4, 5, 6, 7])  # a's prompt plus one token; prefix cache hit: 4
    assert admit(conn, b, 4, [10, 12]) == 2  # tokens 5, 6 come from the ring
    meta = conn.build_connector_meta(step(new=[("b", 6)], scheduled={"b": 1}))
    assert meta.loads == [(0, 12)]  # slot 0 into b's second block, before the forward pass
    assert meta.stores == [(1, 12)]  # then b's own tail, for the step after


def test_no_reuse_without_opt_in_or_when_the_prefix_hit_does_not_meet_the_tail():
    conn = connector()
    plain = request("p", [1, 2, 3, 4, 5, 6], opt_in=False)
    assert admit(conn, plain, 0, [10, 11]) == 0
    assert conn.build_connector_meta(step(new=[("p", 0)], scheduled={"p": 6})).stores == []

    a = request("a", [1, 2, 3, 4, 5, 6])
    admit(conn, a, 0, [10, 11])
    conn.build_connector_meta(step(new=[("a", 0)], scheduled={"a": 6}))
    # The first block was evicted from the prefix cache: the stored tail cannot be used.
    assert admit(conn, request("b", [1, 2, 3, 4, 5, 6, 7]), 0, [20, 21]) == 0
    # Another continuation (not a's prompt + 1 token) is not served either.
    assert admit(conn, request("c", [1, 2, 3, 4, 9, 6, 7]), 4, [10, 22]) == 0
    # Requests that did not opt in (vLLM's beam search, plain generate) are not served.
    assert admit(conn, request("d", [1, 2, 3, 4, 5, 6, 7], opt_in=False), 4, [10, 23]) == 0


def test_block_aligned_prompts_are_not_stored():
    conn = connector()
    admit(conn, request("a", [1, 2, 3, 4, 5, 6, 7, 8]), 0, [10, 11])
    assert conn.build_connector_meta(step(new=[("a", 0)], scheduled={"a": 8})).stores == []


def test_ring_evicts_the_oldest_tail():
    conn = connector(slots=2)
    prompts = {r: [i, 2, 3, 4, 5] for i, r in enumerate("abc")}
    for r, p in prompts.items():
        admit(conn, request(r, p), 0, [10 + ord(r), 20 + ord(r)])
        (store,) = conn.build_connector_meta(step(new=[(r, 0)], scheduled={r: 5})).stores
    assert store[0] == 0  # c took a's slot
    assert admit(conn, request("a2", prompts["a"] + [9]), 4, [1, 2]) == 0  # a was evicted
    assert admit(conn, request("b2", prompts["b"] + [9]), 4, [1, 3]) == 1
    assert admit(conn, request("c2", prompts["c"] + [9]), 4, [1, 4]) == 1


def test_one_step_never_reuses_a_slot_it_writes():
    conn = connector(slots=2)
    for r in "abc":
        admit(conn, request(r, [ord(r), 2, 3, 4, 5]), 0, [1, ord(r)])
    meta = conn.build_connector_meta(step(new=[(r, 0) for r in "abc"], scheduled=dict.fromkeys("abc", 5)))
    assert sorted(s for s, _ in meta.stores) == [0, 1]  # the third tail is simply not kept


def test_chunked_prefill_stores_when_the_prompt_completes():
    conn = connector()
    a = request("a", list(range(1, 11)))  # 10 tokens: blocks [1-4][5-8][9,10]
    admit(conn, a, 0, [10, 11])
    assert conn.build_connector_meta(step(new=[("a", 0)], scheduled={"a": 6})).stores == []
    meta = conn.build_connector_meta(step(cached=[("a", 6, [12])], scheduled={"a": 4}))
    assert meta.stores == [(0, 12)]


def test_worker_copies_whole_blocks_out_and_back():
    conn = connector(slots=3)
    layers = {f"l{i}": torch.randn(6, 2, BS, 8) for i in range(3)}
    conn.register_kv_caches(layers)
    want = [t[4].clone() for t in layers.values()]
    conn.bind_connector_metadata(TailCacheMetadata(stores=[(2, 4)]))
    conn.wait_for_save()
    for t in layers.values():
        t[4] = 0.0  # the block is freed and reused
    conn.bind_connector_metadata(TailCacheMetadata(loads=[(2, 1)]))
    conn.start_load_kv(None)
    for t, w in zip(layers.values(), want):
        assert torch.equal(t[1], w)


def test_prompts_without_token_ids_are_neither_stored_nor_served():
    conn = connector()
    embeds = request("e", [0] * 6)
    embeds.prompt_token_ids = None  # a prompt given as embeddings
    assert admit(conn, embeds, 0, [10, 11]) == 0
    assert conn.build_connector_meta(step(new=[("e", 0)], scheduled={"e": 6})).stores == []
    assert admit(conn, request("one", [7]), 0, [12]) == 0
