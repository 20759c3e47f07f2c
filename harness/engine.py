"""A plain vLLM engine wrapper (no Ray import here; ``engine_actor`` is the thin Ray shell).

It owns one ``vllm.LLM``, turns prompts into token ids itself (so the prompt token count
is known before the request and chat templates apply exactly once), runs batched
generation, and offers the :class:`strategies.base.StepEngine` interface for stepwise
strategies.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

from harness.config import EngineOptions

log = logging.getLogger(__name__)


@dataclass
class GenOutput:
    text: str
    token_ids: list[int]
    finish_reason: str
    cached_tokens: int
    latency_s: float | None
    error: str | None = None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def core_share(replica_index: int, replicas_on_node: int, cores: Sequence[int] | None = None) -> str:
    """This replica's even, contiguous share of the node's cores, as '0-1' or '2'.

    vLLM's CPU backend pins its OpenMP threads itself and ignores Ray's CPU accounting,
    and by default it runs on one core and reserves the rest. We bind on purpose: one
    replica gets every core, N replicas split them.
    """
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    n = len(cores)
    if replicas_on_node > n:
        # More replicas than cores: they share round-robin (slower, but it runs).
        return str(cores[replica_index % n])
    per, extra = divmod(n, replicas_on_node)
    start = replica_index * per + min(replica_index, extra)
    mine = cores[start:start + per + (1 if replica_index < extra else 0)]
    return str(mine[0]) if len(mine) == 1 else f"{mine[0]}-{mine[-1]}"


class Engine:
    """One vLLM engine for one model."""

    def __init__(self, model_path: str, options: EngineOptions | dict[str, Any], *, cpu_cores: str | None = None,
                 needs_bos: bool = False) -> None:
        if isinstance(options, dict):
            options = EngineOptions.model_validate(options)
        self.options = options
        self.model_path = model_path
        self.needs_bos = needs_bos
        self.device = self._detect_device(options.device)
        self.cpu_cores = options.cpu_cores or cpu_cores
        if self.device == "cpu":
            # Read by vLLM's engine-core process at start: set before building LLM.
            if self.cpu_cores:
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_cores
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(options.kv_cache_gib)
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=options.dtype, max_model_len=options.max_model_len,
            block_size=options.block_size, enable_prefix_caching=options.enable_prefix_caching,
            seed=options.seed, enforce_eager=options.enforce_eager,
            tensor_parallel_size=options.tensor_parallel_size, max_logprobs=-1,
            disable_log_stats=False,  # fills RequestOutput.metrics -> per-request latency
        )
        if options.max_num_seqs:
            kwargs["max_num_seqs"] = options.max_num_seqs
        if self.device == "cuda":
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
            if options.tensor_parallel_size > 1:
                kwargs["distributed_executor_backend"] = "ray"
        t0 = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.load_seconds = time.perf_counter() - t0
        self.tokenizer = self.llm.get_tokenizer()
        self.vocab_size = int(self.llm.llm_engine.model_config.get_vocab_size())
        eos = set()
        if self.tokenizer.eos_token_id is not None:
            eos.add(int(self.tokenizer.eos_token_id))
        gen_cfg = getattr(self.llm.llm_engine.model_config, "hf_config", None)
        cfg_eos = getattr(gen_cfg, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            eos.add(cfg_eos)
        elif isinstance(cfg_eos, (list, tuple)):
            eos.update(int(e) for e in cfg_eos)
        self.eos_token_ids = frozenset(eos)

    @staticmethod
    def _detect_device(device: str) -> str:
        if device != "auto":
            return device
        from vllm.platforms import current_platform
        return "cpu" if current_platform.is_cpu() else "cuda"

    # ---- prompts --------------------------------------------------------------------------

    def encode(self, text: str, chat: bool = False) -> list[int]:
        """Token ids exactly as vLLM would make them for a text prompt (special tokens
        added), or through the model's chat template with a generation prompt."""
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError(f"model {self.model_path} has no chat template; set chat: false for this prompt set")
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                     add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict):  # some tokenizers return a BatchEncoding
                ids = ids["input_ids"]
            return list(ids)
        ids = list(self.tokenizer(text).input_ids)
        bos = self.tokenizer.bos_token_id
        if self.needs_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def info(self) -> dict[str, Any]:
        import vllm
        hf = self.llm.llm_engine.model_config.hf_config
        text_cfg = getattr(hf, "text_config", hf)
        return {
            "model_path": self.model_path, "device": self.device, "cpu_cores": self.cpu_cores,
            "vocab_size": self.vocab_size, "eos_token_ids": sorted(self.eos_token_ids),
            "hidden_size": getattr(text_cfg, "hidden_size", None),
            "num_hidden_layers": getattr(text_cfg, "num_hidden_layers", None),
            "load_seconds": round(self.load_seconds, 2), "vllm_version": vllm.__version__,
            "pid": os.getpid(),
        }

    # ---- generation -----------------------------------------------------------------------

    def sampling_params(self, **kwargs: Any):
        from vllm import SamplingParams
        return SamplingParams(**kwargs)

    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[Any]) -> list[GenOutput]:
        """One batched generate over token-id prompts. A request that vLLM rejects becomes
        an output with ``error`` set; the rest of the batch still runs."""
        if not prompts:
            return []
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        try:
            outs = self.llm.generate(inputs, list(params), use_tqdm=False)
        except Exception:  # noqa: BLE001 - isolate the bad request(s) one by one
            if len(inputs) == 1:
                raise
            results = []
            for p, sp in zip(prompts, params):
                try:
                    results.extend(self.generate([p], [sp]))
                except Exception as exc:  # noqa: BLE001
                    results.append(GenOutput("", [], "error", 0, None, error=f"{type(exc).__name__}: {exc}"))
            return results
        results = []
        for out in outs:
            c = out.outputs[0]
            latency = None
            m = out.metrics
            if m is not None and getattr(m, "last_token_ts", 0) and getattr(m, "queued_ts", 0):
                latency = float(m.last_token_ts - m.queued_ts)
            finish = str(c.finish_reason)
            if finish == "stop":  # vLLM says "stop" for EOS too; stop_reason tells them apart
                finish = "eos" if c.stop_reason is None else "stop"
            results.append(GenOutput(text=c.text, token_ids=list(c.token_ids), finish_reason=finish,
                                     cached_tokens=int(out.num_cached_tokens or 0), latency_s=latency))
        return results
