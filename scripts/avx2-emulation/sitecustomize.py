"""Run Python as if this CPU had AVX2 only: no AVX-512, no AVX512_BF16, no AMX.

For sizing tests and defaults for the slower build machines on a faster one. Put this
folder first on PYTHONPATH (``scripts/avx2-emulation/run CMD...`` does) and every Python
process started under it, Ray workers and vLLM's engine-core process included:

- dispatches torch's and oneDNN's kernels at AVX2 (``ATEN_CPU_CAPABILITY``,
  ``ONEDNN_MAX_CPU_ISA``);
- makes vLLM load its AVX2 kernel library and take its non-AVX-512 paths (vLLM asks
  ``torch.cpu._is_avx512_supported()`` and friends; they answer False here);
- makes deceval's ``harness.hardware`` see AVX2 flags only (``DECEVAL_CPU_ISA=avx2``),
  so ``dtype: auto`` and ``deceval doctor`` decide as they would on such a CPU.

It is an emulation: the instruction set is capped, the clock, caches and core of this
CPU stay what they are, so figures under it approximate an AVX2 machine, they do not
replace one.
"""

import importlib.abc
import os
import sys

os.environ.setdefault("DECEVAL_CPU_ISA", "avx2")
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

_CAPPED = ("_is_avx512_supported", "_is_avx512_vnni_supported", "_is_avx512_bf16_supported",
           "_is_amx_tile_supported", "_is_amx_fp16_supported")


def _cap(module) -> None:
    for name in _CAPPED:
        if hasattr(module, name):
            setattr(module, name, lambda: False)


class _CapTorchCpu(importlib.abc.MetaPathFinder):
    """Patches torch.cpu's capability queries right after torch.cpu is imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch.cpu":
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            _cap(module)
        loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _CapTorchCpu())
