"""``engine.engine_core_process``: vLLM's engine core in a process of its own (vLLM's layout,
the default) against in the engine's process (``false``, one process start fewer), side by
side: engine start time and greedy tokens/s of SmolLM2-135M on this CPU.

The layout is process-wide (vLLM reads ``VLLM_ENABLE_V1_MULTIPROCESSING``), so each
measurement runs in a fresh child process; the two layouts alternate, repetition by
repetition.

    python bench/engine_layout.py             # 32 prompts x 64 tokens, 2 repetitions
    python bench/engine_layout.py --quick     # 16 x 32, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYOUTS = {"in-process engine core": False, "engine-core process (default)": True}


def child(n_prompts: int, max_tokens: int, core_process: int) -> None:
    from vllm import SamplingParams

    from harness.engine.engine import Engine
    from harness.driver.placement import core_share
    from harness.models import prepare
    t0 = time.perf_counter()
    eng = Engine(str(prepare("smollm2-135m")), {"max_model_len": 1024, "kv_cache_gib": 1,
                                                "engine_core_process": bool(core_process)}, cpu_cores=core_share(0, 1))
    start = time.perf_counter() - t0
    ids = [eng.encode(f"Question {i}: name a city and say why it is worth a visit.", chat=True) for i in range(n_prompts)]
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    eng.generate(ids, [sp] * len(ids))  # warm-up beyond the engine's own
    t0 = time.perf_counter()
    outs = eng.generate(ids, [sp] * len(ids))
    rate = sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0)
    print("RESULT" + json.dumps({"start_s": start, "tok_s": rate, "dtype": eng.dtype}), flush=True)
    eng.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    n, tokens, reps = (16, 32, 1) if args.quick else (32, 64, 2)
    from harness.hardware import cpu_info
    runs: dict[str, list[dict]] = {k: [] for k in LAYOUTS}
    for rep in range(reps):
        for name in (list(LAYOUTS) if rep % 2 == 0 else list(LAYOUTS)[::-1]):
            env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR")
            res = subprocess.run([sys.executable, __file__, "--child", str(n), str(tokens), str(int(LAYOUTS[name]))],
                                 cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=900)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")]
            if res.returncode or not line:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            runs[name].append(json.loads(line[0][6:]))
    print(f"\nCPU: {cpu_info().describe()}; {n} prompts x {tokens} tokens greedy, {reps} rep(s), "
          f"dtype {runs[next(iter(LAYOUTS))][0]['dtype']}")
    print(f"{'layout':<38} {'engine start s':>15} {'tok/s':>8}")
    summary = {}
    for name, rs in runs.items():
        start, rate = statistics.median(r["start_s"] for r in rs), statistics.median(r["tok_s"] for r in rs)
        summary[name] = {"start_s": round(start, 1), "tok_s": round(rate, 1), "all": rs}
        print(f"{name:<38} {start:>15.1f} {rate:>8.1f}")
    a, b = (summary[k] for k in LAYOUTS)
    print(f"in-process / separate: start {a['start_s'] / b['start_s']:.2f}x, tok/s {a['tok_s'] / b['tok_s']:.2f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "engine_layout.json").write_text(json.dumps({"cpu": cpu_info().as_dict(), "prompts": n, "max_tokens": tokens,
                                                         "reps": reps, "layouts": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
