"""Order effect: does a strategy's cost depend on where its unit sits in the plan?

One plan per probe strategy (a native sampler, top-p 0.9, and WSP K = 4): the probe runs
first, in the middle and last, other strategies between. Each plan runs twice through the
real runner (embedded Ray, one engine actor on every core, SmolLM2 on the facts prompts):

- ``rule`` (the default): each unit starts from an empty prefix and tail cache, after the
  engine's warm-up; each unit is timed ``--repeats`` times (generation.timing_repeats, the
  median is its unit_seconds), so a burst of other load on the machine moves one timing,
  not the figure;
- ``shared``: ``share_prefix_cache: true, warmup_tokens: 0``, what the harness did before
  (prompt KV carried from unit to unit, the first unit paying the engine's first-use costs).

For each probe position it prints tok/s, the ratio to the first position, computed tokens
and whether they and the completions equal the first position's. Target under the rule:
equal computed tokens and tok/s within +-20% of the first position.

    python bench/order_effect.py            # 40 prompts x 32 tokens
    python bench/order_effect.py --quick    # 16 prompts x 16 tokens
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBES = {
    "top_p": {"name": "top_p", "top_p": 0.9},
    "wsp": {"name": "wsp", "max_candidates": 4},
}
FILLERS = [{"name": "greedy"}, {"name": "min_p", "min_p": 0.1}]
POSITIONS = ("first", "middle", "last")
MODES = {"rule": {}, "shared": {"share_prefix_cache": True, "warmup_tokens": 0}}


def plan(probe: str) -> list[dict]:
    """probe@first, filler, probe@middle, filler, probe@last."""
    p = PROBES[probe]
    return [{**p, "label": f"{probe}@first"}, FILLERS[0], {**p, "label": f"{probe}@middle"}, FILLERS[1],
            {**p, "label": f"{probe}@last"}]


def measure(probe: str, mode: str, n_prompts: int, max_tokens: int, repeats: int, out_dir: Path) -> list[dict]:
    from harness.config import resolve_config
    from harness.driver.runner import run
    from harness.report import read_samples

    cfg = resolve_config({
        "run_name": f"order-{probe}-{mode}", "models": ["smollm2-135m"], "chat": True,
        "engine": {"max_model_len": 1024, "kv_cache_gib": 1, **MODES[mode]},
        "prompt_sets": [{"name": "facts", "limit": n_prompts}], "strategies": plan(probe),
        # shared mode carries the cache between repeats too, so it is timed once (the config refuses more)
        "generation": {"max_tokens": max_tokens, "seed": 0, "timing_repeats": 1 if mode == "shared" else repeats},
        "metrics": ["length"],
        "output": {"dir": str(out_dir)}}, f"order-effect-{probe}-{mode}")
    outcome = run(cfg, out=io.StringIO(), progress=False, keep_engines=True)
    if not outcome.ok:
        raise SystemExit(f"run failed: {outcome.units_failed}")
    df = read_samples(outcome.run_dir)
    key = ["prompt_id", "sample_index"]
    first = df[df["strategy_label"] == f"{probe}@first"].sort_values(key)
    rows = []
    for pos in POSITIONS:
        g = df[df["strategy_label"] == f"{probe}@{pos}"].sort_values(key)
        secs = float(g.groupby("unit_id")["unit_seconds"].first().sum())
        rows.append({"probe": probe, "mode": mode, "position": pos, "tok_s": g["completion_tokens"].sum() / secs,
                     "computed": int(g["computed_tokens"].sum()), "cached": int(g["cached_tokens"].sum()),
                     "same_computed": g["computed_tokens"].tolist() == first["computed_tokens"].tolist(),
                     "same_text": g["completion"].tolist() == first["completion"].tolist()})
    for r in rows:
        r["ratio"] = r["tok_s"] / rows[0]["tok_s"]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per unit under the rule (median)")
    args = ap.parse_args()
    n, tokens = (16, 16) if args.quick else (40, 32)
    from harness.driver.placement import KEPT
    from harness.hardware import cpu_info
    from harness.models import prepare

    prepare("smollm2-135m")
    print(f"CPU: {cpu_info().describe()}; {n} facts prompts (chat) x {tokens} tokens, SmolLM2-135M, "
          f"one engine on every core, {args.repeats} timing repeats per unit under the rule", flush=True)
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:  # one engine per mode (its options differ), kept across its two plans
            for probe in PROBES:
                results += measure(probe, mode, n, tokens, args.repeats, Path(tmp))
            KEPT.release()
    print(f"\n{'probe':6} {'mode':7} {'position':8} {'tok/s':>8} {'ratio':>6} {'computed':>9} {'cached':>7} "
          f"{'computed = first':>16} {'text = first':>12}")
    for r in results:
        print(f"{r['probe']:6} {r['mode']:7} {r['position']:8} {r['tok_s']:8.1f} {r['ratio']:6.2f} {r['computed']:9d} "
              f"{r['cached']:7d} {str(r['same_computed']):>16} {str(r['same_text']):>12}")
    rule = [r for r in results if r["mode"] == "rule"]
    ok = all(r["same_computed"] for r in rule) and all(0.8 <= r["ratio"] <= 1.2 for r in rule)
    ratios = ", ".join(f"{r['ratio']:.2f}" for r in rule)
    print(f"\nrule: computed tokens equal at every position: {all(r['same_computed'] for r in rule)}; "
          f"tok/s within +-20% of the first: {all(0.8 <= r['ratio'] <= 1.2 for r in rule)} "
          f"(ratios {ratios}); {time.perf_counter() - t0:.0f} s")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "order_effect.json").write_text(json.dumps({"cpu": cpu_info().as_dict(), "prompts": n,
                                                       "repeats": args.repeats,
                                                       "max_tokens": tokens, "results": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
