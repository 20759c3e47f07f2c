"""The GPU check: one small plan run several ways, token agreement and tokens/s per way.

    .venv/bin/python bench/gpu_check.py [--ways auto|v1,v2,v2-off] [--model smollm2-135m|PATH]
        [--prompts 8] [--max-tokens 32] [--dtype float32] [--out gpu_check.json]

The plan: greedy, typical (0.9), Mirostat v2 (tau 3), WSP (K = 4) and beam search (width 4 on
the step driver and the tail cache), each as one work unit through the harness's own worker
(``harness.engine.worker.execute_unit``), so each row says which model runner and which
decode path made it. The ways, one fresh engine each (a child process per way, since the
model runner is chosen when the engine starts):

- ``v1``: vLLM's model runner V1 (``VLLM_USE_V2_MODEL_RUNNER=0``) with the V1 logits processors;
- ``v2``: the model runner V2 (``VLLM_USE_V2_MODEL_RUNNER=1``, the CUDA default) with the V2 twins;
- ``v2-off``: V2 with the processors off (``DECEVAL_NUCLEUS_PROCESSOR=0``): samplers stepwise,
  WSP from full-vocabulary logprobs;
- ``v1-off``: V1 with the processors off (runs on the CPU too).

``auto`` (the default) is ``v1,v2,v2-off`` where torch sees a CUDA device and ``v1`` elsewhere
(V2 needs Triton, which no CPU build has). The JSON holds, per way, the runner and decode path
each strategy really got (from the rows), tokens/s (generated tokens over the unit's generation
seconds, warm-up excluded), and, against the first way, the share of samples with the same
completion and the mean share of agreeing leading tokens (completions re-tokenized with the
model's tokenizer). Greedy, WSP argmax and beam search are deterministic: every way should agree
up to near-ties of the dtype. Typical and Mirostat are seeded draws: V1 and V2 draw with
different generators and the stepwise path with numpy, so their tokens are not expected to
agree across those; their kept sets are checked in the tests. A way whose engine fails to start
records its error instead of stopping the check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: way -> the environment its engine starts under
WAYS: dict[str, dict[str, str]] = {
    "v1": {"VLLM_USE_V2_MODEL_RUNNER": "0"},
    "v2": {"VLLM_USE_V2_MODEL_RUNNER": "1"},
    "v2-off": {"VLLM_USE_V2_MODEL_RUNNER": "1", "DECEVAL_NUCLEUS_PROCESSOR": "0"},
    "v1-off": {"VLLM_USE_V2_MODEL_RUNNER": "0", "DECEVAL_NUCLEUS_PROCESSOR": "0"},
}
#: (label, strategy name, params)
PLAN: list[tuple[str, str, dict[str, Any]]] = [
    ("greedy", "greedy", {}),
    ("typical", "typical", {"typical_p": 0.9}),
    ("mirostat", "mirostat", {"tau": 3.0}),
    ("wsp_k4", "wsp", {"max_candidates": 4}),
    ("beam4_tail", "beam", {"width": 4, "impl": "cached"}),
]
#: strategies whose tokens do not depend on the runner's random generator
DETERMINISTIC = ("greedy", "wsp_k4", "beam4_tail")


def default_ways() -> list[str]:
    import torch
    return ["v1", "v2", "v2-off"] if torch.cuda.is_available() else ["v1"]


def load_prompts(n: int) -> list[Any]:
    from harness.config import PromptSetConfig
    from harness.tasks import Prompt, load_prompt_set
    out: list[Any] = []
    for name in ("open_ended", "facts"):
        out += load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None)).prompts
    return [Prompt(id=p.id, set=p.set, text=p.text) for p in out[:n]]


def make_unit(label: str, name: str, params: dict[str, Any], prompts: list[Any], max_tokens: int) -> Any:
    from harness.config import StrategyConfig
    from harness.plan import WorkUnit
    from strategies import get_strategy
    full = get_strategy(name).from_dict(params).params.to_dict()
    sc = StrategyConfig(name=name, label=label, params=full, samples_per_prompt=1, max_tokens=max_tokens)
    return WorkUnit(id=f"gpu-check-{label}", model="check", model_ref="check", strategy=sc, prompts=tuple(prompts),
                    seed=1234, shard=0, stop=())


def run_way(engine: Any, prompts: list[Any], max_tokens: int, plan=PLAN) -> dict[str, Any]:
    """The plan on one engine: per strategy, what the rows say and what it cost."""
    from harness.engine.worker import execute_unit
    out: dict[str, Any] = {"model_runner": engine.model_runner, "logits_processors": list(engine.logits_processors),
                           "device": engine.device, "dtype": engine.dtype, "strategies": {}}
    for label, name, params in plan:
        res = execute_unit(engine, make_unit(label, name, params, prompts, max_tokens))
        rows = res.rows
        out["strategies"][label] = {
            "decode_path": sorted({r["decode_path"] for r in rows}),
            "model_runner": sorted({r["model_runner"] for r in rows}),
            "errors": [r["error"] for r in rows if r["error"]],
            "completions": [r["completion"] for r in rows],
            "tokens": [list(engine.tokenizer(r["completion"] or "", add_special_tokens=False).input_ids) for r in rows],
            "generated_tokens": res.generated_tokens, "gen_seconds": round(res.gen_seconds, 4),
            "tok_per_s": round(res.generated_tokens / res.gen_seconds, 2) if res.gen_seconds else None,
        }
    return out


def _leading_agreement(a: list[int], b: list[int]) -> float:
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same / n


def compare(ways: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per way and strategy, agreement with the first way that ran (its reference)."""
    ran = [w for w, r in ways.items() if "strategies" in r]
    if not ran:
        return {}
    ref = ways[ran[0]]["strategies"]
    out: dict[str, Any] = {"reference": ran[0]}
    for w in ran:
        per = {}
        for label, s in ways[w]["strategies"].items():
            base = ref.get(label)
            if base is None:
                continue
            pairs = list(zip(s["tokens"], base["tokens"]))
            per[label] = {
                "same_completion": sum(x == y for x, y in pairs) / len(pairs) if pairs else None,
                "leading_token_agreement": round(sum(_leading_agreement(x, y) for x, y in pairs) / len(pairs), 4)
                if pairs else None,
                "deterministic": label in DETERMINISTIC,
                "tok_per_s": s["tok_per_s"], "decode_path": s["decode_path"], "model_runner": s["model_runner"]}
        out[w] = per
    return out


def child(args: argparse.Namespace) -> int:
    """One way: start the engine under this process's environment, run the plan, write JSON."""
    from harness.engine.engine import Engine
    from harness.models import BUILTIN_MODELS, prepare
    if args.model in BUILTIN_MODELS:
        path, bos = str(prepare(args.model)), BUILTIN_MODELS[args.model].needs_bos
    else:
        path, bos = args.model, False
    result: dict[str, Any] = {"way": args.child, "env": WAYS[args.child]}
    t0 = time.perf_counter()
    try:
        engine = Engine(path, {"dtype": args.dtype, "max_model_len": 1024, "kv_cache_gib": 1, "seed": 0,
                               "block_size": 32, "enable_prefix_caching": True, "engine_core_process": False,
                               "tail_cache_slots": args.tail_cache_slots, "warmup_tokens": 4}, needs_bos=bos)
    except Exception as exc:  # noqa: BLE001 - a way that cannot start is a finding, not a crash
        result["error"] = f"engine did not start: {type(exc).__name__}: {str(exc)[:2000]}"
        Path(args.out).write_text(json.dumps(result))
        return 0
    result["engine_start_s"] = round(time.perf_counter() - t0, 1)
    try:
        result.update(run_way(engine, load_prompts(args.prompts), args.max_tokens))
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"plan failed: {type(exc).__name__}: {str(exc)[:2000]}"
    finally:
        engine.close()
    Path(args.out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ways", default="auto", help="comma-separated ways (v1, v2, v2-off, v1-off) or auto")
    ap.add_argument("--model", default="smollm2-135m", help="a built-in model name or a model folder")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32", help="float32 (default: exact comparisons) or auto/bfloat16")
    ap.add_argument("--tail-cache-slots", type=int, default=512, help="tail-cache ring for beam search (0: off)")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    ways = default_ways() if args.ways == "auto" else [w.strip() for w in args.ways.split(",") if w.strip()]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        ap.error(f"unknown way(s) {unknown}; one of {', '.join(WAYS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ways:
            out = Path(tmp) / f"{way}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", way, "--out", str(out),
                   "--model", args.model, "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens),
                   "--dtype", args.dtype, "--tail-cache-slots", str(args.tail_cache_slots)]
            env = {k: v for k, v in os.environ.items() if k not in ("VLLM_USE_V2_MODEL_RUNNER",
                                                                      "DECEVAL_NUCLEUS_PROCESSOR")}
            print(f"gpu_check: way {way} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, env={**env, **WAYS[way]}, cwd=str(ROOT))
            results[way] = json.loads(out.read_text()) if out.exists() else {
                "way": way, "error": f"the child process exited with status {proc.returncode} and wrote nothing"}
    from harness.hardware import cpu_info
    report = {"ways": results, "agreement": compare(results), "plan": [list(p[:2]) + [p[2]] for p in PLAN],
              "prompts": args.prompts, "max_tokens": args.max_tokens, "dtype": args.dtype,
              "cpu": cpu_info().describe()}
    Path(args.out).write_text(json.dumps(report, indent=2))
    for way, per in report["agreement"].items():
        if way == "reference":
            continue
        for label, a in per.items():
            print(f"{way:7s} {label:11s} runner {','.join(a['model_runner']):3s} path {','.join(a['decode_path']):13s} "
                  f"{a['tok_per_s']} tok/s  same completions {a['same_completion']:.2f}", file=sys.stderr)
    for way, r in results.items():
        if r.get("error"):
            print(f"{way}: {r['error'][:300]}", file=sys.stderr)
    print(f"gpu_check: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
