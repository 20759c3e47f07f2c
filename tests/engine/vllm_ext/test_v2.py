"""The model-runner-V2 twins of the logits processors (harness.engine.vllm_ext.v2) driven by
vLLM's own V2 classes on CPU tensors, against the V1 processors and the numpy reference on
the same logits, step by step, while requests are added, finish, are preempted and come
back, and the batch order changes every step.

Real vLLM V2 code used here: ``RequestState`` (the runner's slots and token buffers),
``Sampler`` (its ``add_request``, ``apply_staged_writes`` and ``apply_sampling_params``, which
builds the ``LogitsContext`` and runs the built-in bias, penalty and bad-words stages before
ours), ``build_custom_logits_processors`` (the V2 loader, by name), ``LogitsProcRequestState``
and ``VllmConfig``. The V2 runner needs Triton, which the CPU build lacks, so three things
are stood in, each with the same effect on CPU tensors:

- ``buffer_utils.is_uva_available`` -> False: CPU torch has no pinned memory, so the
  runner's host buffers take vLLM's own non-UVA fallback (``NonUvaBuffer``);
- ``StagedWriteTensor.apply_write`` (a Triton kernel): the staged writes copied with torch;
- the runner's ``post_update`` (a Triton kernel that appends each sampled token to
  ``all_token_ids`` and bumps ``total_len``) and the Gumbel draw: done here in torch, the
  token chosen greedily (nucleus rows) or by a seeded draw from the reference's kept set
  (sampler rows), the same token for V1, V2 and the reference.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from strategies.base import SAMPLER_ARG
from strategies.distributions import nucleus_size
from strategies.stepwise import DynamicTopPWarper, EpsilonWarper, EtaWarper, MirostatV2, TypicalWarper

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

import vllm.v1.worker.gpu.buffer_utils as buffer_utils  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402

from harness.engine.vllm_ext import (NUCLEUS_ARG, NUCLEUS_PROCESSOR, NUCLEUS_PROCESSOR_V2,  # noqa: E402
                                     SAMPLER_PROCESSOR_V2)
from harness.engine.vllm_ext.nucleus import NucleusCountProcessor  # noqa: E402
from harness.engine.vllm_ext.samplers import SamplerProcessor  # noqa: E402

VOCAB = 3000


def _apply_write(self) -> None:
    """StagedWriteTensor.apply_write without its Triton kernel: each staged (row, start,
    values) written at row * stride + start of the flat buffer, as the kernel does."""
    flat = self.gpu.view(-1)
    stride = self.gpu.stride(0)
    lo = 0
    for index, start, hi in zip(self._staged_write_indices, self._staged_write_starts, self._staged_write_cu_lens):
        vals = torch.tensor(self._staged_write_contents[lo:hi], dtype=self.dtype)
        at = index * stride + start
        flat[at:at + len(vals)] = vals
        lo = hi
    self.clear_staged_writes()


@pytest.fixture
def v2_runner(monkeypatch):
    """vLLM's V2 request state and sampler on the CPU, our two V2 processors loaded by name."""
    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    monkeypatch.setattr(buffer_utils.StagedWriteTensor, "apply_write", _apply_write)
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors
    from vllm.v1.worker.gpu.sample.sampler import Sampler
    from vllm.v1.worker.gpu.states import RequestState

    cfg = VllmConfig()
    states = RequestState(max_num_reqs=8, max_model_len=96, max_num_batched_tokens=512, num_speculative_steps=0,
                          vocab_size=VOCAB, device=torch.device("cpu"))
    procs = build_custom_logits_processors(cfg, states, False, [NUCLEUS_PROCESSOR_V2, SAMPLER_PROCESSOR_V2])
    sampler = Sampler(cfg, 8, VOCAB, torch.device("cpu"), states, custom_logits_processors=procs)
    return SimpleNamespace(states=states, sampler=sampler, procs=procs)


class V2Batch:
    """The V2 runner's side of a step, as ``GPUModelRunner`` does it: add (``req_states``
    then ``sampler.add_request``, then both flush), remove (the slot goes back to the free
    list, nothing told to the processors), run the sampler's processing on a batch in any
    order, append the chosen tokens (``post_update``)."""

    def __init__(self, runner) -> None:
        self.r = runner

    def add(self, rid: str, prompt: list[int], out: list[int], sp: SamplingParams) -> int:
        st = self.r.states
        st.add_request(rid, len(prompt), prompt + out, 0, sp.max_tokens)
        slot = st.req_id_to_index[rid]
        self.r.sampler.add_request(slot, sp)
        st.apply_staged_writes()
        self.r.sampler.apply_staged_writes()
        return slot

    def remove(self, rid: str) -> None:
        self.r.states.remove_request(rid)

    def process(self, order: list[str], logits: torch.Tensor) -> torch.Tensor:
        st = self.r.states
        idx_np = np.array([st.req_id_to_index[r] for r in order], dtype=np.int32)
        idx = torch.tensor(idx_np, dtype=torch.int32)
        seq = st.total_len.gpu[idx.long()].numpy().astype(np.int32)
        return self.r.sampler.apply_sampling_params(
            logits.clone(), idx, idx, idx_np, torch.tensor(seq - 1), torch.zeros(len(order), dtype=torch.int32),
            torch.zeros(len(order), dtype=torch.int32), seq)

    def post_update(self, rid: str, token: int) -> None:
        st = self.r.states
        slot = st.req_id_to_index[rid]
        n = int(st.total_len.gpu[slot])
        st.all_token_ids.gpu[slot, n] = token
        st.total_len.gpu[slot] = n + 1


def row_logits(rid: str, step: int) -> torch.Tensor:
    """One request's logits at one step, whatever its row: random, with ties and a banned block."""
    rng = np.random.default_rng(zlib.crc32(f"{rid}/{step}".encode()))
    x = rng.normal(size=VOCAB) * rng.choice([0.5, 1.5, 4.0])
    if step % 3 == 1:
        x = np.round(x * 2) / 2  # heavy ties
    if step % 4 == 2:
        x[: VOCAB // 3] = -np.inf  # banned tokens
    return torch.tensor(x, dtype=torch.float32)


DYN = {"top_p": 0.6, "max_top_p": 0.95, "increase": 0.1, "decay": 0.05, "window": 16, "ngram": 2}
#: request id -> (nucleus p or sampler (rule, args) or None, step added, step finished)
REQUESTS = {
    "count9": (0.9, 0, 12), "count5": (0.5, 2, 9), "count1": (1.0, 6, 12),
    "typical": (("typical", {"typical_p": 0.9}), 0, 12), "eps": (("epsilon", {"epsilon": 3e-4}), 1, 7),
    "eta": (("eta", {"epsilon": 0.02}), 3, 12), "miro": (("mirostat", {"tau": 3.0, "eta": 0.3}), 0, 12),
    "dyn": (("dynamic_top_p", DYN), 0, 12), "plain": (None, 0, 5),
}
PREEMPT = {"miro": (4, 6), "dyn": (5, 8)}  # preempted at step a, back at step b (with its output so far)


def sampling_params(spec) -> SamplingParams:
    if isinstance(spec, float):
        return SamplingParams(max_tokens=64, temperature=0.0, extra_args={NUCLEUS_ARG: spec})
    if spec is None:
        return SamplingParams(max_tokens=64, temperature=0.0)
    rule, args = spec
    return SamplingParams(max_tokens=64, temperature=1.0, extra_args={SAMPLER_ARG: {"rule": rule, **args}})


class Reference:
    """The numpy rule of one sampler request, following its own tokens."""

    def __init__(self, rule: str, args: dict) -> None:
        self.rule, self.args, self.out = rule, args, []
        self.state = 2 * args["tau"] if rule == "mirostat" else args.get("top_p")
        self.dyn = DynamicTopPWarper(**args) if rule == "dynamic_top_p" else None

    def keep(self, lp: np.ndarray) -> np.ndarray:
        a = self.args
        if self.rule == "typical":
            return TypicalWarper(a["typical_p"]).keep(lp)
        if self.rule == "epsilon":
            return EpsilonWarper(a["epsilon"]).keep(lp)
        if self.rule == "eta":
            return EtaWarper(a["epsilon"]).keep(lp)
        if self.rule == "mirostat":
            return MirostatV2(a["tau"], a["eta"]).keep(lp, self.state)
        if self.out:
            self.state = self.dyn.next_p(self.state, self.out)
        return DynamicTopPWarper.keep(lp, self.state)

    def chose(self, token: int, lp: np.ndarray, mask: np.ndarray) -> None:
        if self.rule == "mirostat":
            p = np.exp(lp.astype(np.float64))
            self.state = MirostatV2(self.args["tau"], self.args["eta"]).update(self.state, p[token] / p[mask].sum())
        self.out.append(token)


def test_v2_processors_equal_v1_and_the_reference_across_adds_finishes_preemptions_and_reorders(v2_runner):
    v2 = V2Batch(v2_runner)
    v1_count, v1_samp = NucleusCountProcessor(None, torch.device("cpu"), False), SamplerProcessor(
        None, torch.device("cpu"), False)
    v1_rows: dict[str, int] = {}  # V1: each request keeps one batch row (V1 moves are tested elsewhere)
    outs: dict[str, list[int]] = {r: [] for r in REQUESTS}  # the tokens each request generated
    refs = {r: Reference(*spec) for r, (spec, _, _) in REQUESTS.items() if isinstance(spec, tuple)}
    prompts = {r: [int(t) for t in np.random.default_rng(i).integers(0, VOCAB, size=5 + i)]
               for i, r in enumerate(REQUESTS)}
    live: list[str] = []
    order_rng = np.random.default_rng(7)
    checked = {"counts": 0, "masks": 0, "untouched": 0, "preempted": 0}
    for step in range(12):
        for rid, (spec, start, end) in REQUESTS.items():
            a, b = PREEMPT.get(rid, (None, None))
            if step == end or step == a:
                live.remove(rid)
                v2.remove(rid)
                row = v1_rows.pop(rid)
                upd = SimpleNamespace(removed=[row], added=[], moved=[], batch_size=0)
                v1_count.update_state(upd)
                v1_samp.update_state(upd)
            if step == start or step == b:
                live.append(rid)
                v2.add(rid, prompts[rid], outs[rid], sampling_params(spec))
                row = next(i for i in range(16) if i not in v1_rows.values())
                v1_rows[rid] = row
                sp = sampling_params(spec)
                upd = SimpleNamespace(removed=[], added=[(row, sp, prompts[rid], outs[rid])], moved=[], batch_size=0)
                v1_count.update_state(upd)
                v1_samp.update_state(upd)
                checked["preempted"] += step == b
        order = list(order_rng.permutation(live))  # V2 rows come in a new order every step
        raw = {r: row_logits(r, step) for r in live}
        got_v2 = v2.process(order, torch.stack([raw[r] for r in order]))
        v1_in = torch.zeros(16, VOCAB)
        for r in live:
            v1_in[v1_rows[r]] = raw[r]
        got_v1 = v1_samp.apply(v1_count.apply(v1_in.clone()))
        for i, rid in enumerate(order):
            spec = REQUESTS[rid][0]
            lp = torch.log_softmax(raw[rid], -1).numpy()
            r2, r1 = got_v2[i], got_v1[v1_rows[rid]]
            if spec is None:
                assert torch.equal(r2, raw[rid]), (rid, step)  # a row that asks nothing is untouched
                token = int(raw[rid].argmax())
                checked["untouched"] += 1
            elif isinstance(spec, float):
                n = nucleus_size(lp, spec)
                token = int(r2.argmax())  # what the greedy draw takes: N - 1
                assert token == int(r1.argmax()) == n - 1, (rid, step)
                checked["counts"] += 1
            else:
                m2, m1 = torch.isfinite(r2).numpy(), torch.isfinite(r1).numpy()
                want = refs[rid].keep(lp)
                assert np.array_equal(m2, want) and np.array_equal(m1, want), (rid, step, int(m2.sum()), int(want.sum()))
                assert torch.equal(r2[m2], raw[rid][m2])  # kept logits unchanged
                p = np.where(want, np.exp(lp.astype(np.float64)), 0.0)
                token = int(np.random.default_rng(zlib.crc32(f"draw/{rid}/{step}".encode())).choice(VOCAB, p=p / p.sum()))
                checked["masks"] += 1
            if spec is not None and not isinstance(spec, float) and spec[0] in ("mirostat", "dynamic_top_p"):
                st2 = v2_runner.procs[1].reqs[v2_runner.states.req_id_to_index[rid]]
                st1 = v1_samp.reqs[v1_rows[rid]]
                assert st2.state == st1.state and st2.out == st1.out == outs[rid], (rid, step)  # one code, one state
                assert st2.state == pytest.approx(refs[rid].state, abs=1e-9), (rid, step)
            if rid in refs:
                refs[rid].chose(token, lp, want)
            outs[rid].append(token)  # V1: vLLM's live output list grows
            v2.post_update(rid, token)  # V2: the runner appends the token to the slot's buffer
    assert checked["counts"] >= 20 and checked["masks"] >= 40 and checked["untouched"] == 5 and checked["preempted"] == 2


def test_a_preempted_mirostat_request_keeps_mu_on_v2_as_on_v1(v2_runner):
    """Preemption in the middle: the request comes back in another slot with its output; its
    mu is the one it had (not 2 tau again), equal on V1 and V2 at every step."""
    v2 = V2Batch(v2_runner)
    spec = ("mirostat", {"tau": 2.0, "eta": 0.5})
    v1 = SamplerProcessor(None, torch.device("cpu"), False)
    out: list[int] = []
    prompt = [1, 2, 3, 4]
    v1.update_state(SimpleNamespace(removed=[], added=[(0, sampling_params(spec), prompt, out)], moved=[],
                                    batch_size=0))
    v2.add("filler", [9, 9], [], sampling_params(None))  # holds a slot, so the request moves
    v2.add("m", prompt, [], sampling_params(spec))
    first_slot = v2_runner.states.req_id_to_index["m"]
    mus = []
    for step in range(10):
        if step == 5:
            v2.remove("filler")
            v2.remove("m")
            v2.add("other", [5, 5, 5], [], sampling_params(None))  # takes m's old slot (the free list is LIFO)
            v2.add("m", prompt, out, sampling_params(spec))
            assert v2_runner.states.req_id_to_index["m"] != first_slot
            v1.update_state(SimpleNamespace(removed=[0], added=[], moved=[], batch_size=0))
            v1.update_state(SimpleNamespace(removed=[], added=[(2, sampling_params(spec), prompt, out)],
                                            moved=[], batch_size=0))
        raw = row_logits("m", step)
        names = [n for n in v2_runner.states.req_id_to_index if n != "m"] + ["m"]
        got2 = v2.process(names, torch.stack([row_logits(n, step) if n != "m" else raw for n in names]))[-1]
        row1 = 0 if step < 5 else 2
        v1_in = torch.zeros(3, VOCAB)
        v1_in[row1] = raw
        got1 = v1.apply(v1_in)[row1]
        assert torch.equal(torch.isfinite(got2), torch.isfinite(got1)), step
        slot = v2_runner.states.req_id_to_index["m"]
        mus.append((v2_runner.procs[1].reqs[slot].state, v1.reqs[row1].state))
        token = int(torch.where(torch.isfinite(got1), raw, torch.full_like(raw, -1e30)).argmin()
                    if step % 2 else got1.argmax())
        out.append(token)
        v2.post_update("m", token)
        for n in names[:-1]:
            v2.post_update(n, 0)
    assert all(a == b for a, b in mus)
    assert mus[5][0] != 2 * 2.0 and mus[4][0] != mus[5][0]  # moved on across the preemption, not reset


def test_the_v2_loader_takes_the_v2_twins_and_refuses_the_v1_classes(v2_runner):
    """Why the engine must register the runner's own classes: V2 refuses V1 processors."""
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors
    from vllm.v1.worker.gpu.sample.logits_processor.loader import build_custom_logits_processors_params_validator
    with pytest.raises(ValueError, match="not a subclass"):
        build_custom_logits_processors(VllmConfig(), v2_runner.states, False, [NUCLEUS_PROCESSOR])
    validate = build_custom_logits_processors_params_validator((NUCLEUS_PROCESSOR_V2, SAMPLER_PROCESSOR_V2))
    validate(sampling_params(("typical", {"typical_p": 0.9})))
    from vllm.exceptions import VLLMValidationError
    with pytest.raises(VLLMValidationError, match="unknown rule 'nope'"):  # at admission, in the front end
        validate(SamplingParams(extra_args={SAMPLER_ARG: {"rule": "nope"}}))
    assert [type(p).__name__ for p in v2_runner.procs] == ["NucleusCountProcessorV2", "SamplerProcessorV2"]
