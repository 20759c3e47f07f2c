"""The CPU facts and the ``dtype: auto`` rule (harness.hardware), on /proc/cpuinfo texts of
the CPUs the project's machines have shown, and on this machine's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import EngineOptions, resolve_config
from harness.errors import DecevalError
from harness.hardware import CpuInfo, _parse_cpuinfo, cap_flags, cpu_info, resolve_dtype

ROOT = Path(__file__).resolve().parent.parent

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 sha_ni vaes vpclmulqdq
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2 sha_ni vaes vpclmulqdq
"""
ZEN5 = """model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx512_vp2intersect
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
SKYLAKE = """model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""


def info(text: str) -> CpuInfo:
    model, flags = _parse_cpuinfo(text)
    return CpuInfo(model, flags, 2)


@pytest.mark.parametrize("text, model, kind, native, auto", [
    (ZEN3, "AMD EPYC 7B13", "AVX2", False, "float32"),
    (ZEN5, "AMD EPYC", "AVX-512", True, "bfloat16"),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8481C", "AMX", True, "bfloat16"),
    (SKYLAKE, "Intel(R) Xeon(R) CPU @ 2.00GHz", "AVX-512", False, "float32"),  # AVX-512 without bf16: float32
])
def test_auto_dtype_follows_native_bf16(text, model, kind, native, auto):
    cpu = info(text)
    assert (cpu.model, cpu.kind, cpu.native_bf16) == (model, kind, native)
    assert resolve_dtype("auto", "cpu", cpu) == auto
    assert model in cpu.describe() and kind in cpu.describe()


def test_explicit_dtype_wins_and_gpus_keep_the_models_own():
    zen3, zen5 = info(ZEN3), info(ZEN5)
    for dtype in ("bfloat16", "float16", "float32"):
        assert resolve_dtype(dtype, "cpu", zen3) == resolve_dtype(dtype, "cpu", zen5) == dtype
        assert resolve_dtype(dtype, "cuda", zen3) == dtype
    assert resolve_dtype("auto", "cuda", zen5) == "auto"  # vLLM: the model's config dtype


def test_isa_cap_drops_avx512_and_amx():
    flags = info(SAPPHIRE_RAPIDS).flags
    capped = CpuInfo("x", cap_flags(flags, "avx2"), 2, "avx2")
    assert "avx2" in capped.flags and not any(f.startswith(("avx512", "amx")) for f in capped.flags)
    assert capped.kind == "AVX2" and resolve_dtype("auto", "cpu", capped) == "float32"
    assert "capped by DECEVAL_CPU_ISA=avx2" in capped.describe()
    assert cap_flags(flags, None) == flags
    with pytest.raises(DecevalError, match="DECEVAL_CPU_ISA must be 'avx2' or unset, got 'sse'"):
        cap_flags(flags, "sse")


def test_this_machine_and_the_config_default():
    cpu = cpu_info()
    assert cpu.model and cpu.cores >= 1
    flags = frozenset(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split(":", 1)[1].split())
    flags = cap_flags(flags, os.environ.get("DECEVAL_CPU_ISA"))  # under scripts/avx2-emulation: avx2
    assert cpu.native_bf16 == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert EngineOptions().dtype == "auto"
    cfg = resolve_config({"models": ["smollm2-135m"], "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}]}, "t")
    assert cfg.models[0].engine.dtype == "auto"
    cfg = resolve_config({"models": ["smollm2-135m"], "prompt_sets": ["tiny"], "strategies": [{"name": "greedy"}],
                          "engine": {"dtype": "float32"}}, "t")
    assert cfg.models[0].engine.dtype == "float32"


def test_hardware_is_import_light():
    code = "import sys, harness.hardware; print(sorted(m for m in ('torch', 'vllm', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_avx2_emulation_caps_torch_and_the_rule():
    """scripts/avx2-emulation makes torch, vLLM's kernel choice and the rule see AVX2 only."""
    code = ("import torch, torch.cpu as c; from harness.hardware import cpu_info, resolve_dtype; "
            "print(c._is_avx512_supported(), c._is_avx512_bf16_supported(), torch.backends.cpu.get_cpu_capability(), "
            "cpu_info().kind, resolve_dtype('auto', 'cpu'))")
    out = subprocess.run([str(ROOT / "scripts" / "avx2-emulation" / "run"), sys.executable, "-c", code], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "AVX2", "AVX2", "float32"]
