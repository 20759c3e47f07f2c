"""Side-by-side timing of the V1 logits processors before and after a change, in one run.

    .venv/bin/python bench/processor_ab.py [--before REV] [--rows 32] [--vocab 49152] [--repeats 15]

Loads ``harness/engine/vllm_ext/{nucleus,samplers}.py`` as they were at git revision ``REV``
(default: the commit before the rules moved to ``rules.py``) next to the current ones, and
applies both to the same logits (``rows`` requests of one rule, SmolLM2's vocabulary size),
alternating before/after so both see the same machine state. Prints, per rule, the median
seconds of each, the ratio after/before, and whether the outputs are identical (they must be:
the rules are the same code, moved). Engine-free: vLLM is imported for its V1 interface only.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = [("typical", {"typical_p": 0.9}), ("epsilon", {"epsilon": 3e-4}), ("eta", {"epsilon": 3e-4}),
         ("mirostat", {"tau": 3.0, "eta": 0.1}),
         ("dynamic_top_p", {"top_p": 0.9, "max_top_p": 0.99, "increase": 0.05, "decay": 0.02, "window": 32,
                            "ngram": 3})]


def load_at(rev: str, rel: str, name: str):
    src = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(f"/tmp/{name}.py")
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="190b452~1")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import numpy as np
    import torch

    from harness.engine.vllm_ext.nucleus import NucleusCountProcessor
    from harness.engine.vllm_ext.samplers import SamplerProcessor
    from harness.hardware import cpu_info
    from strategies.base import SAMPLER_ARG
    old_n = load_at(args.before, "harness/engine/vllm_ext/nucleus.py", "nucleus_before")
    old_s = load_at(args.before, "harness/engine/vllm_ext/samplers.py", "samplers_before")
    logits = torch.tensor(np.random.default_rng(0).normal(size=(args.rows, args.vocab)) * 2.5, dtype=torch.float32)

    def run_sampler(cls, rule, params):
        proc = cls(None, torch.device("cpu"), False)
        sp = SimpleNamespace(extra_args={SAMPLER_ARG: {"rule": rule, **params}})
        proc.update_state(SimpleNamespace(added=[(i, sp, None, [5, 6, 7]) for i in range(args.rows)], removed=[],
                                          moved=[], batch_size=args.rows))
        return proc.apply(logits.clone())

    def run_nucleus(cls, _rule, _params):
        proc = cls(None, torch.device("cpu"), False)
        proc.reqs = {i: 0.9 for i in range(args.rows)}
        return proc.apply(logits.clone())

    print(f"CPU: {cpu_info().describe()}; torch threads {torch.get_num_threads()}; {args.rows} rows x {args.vocab}; "
          f"before = {args.before}")
    print(f"{'processor':18s} {'before s':>9s} {'after s':>9s} {'after/before':>12s}  identical")
    for label, fn, before, after, params in [("nucleus p=0.9", run_nucleus, old_n.NucleusCountProcessor,
                                              NucleusCountProcessor, {})] + [
            (rule, run_sampler, old_s.SamplerProcessor, SamplerProcessor, p) for rule, p in CASES]:
        rule = label if fn is run_sampler else None
        same = torch.equal(fn(before, rule, params), fn(after, rule, params))  # also the warm-up
        tb, ta = [], []
        for _ in range(args.repeats):
            for cls, acc in ((before, tb), (after, ta)):
                t0 = time.perf_counter()
                fn(cls, rule, params)
                acc.append(time.perf_counter() - t0)
        mb, ma = statistics.median(tb), statistics.median(ta)
        print(f"{label:18s} {mb:9.4f} {ma:9.4f} {ma / mb:12.3f}  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
