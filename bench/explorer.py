"""The sample explorer at scale: file size and load time of ``deceval view`` pages in headless
Chromium, for synthetic reports of 2,000 and 20,000 samples (no engine).

Each report: 4 strategy columns (greedy, top_p, min_p, wsp) on 2 tasks, completions of 40-160
words, 0/1 and continuous metrics, a 48-step trace on every WSP sample; the two runs (a
baseline and a candidate with some answers changed) are written through harness.report,
then ``deceval view BASELINE CANDIDATE`` pairs them. Per size it prints: samples, the HTML
size, the time to build it in Python, the page's own time to parse the data and draw the
first page (``performance.now()`` at ready), the time from navigation to ready seen by the
driver, and the time of a search and of a sort over every row.

    python bench/explorer.py                 # 2,000 and 20,000 samples
    python bench/explorer.py --sizes 2000    # one size
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.explorer import write_explorer  # noqa: E402
from harness.plan import builtin_columns  # noqa: E402
from harness.report import write_run_json, write_unit  # noqa: E402
from harness.rows import sample_schema  # noqa: E402

METRICS = ["exact_match", "contains_answer", "rep_2", "length"]
LABELS = ("greedy", "top_p(top_p=0.9)", "min_p(min_p=0.1)", "wsp")
WORDS = ("the of and to in is that it for as with was on be by at this from or an are which one "
         "answer because number total sum step so we have then each more than").split()


def _rows(run_id: str, label: str, n_prompts: int, rng: random.Random) -> list[dict]:
    rows = []
    for p in range(n_prompts):
        task = "maths" if p % 2 else "facts"
        words = [rng.choice(WORDS) for _ in range(rng.randint(40, 160))]
        right = rng.random() < 0.7
        steps = ([{"token_id": rng.randint(0, 49151), "logprob": -rng.random() * 3, "rank": rng.randint(1, 4),
                   "candidates": rng.randint(1, 8), "n_chosen": rng.randint(1, 400), "n_min": 1, "n_max": 400,
                   "score": -rng.random() * 8} for _ in range(48)] if label == "wsp" else None)
        rows.append({
            "run_id": run_id, "unit_id": f"u-{label}", "model_name": "smollm2-135m", "model_ref": "synthetic",
            "strategy_name": label.split("(")[0], "strategy_label": label, "strategy_id": f"id-{label}",
            "strategy_params": "{}", "prompt_set": task, "prompt_id": f"{task}-{p:05d}", "prompt_hash": f"h{p}",
            "prompt": f"Question {p}: " + " ".join(rng.choice(WORDS) for _ in range(30)) + "\nAnswer:",
            "reference": str(p), "aliases": [], "sample_index": 0, "seed": 1000 + p, "base_seed": 0,
            "completion": (str(p) if right else str(p + 1)) + " " + " ".join(words), "extracted": str(p),
            "prompt_tokens": 40, "completion_tokens": len(words), "finish_reason": "eos", "latency_s": rng.random(),
            "unit_seconds": 10.0, "cached_tokens": 0, "engine_requests": 1 if steps is None else 48,
            "computed_tokens": 40 + len(words), "steps": steps, "error": None,
            "exact_match": float(right), "contains_answer": float(right), "rep_2": rng.random() * 0.2,
            "length": float(len(words)),
        })
    return rows


def write_synthetic(root: Path, run_id: str, samples: int, seed: int) -> Path:
    rng = random.Random(seed)
    run_dir = root / run_id
    schema = sample_schema(METRICS, *builtin_columns())
    per = samples // len(LABELS)
    for i, label in enumerate(LABELS):
        write_unit(run_dir, f"model=smollm2-135m/strategy=s{i}/u-{i}.parquet", _rows(run_id, label, per, rng), schema,
                   {"unit_id": f"u-{i}"})
    write_run_json(run_dir, {"run_id": run_id, "status": "complete", "metrics": METRICS, "config": {}})
    return run_dir


def measure(samples: int, root: Path) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.fakes.browser import chrome
    # the two runs hold `samples` samples together
    base = write_synthetic(root, f"base-{samples}", samples // 2, 1)
    cand = write_synthetic(root, f"cand-{samples}", samples // 2, 2)
    out = root / f"explorer-{samples}.html"
    t0 = time.perf_counter()
    _, data = write_explorer([base, cand], out)
    build_s = time.perf_counter() - t0
    drv = chrome()
    try:
        t0 = time.perf_counter()
        drv.get(out.resolve().as_uri())
        WebDriverWait(drv, 120).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        load_s = time.perf_counter() - t0
        ready_ms = float(drv.execute_script("return document.body.dataset.readyMs"))
        errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]

        def timed(script: str, q: str | None = None) -> float:
            ms = drv.execute_script("const t = performance.now();" + script + "; return performance.now() - t")
            if q is not None:
                WebDriverWait(drv, 60).until(lambda d: d.execute_script("return document.body.dataset.q === arguments[0]", q))
            return ms
        sort_ms = timed("const s = document.getElementById('f-sort'); s.value = 'm:length:desc';"
                        "s.dispatchEvent(new Event('change'))")
        errs_ms = timed("const e = document.getElementById('f-errors'); e.checked = true;"
                        "e.dispatchEvent(new Event('change')); e.checked = false; e.dispatchEvent(new Event('change'))")
        t0 = time.perf_counter()
        drv.execute_script("const q = document.getElementById('q'); q.value = 'because'; q.dispatchEvent(new Event('input'))")
        WebDriverWait(drv, 60).until(lambda d: d.execute_script("return document.body.dataset.q === 'because'"))
        search_s = time.perf_counter() - t0  # includes the 200 ms debounce
    finally:
        drv.quit()
    return {"samples": len(data["cells"]), "rows": len(data["rows"]), "mb": out.stat().st_size / 1e6,
            "build_s": build_s, "ready_ms": ready_ms, "load_s": load_s, "sort_ms": sort_ms,
            "two_filters_ms": errs_ms, "search_s": search_s, "console_errors": len(errors)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,20000", help="comma-separated sample counts (default 2000,20000)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="deceval-explorer-bench-") as tmp:
        print("| samples | rows | HTML MB | build s | page ready ms | navigation to ready s | sort ms | "
              "filter on+off ms | search s (200 ms debounce incl.) | console errors |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in (int(x) for x in args.sizes.split(",")):
            r = measure(n, Path(tmp))
            print(f"| {r['samples']:,} | {r['rows']:,} | {r['mb']:.1f} | {r['build_s']:.1f} | {r['ready_ms']:.0f} | "
                  f"{r['load_s']:.2f} | {r['sort_ms']:.0f} | {r['two_filters_ms']:.0f} | {r['search_s']:.2f} | "
                  f"{r['console_errors']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
