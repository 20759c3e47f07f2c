"""Strategy benchmark, on ONE engine in one run (same prompts for every strategy).

    .venv/bin/python bench/strategies.py [--quick] [--measure-nucleus] [--dtype auto|bfloat16|float32]

Reports generated tokens/s for greedy, top-p 0.9, the samplers inside generate (typical,
eta, epsilon, Mirostat v2, dynamic top-p: the engine's sampler logits processor, vLLM's
draw), beam search width 4 (vLLM's LLM.beam_search, and ours on the step driver and the
tail cache) and WSP (K = 4 and 8); for WSP also its mean candidate count, engine requests
per generated token and engine-computed (uncached) prompt tokens per generated token, from
the cached-token counts. Targets: each sampler >= 0.8x top-p tokens/s; cached beam-4 >= 4x
vLLM's beam-4; WSP K=8 >= 1.5x vLLM's beam-4. ``--only typical_stepwise,...`` adds a
sampler's stepwise reference (``impl: stepwise``) for the side-by-side figure.

``--measure-nucleus`` first times the ways to get a top-p nucleus count for one lookahead
step (P prefixes x 8 candidates): the in-engine counter (the V1 logits processor in
harness.engine.vllm_ext.nucleus, exact), full-vocabulary flat logprobs counted in numpy (exact), and plain
top-k logprobs (20 / 1024; not exact when the nucleus is larger: the share of exact
counts is printed). ``DECEVAL_NUCLEUS_PROCESSOR=0`` runs everything on the flat fallback.

Timings on a shared 2-core machine are indicative only; ``--quick`` keeps it small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_prompts(n: int) -> list[str]:
    from harness.config import PromptSetConfig
    from harness.tasks import load_prompt_set
    texts = []
    for name in ("open_ended", "facts"):
        texts += [p.text for p in load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None)).prompts]
    return texts[:n]


@contextlib.contextmanager
def beam_requests_use_tail_cache():
    """Make vLLM's beam search requests opt in to the tail cache (its SamplingParams are
    built inside vLLM's beam search module), for a side-by-side figure only."""
    from vllm.entrypoints.generate.beam_search import offline

    from harness.engine.vllm_ext import TAIL_ARG
    original = offline.SamplingParams

    def with_tail(*args, **kwargs):
        kwargs["extra_args"] = {**(kwargs.get("extra_args") or {}), TAIL_ARG: True}
        return original(*args, **kwargs)

    offline.SamplingParams = with_tail
    try:
        yield
    finally:
        offline.SamplingParams = original


def measure_nucleus(engine, prompts_ids, k: int = 8, top_p: float = 0.9) -> dict:
    """One WSP lookahead step, P prefixes x k candidates, by each mechanism."""
    import numpy as np
    from vllm import SamplingParams

    from harness.engine.vllm_ext import TAIL_ARG
    from strategies.distributions import nucleus_size
    base = engine.next_token(prompts_ids, top_k=k, nucleus_p=top_p)
    batch = [list(p) + [c] for p, r in zip(prompts_ids, base) for c in r.token_ids[:k]]
    out: dict = {"requests": len(batch)}
    # warm the prefix cache for every variant alike
    engine.llm.generate([{"prompt_token_ids": b} for b in batch], SamplingParams(max_tokens=1, detokenize=False),
                        use_tqdm=False)
    t = time.perf_counter()
    flat = engine.next_token(batch, top_k=k, full=True)
    ns = [nucleus_size(r.full_logprobs, top_p) for r in flat]
    out["full_flat_logprobs_s"] = round(time.perf_counter() - t, 3)
    out["nucleus_sizes"] = {"min": int(min(ns)), "median": float(np.median(ns)), "max": int(max(ns))}
    if engine.nucleus_in_engine:
        t = time.perf_counter()
        lp = engine.next_token(batch, top_k=k, nucleus_p=top_p)
        out["logits_processor_s"] = round(time.perf_counter() - t, 3)
        out["logits_processor_agrees"] = round(float(np.mean([r.nucleus_size == n for r, n in zip(lp, ns)])), 4)
        out["logits_processor_topk_agrees"] = all(r.token_ids == f.token_ids for r, f in zip(lp, flat))
    for topk in (20, 1024):
        # Same caching as the other variants: they go through next_token, which opts in to the tail cache.
        extra = {"extra_args": {TAIL_ARG: True}} if engine.use_tail_cache else {}
        sp = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, logprobs=topk, flat_logprobs=True,
                            **extra)
        t = time.perf_counter()
        res = engine.llm.generate([{"prompt_token_ids": b} for b in batch], sp, use_tqdm=False)
        got = []
        for r in res:
            lp = np.asarray(r.outputs[0].logprobs.logprobs[1:], dtype=np.float32)
            c = np.cumsum(np.exp(np.sort(lp.astype(np.float64))[::-1]))
            got.append(int(np.searchsorted(c, top_p)) + 1 if c[-1] >= top_p else None)
        out[f"top{topk}_flat_s"] = round(time.perf_counter() - t, 3)
        out[f"top{topk}_exact_share"] = round(float(np.mean([g == n for g, n in zip(got, ns)])), 3)
    # numpy cost of the count itself, per request
    vec = engine.next_token(batch[:1], top_k=k, full=True)[0].full_logprobs
    t = time.perf_counter()
    for _ in range(50):
        nucleus_size(vec, top_p)
    out["numpy_count_ms_per_request"] = round((time.perf_counter() - t) / 50 * 1000, 2)
    return out


#: The samplers the processor runs inside generate, at the configs' settings.
SAMPLERS = {"typical": {"typical_p": 0.9}, "eta": {"epsilon": 3e-4}, "epsilon": {"epsilon": 3e-4},
            "mirostat": {"tau": 5.0, "eta": 0.1}, "dynamic_top_p": {"top_p": 0.9}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 prompts x 16 tokens (default 32 x 64)")
    ap.add_argument("--prompts", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--dtype", default="auto", help="auto (the harness default), bfloat16 or float32")
    ap.add_argument("--block-size", type=int, default=32, help="KV block size (prefix caching reuses whole blocks)")
    ap.add_argument("--measure-nucleus", action="store_true")
    ap.add_argument("--only", default="", help="comma list of greedy,top_p," + ",".join(SAMPLERS) +
                    ",<sampler>_stepwise,beam4,beam4_tail,beam4_cached,wsp4,wsp8,wsp8_no_tail")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    n = args.prompts or (8 if args.quick else 32)
    max_tokens = args.max_tokens or (16 if args.quick else 64)

    from harness.engine.engine import Engine
    from harness.driver.placement import core_share
    from harness.models import prepare
    from strategies import get_strategy
    from strategies.base import Stops
    from strategies.beam import beam_search
    from strategies.wsp import WSP, WSPParams

    engine = Engine(str(prepare("smollm2-135m")), {"dtype": args.dtype, "max_model_len": 1024, "kv_cache_gib": 2,
                                                  "seed": 0, "block_size": args.block_size, "enable_prefix_caching": True},
                    cpu_cores=core_share(0, 1))
    prompts = [engine.encode(t) for t in load_prompts(n)]
    results: dict = {"prompts": len(prompts), "max_tokens": max_tokens, "dtype": engine.dtype,
                     "cpu": engine.info()["cpu"],
                     "load_s": round(engine.load_seconds, 1)}
    # warm-up
    engine.generate(prompts[:2], [engine.sampling_params(max_tokens=2, temperature=0.0)] * 2)
    if args.measure_nucleus:
        results["nucleus_mechanism"] = measure_nucleus(engine, prompts[:16])
        print(json.dumps(results["nucleus_mechanism"]), flush=True)

    only = set(filter(None, args.only.split(",")))

    def want(name: str) -> bool:
        return not only or name in only

    def native(name, seeded: bool = False, **kw):
        sps = [engine.sampling_params(max_tokens=max_tokens, ignore_eos=True, **kw, **({"seed": i} if seeded else {}))
               for i in range(len(prompts))]
        t = time.perf_counter()
        outs = engine.generate(prompts, sps)
        dt = time.perf_counter() - t
        toks = sum(len(o.token_ids) for o in outs)
        results[name] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 1)}
        print(name, results[name], flush=True)

    if want("greedy"):
        native("greedy", temperature=0.0)
    if want("top_p"):
        native("top_p", seeded=True, temperature=1.0, top_p=0.9)
    for sname, sparams in SAMPLERS.items():
        if want(sname):  # inside generate: the sampler processor masks, vLLM draws
            native(sname, seeded=True, **get_strategy(sname).from_dict(sparams).sampling_kwargs())
        if f"{sname}_stepwise" in only:  # the numpy reference, one full-vocabulary request per step
            s = get_strategy(sname).from_dict({**sparams, "impl": "stepwise"})
            t = time.perf_counter()
            dec = s.decode(engine, prompts, seeds=list(range(len(prompts))), stops=Stops(max_tokens=max_tokens))
            dt = time.perf_counter() - t
            toks = sum(len(d.token_ids) for d in dec)
            results[f"{sname}_stepwise"] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 1)}
            print(f"{sname}_stepwise", results[f"{sname}_stepwise"], flush=True)
    if want("top_p") and any(want(s) for s in SAMPLERS):
        # top-p again after the samplers; the ratios use the faster of its two runs (the conservative baseline)
        first = results["top_p"]
        native("top_p", seeded=True, temperature=1.0, top_p=0.9)
        results["top_p_runs_tok_per_s"] = [first["tok_per_s"], results["top_p"]["tok_per_s"]]
        if first["tok_per_s"] > results["top_p"]["tok_per_s"]:
            results["top_p"] = first
    def beam(name: str) -> None:
        t = time.perf_counter()
        outs = engine.beam_search(prompts, beam_width=4, max_tokens=max_tokens, ignore_eos=True)
        dt = time.perf_counter() - t
        toks = sum(len(o["token_ids"]) for o in outs)
        results[name] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 1)}
        print(name, results[name], flush=True)

    if want("beam4"):
        beam("beam4")
    if want("beam4_cached"):  # vLLM's algorithm on the step driver: one new token per beam request
        t = time.perf_counter()
        res = beam_search(engine, prompts, width=4, max_tokens=max_tokens)  # no EOS: like ignore_eos
        dt = time.perf_counter() - t
        toks = sum(len(r.beams[0].tokens) - r.prompt_len for r in res)
        comp = sum(r.computed_tokens for r in res)
        req = sum(r.engine_requests for r in res)
        results["beam4_cached"] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 1),
                                   "computed_tokens_per_request": round(comp / max(1, req), 3)}
        print("beam4_cached", results["beam4_cached"], flush=True)
    if want("beam4_tail") and engine.tail_cache_slots:
        # What vLLM's beam search would gain from the same tail cache: its requests opt in.
        with beam_requests_use_tail_cache():
            beam("beam4_tail")
    def wsp(name: str, k: int, tail: bool) -> None:
        default = engine.use_tail_cache
        engine.use_tail_cache = tail and default
        try:
            w = WSP(WSPParams(max_candidates=k))
            t = time.perf_counter()
            dec = w.decode(engine, prompts, seeds=list(range(len(prompts))),
                           stops=Stops(max_tokens=max_tokens))  # no EOS: like ignore_eos, every sample runs max_tokens
            dt = time.perf_counter() - t
        finally:
            engine.use_tail_cache = default
        toks = sum(len(d.token_ids) for d in dec)
        steps = [s for d in dec for s in d.steps]
        req = sum(d.engine_requests for d in dec)
        comp = sum(d.computed_tokens for d in dec)
        cached = sum(d.cached_tokens for d in dec)
        cands = sum(s["candidates"] for s in steps)
        results[name] = {"tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 1),
                         "mean_candidates": round(cands / len(steps), 3),
                         "requests_per_token": round(req / toks, 3),
                         # one request per candidate per step, plus the step-0 request per prompt
                         "requests_expected": cands + len(prompts), "requests": req,
                         "computed_tokens_per_token": round(comp / toks, 3),
                         "cached_share": round(cached / max(1, cached + comp), 3)}
        tokens_of[name] = [d.token_ids for d in dec]
        print(name, results[name], flush=True)

    tokens_of: dict[str, list[list[int]]] = {}
    for k in (4, 8):
        if want(f"wsp{k}"):
            wsp(f"wsp{k}", k, tail=True)
    if want("wsp8_no_tail"):
        wsp("wsp8_no_tail", 8, tail=False)
    if "wsp8" in tokens_of and "wsp8_no_tail" in tokens_of:
        same = sum(a == b for a, b in zip(tokens_of["wsp8"], tokens_of["wsp8_no_tail"]))
        results["wsp8_same_tokens_with_and_without_tail_cache"] = f"{same}/{len(prompts)}"
        print("wsp8 samples identical with and without the tail cache:", results[
            "wsp8_same_tokens_with_and_without_tail_cache"], flush=True)
    ratios = {f"{s}_over_top_p": (s, "top_p") for s in SAMPLERS}
    ratios.update({f"{s}_stepwise_over_top_p": (f"{s}_stepwise", "top_p") for s in SAMPLERS})
    ratios["beam4_cached_over_beam4"] = ("beam4_cached", "beam4")
    ratios.update({"wsp8_over_beam4": ("wsp8", "beam4"), "wsp8_no_tail_over_beam4": ("wsp8_no_tail", "beam4"),
              "wsp8_over_beam4_tail": ("wsp8", "beam4_tail"), "wsp8_tail_speedup": ("wsp8", "wsp8_no_tail")})
    targets = {f"{s}_over_top_p": 0.8 for s in SAMPLERS} | {"beam4_cached_over_beam4": 4.0, "wsp8_over_beam4": 1.5}
    for key, (a, b) in ratios.items():
        if a in results and b in results:
            results[key] = round(results[a]["tok_per_s"] / results[b]["tok_per_s"], 2)
            print(f"{a} / {b} tokens/s: {results[key]}" + (f" (target >= {targets[key]})" if key in targets else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
