"""What this machine's CPU can do, and the engine defaults that follow from it.

Import-light (standard library only): the driver, ``deceval doctor`` and the config use
it without loading torch. The engine process calls the same functions, so the dtype a run
reports is the dtype its engines chose.

The rule for ``engine.dtype: auto`` (see :func:`resolve_dtype`):

- on a GPU: the model's own dtype (vLLM's ``auto``);
- on a CPU: ``bfloat16`` only where the CPU computes it natively (the ``avx512_bf16`` or
  ``amx_bf16`` flag), else ``float32``. Without native bf16, vLLM's CPU kernels convert
  every bf16 operand and run 2.4-2.6x slower than in float32 (SmolLM2-135M, AMD EPYC
  Zen 3, AVX2 only); ``python bench/dtype.py`` measures both on the machine at hand.

``DECEVAL_CPU_ISA=avx2`` makes this module, and an engine started under it, treat the
CPU as AVX2-only (no AVX-512, no AMX): the way to try the slower kind's path and its
defaults on a faster machine (see ``scripts/avx2-emulation``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.errors import DecevalError

#: The CPU flags that decide engine speed, in the order ``deceval doctor`` prints them.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                  "amx_int8")
#: Flags that mean bf16 arithmetic is native (not converted to float32 op by op).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ISA_ENV = "DECEVAL_CPU_ISA"


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int  # usable by this process (its affinity)
    isa_cap: str | None = None  # DECEVAL_CPU_ISA, when set

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in NATIVE_BF16_FLAGS)

    @property
    def kind(self) -> str:
        """A short name for the vector unit: 'AMX', 'AVX-512', 'AVX2' or 'other'."""
        if "amx_tile" in self.flags:
            return "AMX"
        if "avx512f" in self.flags:
            return "AVX-512"
        return "AVX2" if "avx2" in self.flags else "other"

    def relevant_flags(self) -> list[str]:
        return [f for f in RELEVANT_FLAGS if f in self.flags]

    def describe(self) -> str:
        """One line for run summaries: model, vector unit, bf16 support, cores."""
        capped = f", capped by {ISA_ENV}={self.isa_cap}" if self.isa_cap else ""
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        return f"{self.model} ({self.kind}, {bf16}, {self.cores} cores{capped})"

    def as_dict(self) -> dict:
        return {"model": self.model, "kind": self.kind, "flags": self.relevant_flags(),
                "native_bf16": self.native_bf16, "cores": self.cores, "isa_cap": self.isa_cap}


def _parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def cap_flags(flags: frozenset[str], isa: str | None) -> frozenset[str]:
    """Drop what lies above ``isa`` ('avx2': every avx512* and amx* flag)."""
    if not isa:
        return flags
    if isa.lower() != "avx2":
        raise DecevalError(f"environment variable {ISA_ENV} must be 'avx2' or unset, got {isa!r}; unset it to use "
                           f"every instruction set this CPU has")
    return frozenset(f for f in flags if not f.startswith(("avx512", "amx")))


def cpu_count() -> int:
    """Cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=None)
def _read_cpu(isa: str | None) -> CpuInfo:
    try:
        model, flags = _parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:  # not Linux: the model name only
        model, flags = platform.processor(), frozenset()
    return CpuInfo(model=model or platform.machine() or "unknown CPU", flags=cap_flags(flags, isa),
                   cores=cpu_count(), isa_cap=isa)


def cpu_info() -> CpuInfo:
    """This machine's CPU, with flags capped by ``DECEVAL_CPU_ISA`` when set."""
    return _read_cpu(os.environ.get(ISA_ENV) or None)


def resolve_dtype(requested: str, device: str, cpu: CpuInfo | None = None) -> str:
    """The dtype an engine runs in. An explicit dtype wins; ``auto`` follows the module's rule
    (on a GPU, ``auto`` stays ``auto``: vLLM then uses the model's own dtype)."""
    if requested != "auto":
        return requested
    if device != "cpu":
        return "auto"
    cpu = cpu or cpu_info()
    return "bfloat16" if cpu.native_bf16 else "float32"
