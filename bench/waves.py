"""Stepwise units larger than the KV cache: in waves (the step driver's default) against all
at once, on ONE engine in one run, the same prompts, the cache emptied before each.

    .venv/bin/python bench/waves.py [--prompts 64] [--max-tokens 16] [--candidates 4] [--json FILE]

WritingBench's English prompts (about 1,000 tokens each under SmolLM2's chat template) with
WSP (K candidates, argmax), the engine as the seed study runs it (``dtype: auto``,
``kv_cache_gib: 1``, ``max_model_len: 4096``). Prints each way's wall seconds, the tokens
the engine computed (not served from its caches), the waves, and the ratio; the tokens of
the two ways are compared too (equal in float32; bfloat16 batches may differ in a few).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class AllAtOnce:
    """The engine, with no cache size to tell the step driver: one wave."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.kv_capacity_tokens = None

    def __getattr__(self, name):
        return getattr(self._engine, name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from harness.config import PromptSetConfig
    from harness.driver.placement import core_share
    from harness.engine.engine import Engine
    from harness.engine.stepdriver import run_stepwise, waves
    from harness.models import prepare
    from harness.tasks import load_prompt_set
    from strategies.wsp import WSP, WSPParams

    engine = Engine(str(prepare("smollm2-135m")), {"dtype": "auto", "max_model_len": 4096, "kv_cache_gib": 1,
                                                  "seed": 0, "enable_prefix_caching": True},
                    cpu_cores=core_share(0, 1))
    texts = [p.text for p in load_prompt_set(PromptSetConfig(name="writingbench_en", path=None, chat=True,
                                                             limit=args.prompts)).prompts]
    tok = engine.tokenizer
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False),
                   add_special_tokens=False)["input_ids"] for t in texts]
    prompts = [p[-(4096 - args.max_tokens - 8):] for p in prompts]
    unit = SimpleNamespace(stop=(), strategy=SimpleNamespace(max_tokens=args.max_tokens))
    capacity = engine.kv_capacity_tokens
    cut = waves([len(p) for p in prompts], args.max_tokens, args.candidates, capacity)
    out = {"cpu": engine.info()["cpu"], "dtype": engine.dtype, "prompts": len(prompts),
           "prompt_tokens": sum(map(len, prompts)), "kv_capacity_tokens": capacity, "waves": len(cut),
           "max_tokens": args.max_tokens, "candidates": args.candidates}
    print(json.dumps(out), flush=True)

    def run(eng) -> tuple[float, int, list]:
        engine.reset_caches()
        rows = [{"seed": i, "prompt_id": str(i)} for i in range(len(prompts))]
        t0 = time.perf_counter()
        run_stepwise(eng, unit, WSP(WSPParams(max_candidates=args.candidates)), list(zip(rows, prompts)))
        seconds = time.perf_counter() - t0
        bad = [r["error"] for r in rows if r.get("error")]
        if bad:
            raise SystemExit(f"a wave failed: {bad[0]}")
        return seconds, sum(int(r["computed_tokens"]) for r in rows), [[s["token_id"] for s in r["steps"]] for r in rows]

    w_s, w_tok, w_ids = run(engine)
    print(json.dumps({"waves_s": round(w_s, 1), "waves_computed_tokens": w_tok}), flush=True)
    a_s, a_tok, a_ids = run(AllAtOnce(engine))
    out.update(waves_s=round(w_s, 1), waves_computed_tokens=w_tok, all_at_once_s=round(a_s, 1),
               all_at_once_computed_tokens=a_tok, speedup=round(a_s / w_s, 2),
               same_tokens=sum(a == b for a, b in zip(a_ids, w_ids)))
    print(json.dumps(out), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
