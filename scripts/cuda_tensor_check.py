"""Torch-level check of the engine-side tensor code on a CUDA device.

    python3 scripts/cuda_tensor_check.py [--out results.json] [--stub-vllm]

vLLM's CUDA build cannot be installed on every GPU machine we get, but the code we run
inside its engine is plain torch: the nucleus counter's ``apply`` (harness.engine.vllm_ext.nucleus) and
the tail cache's block copies (harness.engine.vllm_ext.tailcache). This script runs both on the GPU and
checks them against the CPU and against the numpy rule (strategies.stepwise.nucleus_size):

- nucleus counts for rows of every kind (peaked, flat ones that need the full sort, p = 1,
  one-hot), float32 and bfloat16 logits, on CUDA == on CPU == numpy;
- the tail cache stores blocks of bf16 KV caches into its ring and loads them back, also
  through a kernel-block split view (two kernel blocks per scheduler block).

Where vLLM is not installed (``--stub-vllm`` forces it), small stand-ins for the vLLM
base classes these modules subclass are put in ``sys.modules``; they carry no logic under
test. It prints a JSON summary and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stub_vllm() -> None:
    """Stand-ins for the vLLM names harness.engine.vllm_ext's modules import."""
    def module(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class LogitsProcessor:
        pass

    class KVConnectorMetadata:
        pass

    class KVConnectorBase_V1:
        def __init__(self, vllm_config, role, kv_cache_config):
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._connector_metadata = None

        def bind_connector_metadata(self, meta):
            self._connector_metadata = meta

        def _get_connector_metadata(self):
            return self._connector_metadata

    def group_kernel_blocks(cache, num_blocks):  # as vllm.v1.kv_cache_interface
        return cache if cache.shape[0] == num_blocks else cache.unflatten(0, (num_blocks, -1))

    for name in ("vllm", "vllm.v1", "vllm.v1.sample", "vllm.distributed", "vllm.distributed.kv_transfer",
                 "vllm.distributed.kv_transfer.kv_connector", "vllm.distributed.kv_transfer.kv_connector.v1"):
        module(name)
    module("vllm.v1.sample.logits_processor", LogitsProcessor=LogitsProcessor)
    module("vllm.v1.sample.logits_processor.builtin", process_dict_updates=lambda *a, **k: None)
    module("vllm.distributed.kv_transfer.kv_connector.v1.base", KVConnectorBase_V1=KVConnectorBase_V1,
           KVConnectorMetadata=KVConnectorMetadata, KVConnectorRole=object)
    module("vllm.v1.kv_cache_interface", group_kernel_blocks=group_kernel_blocks)


def nucleus_rows(torch, vocab: int):
    g = torch.Generator().manual_seed(0)
    rows, ps = [], []
    for scale in (0.05, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):  # flat (full sort) ... peaked (top 64)
        for p in (0.5, 0.9, 0.95):
            rows.append(torch.randn(vocab, generator=g) * scale)
            ps.append(p)
    one_hot = torch.full((vocab,), -1e9)
    one_hot[123] = 5.0
    rows += [one_hot, rows[3].clone()]
    ps += [0.9, 1.0]  # p = 1: the whole support
    return torch.stack(rows), ps


def check_nucleus(torch, device: str, vocab: int) -> dict:
    import harness.engine.vllm_ext.nucleus as hs
    from strategies.distributions import nucleus_size

    logits, ps = nucleus_rows(torch, vocab)
    want = [nucleus_size(torch.log_softmax(r.double(), -1).float().numpy(), p) for r, p in zip(logits, ps)]
    out: dict = {"rows": len(ps), "vocab": vocab, "counts_min": min(want), "counts_max": max(want)}
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        got = {}
        for dev in ("cpu", device):
            proc = hs.NucleusCountProcessor(None, torch.device(dev), False)
            proc.reqs = dict(enumerate(ps))
            res = proc.apply(x.to(dev).clone())
            got[dev] = [int(i) + 1 for i in res.float().argmax(dim=-1).cpu()]
        # bf16 logits: the rule is applied to the bf16 values; compare devices with each other
        ref = want if dtype == torch.float32 else got["cpu"]
        key = str(dtype).replace("torch.", "")
        out[f"{key}_cpu_equals_reference"] = got["cpu"] == ref
        out[f"{key}_{device}_equals_cpu"] = got[device] == got["cpu"]
    # time one lookahead-sized batch (256 rows, p = 0.9), after a warm-up
    batch = torch.randn(256, vocab, generator=torch.Generator().manual_seed(1)) * 3.0
    for dev in ("cpu", device):
        proc = hs.NucleusCountProcessor(None, torch.device(dev), False)
        proc.reqs = dict.fromkeys(range(256), 0.9)
        x = batch.to(dev)
        proc.apply(x.clone())
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            proc.apply(x.clone())
        if dev == "cuda":
            torch.cuda.synchronize()
        out[f"apply_256_rows_ms_{dev}"] = round((time.perf_counter() - t) / 5 * 1000, 2)
    return out


def check_tail_cache(torch, device: str) -> dict:
    from harness.engine.vllm_ext.tailcache import TailCacheConnector, TailCacheMetadata

    out = {}
    for name, kernel_split in (("block_major", 1), ("kernel_blocks_split_2", 2)):
        num_blocks, heads, block, head = 64, 3, 32, 64
        cfg = SimpleNamespace(cache_config=SimpleNamespace(block_size=block),
                              kv_transfer_config=SimpleNamespace(kv_connector_extra_config={"slots": 16}))
        conn = TailCacheConnector(cfg, role=None, kv_cache_config=SimpleNamespace(num_blocks=num_blocks))
        g = torch.Generator().manual_seed(2)
        layers = {f"layer.{i}": torch.randn(num_blocks * kernel_split, heads, block // kernel_split, 2 * head,
                                            generator=g).to(device=device, dtype=torch.bfloat16)
                  for i in range(4)}
        conn.register_kv_caches(layers)

        def view(t):  # scheduler block b is kernel blocks [b * split, (b + 1) * split)
            return t.unflatten(0, (num_blocks, kernel_split))

        src = [5, 17, 40]
        want = [[view(t)[b].clone() for b in src] for t in layers.values()]
        conn.bind_connector_metadata(TailCacheMetadata(stores=[(slot, b) for slot, b in zip((3, 0, 15), src)]))
        conn.wait_for_save()
        for t in layers.values():
            t.zero_()  # the blocks are freed and reused
        dst = [60, 1, 33]
        conn.bind_connector_metadata(TailCacheMetadata(loads=[(slot, b) for slot, b in zip((3, 0, 15), dst)]))
        conn.start_load_kv(None)
        ok = all(torch.equal(view(t)[d], w[i]) for t, w in zip(layers.values(), want) for i, d in enumerate(dst))
        untouched = all(int(view(t)[b].abs().sum()) == 0 for t in layers.values() for b in src if b not in dst)
        out[name] = {"round_trip_equal": ok, "other_blocks_untouched": untouched,
                     "ring_device": str(conn._ring[0].device), "ring_dtype": str(conn._ring[0].dtype)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--stub-vllm", action="store_true", help="use the stand-ins even if vLLM is installed")
    ap.add_argument("--vocab", type=int, default=49152)
    args = ap.parse_args(argv)
    import torch

    stubbed = args.stub_vllm
    if not stubbed:
        try:
            import vllm  # noqa: F401
        except ImportError:
            stubbed = True
    if stubbed:
        stub_vllm()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "vllm_stubbed": stubbed}
    res["nucleus"] = check_nucleus(torch, device, args.vocab)
    res["tail_cache"] = check_tail_cache(torch, device)
    flags = [v for k, v in res["nucleus"].items() if k.endswith(("_equals_cpu", "_equals_reference"))]
    flags += [v for case in res["tail_cache"].values() for k, v in case.items() if isinstance(v, bool)]
    res["all_ok"] = all(flags)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if res["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
