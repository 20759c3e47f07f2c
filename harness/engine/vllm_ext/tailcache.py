"""The tail cache: sub-block prefix reuse for step-by-step decoding.

vLLM's prefix cache reuses whole KV blocks only (32 tokens is the smallest block the CPU
build accepts), so a request whose prompt extends an earlier request's prompt by one token
recomputes the earlier prompt's partial last block: on average half a block per request.
Stepwise strategies send exactly such requests every step (a lookahead: ``x + c`` for each
candidate ``c``, then ``x + c* + c'`` for the chosen ``c*``), so that tail dominated
their engine time.

This is a vLLM KV connector (the engine's KV-transfer extension point) that keeps those
tails:

- **store**: when an opted-in request finishes its prompt and the prompt ends inside a
  block, the worker copies that whole block (every layer) into a slot of a fixed ring in
  the KV cache's memory;
- **load**: when a later opted-in request's prompt is a stored prompt plus one token, and
  the prefix cache hit ends exactly where the stored block starts, the scheduler reports
  the stored tokens as externally cached and the worker copies the block back into the
  request's block at the same position before the forward pass. The request then computes
  its one new token only; ``num_cached_tokens`` counts the loaded tokens as cached.

Whole blocks are copied, so the copy does not depend on the attention backend's layout
inside a block: the loaded block holds the stored prompt's tokens at the same positions,
and the slots past them are overwritten by the request's own new tokens. Loads of a step
run before its forward pass and stores after it, so a slot reused within one step is read
before it is rewritten. The ring is FIFO; an evicted tail is just recomputed.

Requests opt in with ``SamplingParams(extra_args={TAIL_ARG: True})`` (``Engine.next_token``
does); other requests, vLLM's own beam search included, are untouched.

Tested on the CPU build. The ring lives next to the KV cache and blocks are indexed on
vLLM's block-first per-layer view, so nothing here is CPU-specific: the worker's copies
round-tripped bf16 blocks on an H200 (``scripts/cuda_tensor_check.py``, with stand-ins
for vLLM's base classes). It has not run inside vLLM's CUDA build, which was not
available to test, so the engine leaves it off there by default (``tail_cache_slots``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from harness.engine.vllm_ext import SLOTS_KEY, TAIL_ARG

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request



@dataclass
class TailCacheMetadata(KVConnectorMetadata):
    #: (ring slot, destination block id): copied into the KV cache before the forward pass.
    loads: list[tuple[int, int]] = field(default_factory=list)
    #: (ring slot, source block id): copied out of the KV cache after the forward pass.
    stores: list[tuple[int, int]] = field(default_factory=list)


class TailCacheConnector(KVConnectorBase_V1):
    """See the module docstring. One instance per role: the scheduler side keeps the
    prompt -> slot table and plans the copies; the worker side holds the ring and copies."""

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self.block_size = vllm_config.cache_config.block_size
        extra = self._kv_transfer_config.kv_connector_extra_config or {}
        self.slots = int(extra.get(SLOTS_KEY, 256))
        if self.slots < 1:
            raise ValueError(f"tail cache: {SLOTS_KEY} must be >= 1, got {self.slots}")
        # scheduler side
        self._table: dict[tuple[int, ...], tuple[int, int]] = {}  # prompt -> (slot, tail start)
        self._owner: list[tuple[int, ...] | None] = [None] * self.slots
        self._next = 0
        self._matched: dict[str, tuple[int, int]] = {}
        self._loads: list[tuple[int, int]] = []
        self._reqs: dict[str, Request] = {}
        self._blocks: dict[str, list[int]] = {}
        # worker side
        self._layers: list[torch.Tensor] = []
        self._ring: list[torch.Tensor] = []

    # ---- scheduler side --------------------------------------------------------------------

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a best-effort cache: a lost store is a later recompute

    def _opted_in(self, request: Request) -> bool:
        sp = request.sampling_params
        return bool(sp is not None and (sp.extra_args or {}).get(TAIL_ARG))

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        if not self._opted_in(request):
            return 0, False
        prompt = request.prompt_token_ids or []
        if len(prompt) < 2:
            return 0, False
        hit = self._table.get(tuple(prompt[:-1]))
        # Usable only when the local prefix hit ends where the stored block starts.
        if hit is None or hit[1] != num_computed_tokens:
            return 0, False
        self._matched[request.request_id] = hit
        return len(prompt) - 1 - hit[1], False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        if not self._opted_in(request):
            return
        self._reqs[request.request_id] = request
        block_ids = list(blocks.get_block_ids()[0])
        self._blocks[request.request_id] = block_ids
        hit = self._matched.pop(request.request_id, None)
        if num_external_tokens > 0 and hit is not None and hit[1] // self.block_size < len(block_ids):
            slot, start = hit
            self._loads.append((slot, block_ids[start // self.block_size]))

    def _assign(self, prompt: tuple[int, ...], start: int) -> int:
        slot = self._next
        self._next = (self._next + 1) % self.slots
        old = self._owner[slot]
        if old is not None and self._table.get(old, (None,))[0] == slot:
            del self._table[old]
        self._owner[slot] = prompt
        self._table[prompt] = (slot, start)
        return slot

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = TailCacheMetadata(loads=self._loads)
        self._loads = []
        bs = self.block_size
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            new_ids = cached.new_block_ids[i]
            if req_id in self._blocks and new_ids is not None:
                if req_id in cached.resumed_req_ids:
                    self._blocks[req_id] = list(new_ids[0])
                else:
                    self._blocks[req_id].extend(new_ids[0])
        progress = [(r.req_id, r.num_computed_tokens) for r in scheduler_output.scheduled_new_reqs]
        progress += list(zip(cached.req_ids, cached.num_computed_tokens))
        used = 0
        for req_id, done in progress:
            req = self._reqs.get(req_id)
            if req is None:
                continue
            n = req.num_prompt_tokens
            # Store once, in the step that finishes the prompt, when it ends inside a block.
            if not (done < n <= done + scheduler_output.num_scheduled_tokens.get(req_id, 0)) or n % bs == 0:
                continue
            prompt = tuple(req.prompt_token_ids or ())
            start = n - n % bs
            blocks = self._blocks.get(req_id, [])
            # Best effort: anything unexpected (embeddings prompt, missing block) is skipped.
            if len(prompt) != n or prompt in self._table or used >= self.slots or start // bs >= len(blocks):
                continue
            meta.stores.append((self._assign(prompt, start), blocks[start // bs]))
            used += 1
        return meta

    def reset_cache(self) -> bool:
        """Forget every stored tail (scheduler side; vLLM calls it from
        ``reset_prefix_cache(reset_connector=True)``). The ring's memory stays allocated: a
        slot is only ever read through the table, so an empty table means no tail is reused."""
        self._table.clear()
        self._owner = [None] * self.slots
        self._next = 0
        self._matched.clear()
        self._loads = []
        return True

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._reqs.pop(request.request_id, None)
        self._blocks.pop(request.request_id, None)
        self._matched.pop(request.request_id, None)
        return False, None

    # ---- worker side -----------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        from vllm.v1.kv_cache_interface import group_kernel_blocks

        seen: set[int] = set()
        for t in kv_caches.values():
            if t.data_ptr() in seen:  # layers that share one cache are copied once
                continue
            seen.add(t.data_ptr())
            if self._kv_cache_config is not None:
                # vLLM's per-layer caches put blocks first; split kernel blocks are regrouped
                # so that dim 0 indexes the scheduler's blocks.
                t = group_kernel_blocks(t, self._kv_cache_config.num_blocks)
            self._layers.append(t)
            self._ring.append(torch.empty((self.slots,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device))

    def _copy(self, pairs: list[tuple[int, int]], *, into_cache: bool) -> None:
        """Copy whole blocks, every layer, between ring slots and KV-cache blocks."""
        slots = torch.tensor([s for s, _ in pairs], dtype=torch.long)
        blocks = torch.tensor([b for _, b in pairs], dtype=torch.long)
        for layer, ring in zip(self._layers, self._ring):
            if into_cache:
                layer[blocks.to(layer.device)] = ring[slots.to(ring.device)]
            else:
                ring[slots.to(ring.device)] = layer[blocks.to(layer.device)]

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if isinstance(meta, TailCacheMetadata) and meta.loads:
            self._copy(meta.loads, into_cache=True)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return  # stores are copied once, after the whole forward pass (wait_for_save)

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        if isinstance(meta, TailCacheMetadata) and meta.stores:
            self._copy(meta.stores, into_cache=False)
