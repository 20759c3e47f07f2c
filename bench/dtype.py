"""bfloat16 against float32 on this CPU, side by side, and whether ``dtype: auto`` chose the
faster one.

Two engines of SmolLM2-135M stay loaded, one per dtype, both bound to the same cores;
measurements alternate between them repetition by repetition, so machine noise hits both
alike. Each measurement is one batched greedy ``generate`` of 32 prompts x 64 tokens with
EOS ignored (every request generates all its tokens), then the same with top-p 0.9.

    python bench/dtype.py              # 32 prompts x 64 tokens, 3 repetitions
    python bench/dtype.py --quick      # 16 prompts x 32 tokens, 1 repetition
    scripts/avx2-emulation/run python bench/dtype.py   # as if this CPU had AVX2 only

Exit status 1 when ``auto`` resolved to the slower dtype on this machine by more than
5%: then the rule in harness/hardware.py is wrong for this CPU and must be fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DTYPES = ("bfloat16", "float32")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--reps", type=int)
    args = ap.parse_args()
    n_prompts = args.prompts or (16 if args.quick else 32)
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    reps = args.reps or (1 if args.quick else 3)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import SamplingParams

    from harness.config import PromptSetConfig
    from harness.engine.engine import Engine
    from harness.driver.placement import core_share
    from harness.hardware import cpu_info, resolve_dtype
    from harness.models import prepare
    from harness.tasks import load_prompt_set

    cpu = cpu_info()
    cores = core_share(0, 1)
    path = str(prepare("smollm2-135m"))
    texts = [p.text for p in load_prompt_set(PromptSetConfig("open_ended", None, True, None)).prompts
             + load_prompt_set(PromptSetConfig("facts", None, True, None)).prompts][:n_prompts]
    engines = {}
    load_s = {}
    for dtype in DTYPES:
        t0 = time.perf_counter()
        engines[dtype] = Engine(path, {"dtype": dtype, "max_model_len": 1024, "kv_cache_gib": 1}, cpu_cores=cores)
        load_s[dtype] = time.perf_counter() - t0
    prompts = [engines["float32"].encode(t, chat=True) for t in texts]
    samplers = {"greedy": dict(temperature=0.0), "top_p 0.9": dict(temperature=1.0, top_p=0.9, seed=0)}

    def measure(dtype: str, kwargs: dict) -> float:
        sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, **kwargs)
        t0 = time.perf_counter()
        outs = engines[dtype].generate(prompts, [sp] * len(prompts))
        dt = time.perf_counter() - t0
        return sum(len(o.token_ids) for o in outs) / dt

    for dtype in DTYPES:  # one more warm-up each, beyond the engine's own
        measure(dtype, samplers["greedy"])
    rates: dict[str, dict[str, list[float]]] = {s: {d: [] for d in DTYPES} for s in samplers}
    for rep in range(reps):
        for sampler, kwargs in samplers.items():
            for dtype in (DTYPES if rep % 2 == 0 else DTYPES[::-1]):
                rates[sampler][dtype].append(measure(dtype, kwargs))

    auto = resolve_dtype("auto", "cpu", cpu)
    print(f"\nCPU: {cpu.describe()}; flags: {' '.join(cpu.relevant_flags()) or '-'}")
    print(f"{n_prompts} prompts x {max_tokens} tokens, {reps} rep(s), cores {cores}; engine start "
          + ", ".join(f"{d} {load_s[d]:.1f} s" for d in DTYPES))
    print(f"{'sampler':<10} {'bfloat16 tok/s':>15} {'float32 tok/s':>14} {'bf16/fp32':>10}")
    results = []
    for sampler in samplers:
        med = {d: statistics.median(rates[sampler][d]) for d in DTYPES}
        ratio = med["bfloat16"] / med["float32"]
        results.append({"sampler": sampler, "bfloat16_tok_s": round(med["bfloat16"], 1),
                        "float32_tok_s": round(med["float32"], 1), "bf16_over_fp32": round(ratio, 3),
                        "all": {d: [round(r, 1) for r in rates[sampler][d]] for d in DTYPES}})
        print(f"{sampler:<10} {med['bfloat16']:>15.1f} {med['float32']:>14.1f} {ratio:>10.3f}")
    ratio = statistics.median(r["bf16_over_fp32"] for r in results)
    faster = "bfloat16" if ratio > 1 else "float32"
    wrong = (auto == "bfloat16" and ratio < 0.95) or (auto == "float32" and ratio > 1 / 0.95)
    print(f"median bf16/fp32: {ratio:.3f} -> {faster} is faster here; dtype auto resolves to {auto}: "
          + ("WRONG for this CPU, fix the rule in harness/hardware.py" if wrong else "right"))
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "dtype.json").write_text(json.dumps({
        "cpu": cpu.as_dict(), "prompts": n_prompts, "max_tokens": max_tokens, "reps": reps, "cores": cores,
        "engine_start_s": {d: round(load_s[d], 1) for d in DTYPES}, "results": results,
        "median_bf16_over_fp32": ratio, "auto": auto, "auto_is_right": not wrong}, indent=2))
    for eng in engines.values():
        eng.close()
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
