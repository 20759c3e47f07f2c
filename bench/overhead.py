"""Harness overhead: generated tokens/s of the harness against vLLM's LLM.generate called
directly, with the same engine settings, prompts, parameters and seeds, in one run.

Both engines stay loaded (same cores, same options); measurements alternate between
them, strategy by strategy and repetition by repetition, so machine noise hits both
sides alike. The harness side is the full path a unit takes in `deceval run`: a Ray
actor runs the unit (tokenisation, per-sample seeds, generation, row building), the
driver scores the rows and writes the Parquet file.

    python bench/overhead.py            # 32 prompts x 64 tokens, 3 repetitions
    python bench/overhead.py --quick    # 16 prompts x 32 tokens, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRATEGIES = [("greedy", {}), ("temperature", {"temperature": 0.8}), ("top_k", {"top_k": 40}),
              ("top_p", {"top_p": 0.9}), ("min_p", {"min_p": 0.1})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--reps", type=int)
    ap.add_argument("--cores", default=None, help="cores for both engines (default: all)")
    args = ap.parse_args()
    n_prompts = args.prompts or (16 if args.quick else 32)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    reps = args.reps or (1 if args.quick else 3)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import ray
    from vllm import LLM, SamplingParams

    from harness.config import EngineOptions, PromptSetConfig, StrategyConfig
    from harness.driver.placement import actor_class, core_share, start_ray
    from harness.hardware import cpu_info, resolve_dtype
    from harness.metrics import default_metrics, score_rows
    from harness.models import prepare
    from harness.plan import WorkUnit
    from harness.tasks import load_prompt_set
    from harness.plan import builtin_columns
    from harness.report import write_unit
    from harness.rows import sample_schema
    from harness.seeding import sample_seed
    from strategies import get_strategy

    cores = args.cores or core_share(0, 1)
    path = str(prepare("smollm2-135m"))
    opts = EngineOptions(max_model_len=1024, kv_cache_gib=2, cpu_cores=cores)
    prompts = (load_prompt_set(PromptSetConfig("facts", None, True, None)).prompts
               + load_prompt_set(PromptSetConfig("open_ended", None, True, None)).prompts)[:n_prompts]

    # Direct side: vLLM in this process, same options as the harness's Engine.
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cores
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(opts.kv_cache_gib)
    dtype = resolve_dtype(opts.dtype, "cpu")  # what the harness's engine resolves dtype auto to
    llm = LLM(model=path, dtype=dtype, max_model_len=opts.max_model_len, block_size=opts.block_size,
              enable_prefix_caching=opts.enable_prefix_caching, seed=opts.seed, enforce_eager=opts.enforce_eager,
              max_logprobs=-1, disable_log_stats=False)
    tok = llm.get_tokenizer()
    token_prompts = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p.text}], add_generation_prompt=True, tokenize=True)
        token_prompts.append({"prompt_token_ids": list(ids["input_ids"] if hasattr(ids, "keys") else ids)})

    start_ray(None, verbose=False)
    actor = actor_class().options(num_cpus=1).remote(path, opts.model_dump(), cores, False)
    ray.get(actor.info.remote())
    metrics = default_metrics()
    schema = sample_schema(metrics, *builtin_columns())
    out_dir = Path(tempfile.mkdtemp(prefix="deceval-overhead-"))

    def direct(name, params, seed_base):
        s = get_strategy(name).from_dict(params)
        sps = []
        for p in prompts:
            kw = dict(s.sampling_kwargs(), max_tokens=max_tokens)
            if not s.deterministic:
                kw["seed"] = sample_seed(seed_base, p.id, 0)
            sps.append(SamplingParams(**kw))
        t0 = time.perf_counter()
        outs = llm.generate(token_prompts, sps, use_tqdm=False)
        dt = time.perf_counter() - t0
        return sum(len(o.outputs[0].token_ids) for o in outs), dt

    def harness(name, params, seed_base, rep):
        s = get_strategy(name).from_dict(params)
        sc = StrategyConfig(name, name, s.params.to_dict(), 1, max_tokens)
        unit = WorkUnit(f"bench-{name}-{rep}", "smollm2-135m", "smollm2-135m", sc, tuple(prompts), seed_base, 0, ())
        t0 = time.perf_counter()
        result = ray.get(actor.run_unit.remote(unit))
        score_rows(result.rows, metrics)
        write_unit(out_dir, unit.relpath, result.rows, schema, {"unit_id": unit.id})
        dt = time.perf_counter() - t0
        return result.generated_tokens, dt

    # Warm-up both sides once.
    direct("greedy", {}, 0)
    harness("greedy", {}, 0, -1)

    results = []
    for name, params in STRATEGIES:
        d_rates, h_rates, toks = [], [], None
        for rep in range(reps):
            order = (direct, harness) if rep % 2 == 0 else (harness, direct)
            for fn in order:
                n, dt = fn(name, params, rep) if fn is direct else fn(name, params, rep, rep)
                (d_rates if fn is direct else h_rates).append(n / dt)
                toks = n
        d, h = statistics.median(d_rates), statistics.median(h_rates)
        results.append({"strategy": name, "tokens": toks, "direct_tok_s": round(d, 1), "harness_tok_s": round(h, 1),
                        "ratio": round(h / d, 3)})

    total_ratio = statistics.median(r["ratio"] for r in results)
    print(f"\nCPU: {cpu_info().describe()}")
    print(f"{n_prompts} prompts x up to {max_tokens} tokens, {reps} rep(s), cores {cores}, {dtype}")
    print(f"{'strategy':<12} {'tokens':>7} {'direct tok/s':>13} {'harness tok/s':>14} {'ratio':>6}")
    for r in results:
        print(f"{r['strategy']:<12} {r['tokens']:>7} {r['direct_tok_s']:>13} {r['harness_tok_s']:>14} {r['ratio']:>6}")
    print(f"median harness/direct ratio: {total_ratio:.3f} (target >= 0.95)")
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "overhead.json").write_text(json.dumps({"results": results, "median_ratio": total_ratio,
                                                        "prompts": n_prompts, "max_tokens": max_tokens,
                                                        "reps": reps, "cores": cores, "dtype": dtype,
                                                        "cpu": cpu_info().as_dict()}, indent=2))
    ray.kill(actor)
    ray.shutdown()


if __name__ == "__main__":
    main()
