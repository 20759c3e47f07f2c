"""A plain vLLM engine wrapper (no Ray import here; ``harness.engine.actor`` is the actor around it).

It owns one ``vllm.LLM``, turns prompts into token ids itself (so the prompt token count
is known before the request and chat templates apply exactly once), runs batched
generation, and offers the :class:`strategies.base.StepEngine` interface for stepwise
strategies.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.config import EngineOptions
from harness.engine.vllm_ext import (NUCLEUS_ARG, PROCESSORS, SLOTS_KEY, TAIL_ARG, TAIL_CONNECTOR,
                                     TAIL_CONNECTOR_MODULE)
from harness.hardware import cpu_info, resolve_dtype
from strategies.base import StepResult
from strategies.distributions import step_result

log = logging.getLogger(__name__)


@dataclass
class GenOutput:
    text: str
    token_ids: list[int]
    finish_reason: str
    cached_tokens: int
    latency_s: float | None
    error: str | None = None
    token_logprobs: list[float] | None = None  # with SamplingParams(logprobs=0): raw logprob per token



#: One engine step's token budget on the CPU (vLLM's CPU default for LLM), or max_model_len
#: when larger: prefill is not chunked there (see Engine.__init__).
CPU_BATCHED_TOKENS = 4096


@dataclass
class WarmUpLog:
    """An engine's work that is never a unit's: the warm-ups (harness.engine.worker.warm_up)
    and the cache resets between units."""

    seconds: float = 0.0  # warm-up seconds in all, the start-up generate included
    count: int = 0  # warm-ups run for units
    keys: set = field(default_factory=set)  # (strategy, stepwise, batch bucket) already warm
    cache_resets: int = 0  # prefix + tail cache resets

    def as_info(self) -> dict[str, Any]:
        return {"warmup_seconds": round(self.seconds, 3), "warmups": self.count, "cache_resets": self.cache_resets}


def processors_enabled() -> bool:
    """Whether engines register the in-engine logits processors (nucleus counter, sampler
    rules): yes unless ``DECEVAL_NUCLEUS_PROCESSOR=0`` turns them off. Off, nucleus counts
    come from full-vocabulary flat logprobs and the samplers run stepwise."""
    flag = os.environ.get("DECEVAL_NUCLEUS_PROCESSOR")
    return flag is None or flag not in ("0", "false", "no", "")


def model_runner_of(llm_kwargs: dict[str, Any]) -> str:
    """"v1" or "v2": the model runner vLLM will build for these ``LLM(...)`` arguments, read
    from vLLM's own configuration (``VllmConfig.use_v2_model_runner`` of the config ``LLM``
    builds from them: the environment, Triton, the features V2 lacks), not guessed. The CPU
    build has no Triton: V1. CUDA: V2 unless ``VLLM_USE_V2_MODEL_RUNNER=0``."""
    from vllm.engine.arg_utils import EngineArgs
    args = {k: v for k, v in llm_kwargs.items() if k != "logits_processors"}
    if isinstance(args.get("kv_transfer_config"), dict):
        from vllm.config import KVTransferConfig
        args["kv_transfer_config"] = KVTransferConfig(**args["kv_transfer_config"])
    return "v2" if EngineArgs(**args).create_engine_config().use_v2_model_runner else "v1"


#: Where each kind of strategy runs on an engine (the rows' ``decode_path``), with and without
#: the logits processors: (what, path with them, path without, what the fallback costs).
DECODE_PATHS = (
    ("samplers (typical, eta, epsilon, mirostat, dynamic_top_p)", "processor", "stepwise",
     "one full-vocabulary request per live sequence per step"),
    ("lookahead nucleus counts (e.g. the lookahead decoder)", "processor", "flat_logprobs", "full-vocabulary logprobs per lookahead request"),
    ("native strategies (greedy, top-p, ...)", "native", "native", None),
    ("beam search and other stepwise strategies", "stepwise", "stepwise", None),
)


def log_decode_paths(runner: str, processors: bool, device: str) -> None:
    """Say which runner the engine got and where strategies run on it; a slower fallback is a
    warning, never silent."""
    if processors:
        log.info("engine: vLLM model runner %s on %s, logits processors %s: samplers and lookahead nucleus counts run inside "
                 "the engine (decode_path=processor)", runner, device, runner)
        return
    slow = "; ".join(f"{what}: {off} ({cost})" for what, _, off, cost in DECODE_PATHS if cost)
    log.warning("engine: vLLM model runner %s on %s with the logits processors turned off "
                "(DECEVAL_NUCLEUS_PROCESSOR=0); slower paths: %s", runner, device, slow)


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
            # engine_core_process=False: vLLM's engine core runs in this process, the model
            # worker in its own; read by LLM() below (process-wide, one engine per process).
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if options.engine_core_process else "0"
        #: The dtype asked of vLLM: ``options.dtype``, with ``auto`` resolved by harness.hardware.
        self.dtype = resolve_dtype(options.dtype, self.device)
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=self.dtype, max_model_len=options.max_model_len,
            block_size=options.block_size, enable_prefix_caching=options.enable_prefix_caching,
            seed=options.seed, enforce_eager=options.enforce_eager,
            tensor_parallel_size=options.tensor_parallel_size, max_logprobs=-1,
            disable_log_stats=False,  # fills RequestOutput.metrics -> per-request latency
        )
        if options.max_num_seqs:
            kwargs["max_num_seqs"] = options.max_num_seqs
        if self.device == "cpu" and not options.engine_core_process:
            kwargs["distributed_executor_backend"] = "mp"  # the model still runs in a worker process
        if self.device == "cpu":
            # A prompt prefilled in several chunks has the token sampled after each partial chunk
            # thrown away, and vLLM rewinds a seeded request's generator for it; torch's CPU
            # generator cannot rewind ("CPU Generator does not use offset") and the engine dies.
            # So on the CPU each prompt is prefilled whole: seeded sampling (top-p, temperature)
            # over many or long prompts, more than one step's token budget, then runs.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(options.max_model_len, CPU_BATCHED_TOKENS)
        self.tail_cache_slots = self._tail_cache_slots()
        if self.tail_cache_slots:
            kwargs["kv_transfer_config"] = {
                "kv_connector": TAIL_CONNECTOR, "kv_connector_module_path": TAIL_CONNECTOR_MODULE,
                "kv_role": "kv_both", "kv_connector_extra_config": {SLOTS_KEY: self.tail_cache_slots}}
        #: Whether ``next_token`` requests opt in to the tail cache (benchmarks turn it off to compare).
        self.use_tail_cache = bool(self.tail_cache_slots)
        if self.device == "cuda":
            kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
            if options.tensor_parallel_size > 1:
                kwargs["distributed_executor_backend"] = "ray"
        t0 = time.perf_counter()
        #: vLLM's model runner for this engine, "v1" or "v2": what vLLM's own configuration
        #: chooses for these arguments, checked against the built engine below.
        self.model_runner = model_runner_of(kwargs)
        #: The logits processors registered: the runner's own pair, or none (turned off).
        self.logits_processors: tuple[str, ...] = PROCESSORS[self.model_runner] if processors_enabled() else ()
        if self.logits_processors:
            # Exact top-p nucleus counts for stepwise strategies that ask (a lookahead), and the
            # samplers' rules inside generate; each a no-op for every request that does not ask
            # (harness.engine.vllm_ext: .nucleus and .samplers on V1, .v2 on V2).
            kwargs["logits_processors"] = list(self.logits_processors)
        self.llm = LLM(**kwargs)
        self.load_seconds = time.perf_counter() - t0
        built = "v2" if self.llm.llm_engine.vllm_config.use_v2_model_runner else "v1"
        if built != self.model_runner:  # never run one runner's rows under the other's label
            self.close()
            raise RuntimeError(f"vLLM built its model runner {built} where its configuration said "
                               f"{self.model_runner}; the logits processors registered are {self.model_runner}'s")
        log_decode_paths(self.model_runner, bool(self.logits_processors), self.device)
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
        self.warm = WarmUpLog()
        # The first generate pays one-off kernel and allocator set-up; pay it here, so the
        # first unit's tokens/s is not charged for it.
        from vllm import SamplingParams
        t0 = time.perf_counter()
        self.llm.generate([{"prompt_token_ids": self.encode("Hello")}], SamplingParams(max_tokens=4, temperature=0.0),
                          use_tqdm=False)
        self.warm.seconds += time.perf_counter() - t0
        self.reset_caches()

    def _tail_cache_slots(self) -> int:
        """Ring size of the tail cache (``harness.engine.vllm_ext.tailcache``): needs prefix caching; on by
        default on the CPU build only (the connector has not run inside vLLM's CUDA build)."""
        if not self.options.enable_prefix_caching:
            return 0
        if self.options.tail_cache_slots is not None:
            return self.options.tail_cache_slots
        return 512 if self.device == "cpu" else 0

    def reset_caches(self) -> None:
        """Empty the prefix cache and the tail cache (``reset_connector``), so the next request
        finds nothing another unit computed. vLLM refuses (returns False) while a request still
        holds blocks; between units none does, so a refusal is an error, never ignored."""
        if not self.llm.reset_prefix_cache(reset_connector=True):
            raise RuntimeError("vLLM did not reset its prefix cache (blocks still held by a request); "
                               "a unit's cost would include another unit's cached work")
        self.warm.cache_resets += 1

    def close(self) -> None:
        """Stop the engine-core process now (not at interpreter exit, when logging is gone)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort; the process tree dies with us anyway
                pass

    def engine_dead(self) -> bool:
        """True once a vLLM process of this engine is gone: the model worker (vLLM's
        executor monitor marks it failed), or the engine-core process where vLLM runs one
        (its client's liveness monitor marks it dead). A synchronous ``generate`` may wait
        for ever after either."""
        if self.llm is None:
            return True
        client = self.llm.llm_engine.engine_core
        resources = getattr(client, "resources", None)  # engine core in its own process
        if resources is not None:
            manager = getattr(resources, "engine_manager", None)
            return bool(getattr(resources, "engine_dead", False)) or any(
                p.exitcode is not None for p in getattr(manager, "processes", ()) or ())
        executor = getattr(getattr(client, "engine_core", None), "model_executor", None)  # in-process core
        return bool(getattr(executor, "is_failed", False)) or any(
            getattr(w, "proc", None) is not None and w.proc.exitcode is not None
            for w in getattr(executor, "workers", ()) or ())

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
            if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding (not a dict subclass)
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
            "load_seconds": round(self.load_seconds, 2), **self.warm.as_info(), "vllm_version": vllm.__version__,
            "pid": os.getpid(), "tail_cache_slots": self.tail_cache_slots,
            # vLLM's model runner and the logits processors registered on it (empty: turned off)
            "model_runner": self.model_runner, "logits_processors": list(self.logits_processors),
            # What ``dtype: auto`` became, and the CPU it was decided on.
            "dtype_requested": self.options.dtype,
            "dtype": str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
            "cpu": cpu_info().as_dict() if self.device == "cpu" else None,
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
            if len(inputs) == 1 or self.engine_dead():  # a dead engine is not a bad request
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
            token_lps = None
            if c.logprobs is not None:
                token_lps = [float(d[t].logprob) if d is not None and t in d else None
                             for t, d in zip(c.token_ids, c.logprobs)]
            results.append(GenOutput(text=c.text, token_ids=list(c.token_ids), finish_reason=finish,
                                     cached_tokens=int(out.num_cached_tokens or 0), latency_s=latency,
                                     token_logprobs=token_lps))
        return results

    # ---- stepwise interface (strategies.base.StepEngine) ----------------------------------

    def _check_raw_logprobs(self) -> None:
        mode = getattr(self.llm.llm_engine.model_config, "logprobs_mode", "raw_logprobs")
        if mode != "raw_logprobs":
            raise RuntimeError(f"stepwise strategies need logprobs_mode='raw_logprobs' (the model's raw "
                               f"log-softmax), this engine has {mode!r}")

    def next_token(self, sequences: Sequence[Sequence[int]], *, top_k: int, nucleus_p: float | None = None,
                   full: bool = False) -> list[Any]:
        """Next-token distributions for token-id sequences, in ONE batched ``generate``.

        Each sequence is one request: ``max_tokens=1``, greedy (the sampled token is not
        used), ``detokenize=False``. Prefix caching reuses whole blocks and the tail cache
        (``harness.engine.vllm_ext.tailcache``) the partial last block of the previous step's prompt, so a
        request that extends an earlier one by a token computes about that token only. The
        returned logprobs are vLLM's ``raw_logprobs`` (the model's log-softmax at temperature
        1, before any processing). ``nucleus_p`` asks for the exact size of the top-p
        nucleus (no cap below the vocabulary); ``full`` for the whole distribution as a numpy
        array.

        Exact nucleus counts, two mechanisms, chosen by measurement (``python
        bench/strategies.py --measure-nucleus``: one lookahead step of 128 requests, bf16,
        2 cores, same caching for every variant): in-engine counter 0.25 s, full-vocabulary
        flat logprobs + numpy 2.42 s; plain top-20 logprobs 0.22 s but exact for only 44.5%
        of the counts (top-1024: 0.27 s, 99.2%). The two exact mechanisms agreed on all 128
        counts and top tokens.

        - in-engine (default): the nucleus logits processor of the engine's model runner
          (``harness.engine.vllm_ext.nucleus`` on V1, its twin in ``.v2`` on V2) counts N on the
          engine side and returns it as the greedy token (N - 1); only ``top_k + 8`` logprobs
          come back. Run in vLLM on the CPU build (V1); the V2 twin is tested against vLLM's
          V2 classes on CPU tensors only (docs/gpu.md).
        - fallback (``DECEVAL_NUCLEUS_PROCESSOR=0``): ``logprobs=-1`` with ``flat_logprobs``
          (plain lists, no per-token objects) and the count in numpy
          (:func:`strategies.distributions.nucleus_size`).
        ``full=True`` (the samplers) always takes the whole vocabulary.
        """
        from vllm import SamplingParams


        if not sequences:
            return []
        self._check_raw_logprobs()
        in_engine = nucleus_p is not None and not full and self.nucleus_in_engine
        whole = full or (nucleus_p is not None and not in_engine)
        args: dict[str, Any] = {NUCLEUS_ARG: float(nucleus_p)} if in_engine else {}
        if self.use_tail_cache:
            args[TAIL_ARG] = True
        extra = {"extra_args": args} if args else {}
        # A little more than top_k, so that ties at the k-th place are resolved by token id.
        want = top_k + 8
        sp = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, skip_clone=True,
                            logprobs=-1 if whole else max(1, want), flat_logprobs=True, **extra)
        inputs = [{"prompt_token_ids": list(s)} for s in sequences]
        outs = self.llm.generate(inputs, sp, use_tqdm=False)
        results = []
        for seq, out in zip(sequences, outs):
            flat = out.outputs[0].logprobs
            cached = int(out.num_cached_tokens or 0)
            computed = len(seq) - cached
            # Position 0 holds the sampled token first, then the requested top tokens.
            a, b = flat.start_indices[0], flat.end_indices[0]
            ids = np.asarray(flat.token_ids[a + 1:b], dtype=np.int64)
            lps = np.asarray(flat.logprobs[a + 1:b], dtype=np.float32)
            if in_engine:  # the processor made the greedy token N - 1
                order = np.lexsort((ids, -lps))[:top_k]
                results.append(StepResult(token_ids=ids[order].tolist(), logprobs=lps[order].astype(float).tolist(),
                                          nucleus_size=int(out.outputs[0].token_ids[0]) + 1,
                                          cached_tokens=cached, computed_tokens=computed))
            elif whole:
                vec = np.full(self.vocab_size, -np.inf, dtype=np.float32)
                vec[ids] = lps
                results.append(step_result(vec, top_k=top_k, nucleus_p=nucleus_p, full=full,
                                           cached_tokens=cached, computed_tokens=computed))
            else:
                order = np.lexsort((ids, -lps))[:top_k]
                results.append(StepResult(token_ids=ids[order].tolist(), logprobs=lps[order].astype(float).tolist(),
                                          cached_tokens=cached, computed_tokens=computed))
        return results

    @property
    def kv_capacity_tokens(self) -> int | None:
        """Tokens the engine's KV cache holds (its blocks times the block size), None when
        vLLM does not say; the step driver sizes its waves by it."""
        cache = self.llm.llm_engine.vllm_config.cache_config
        blocks, size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
        return int(blocks) * int(size) if blocks and size else None

    @property
    def nucleus_in_engine(self) -> bool:
        """True when this engine counts nucleus sizes with the in-engine logits processor."""
        procs = getattr(self.llm.llm_engine.model_config, "logits_processors", None) or []
        return PROCESSORS[self.model_runner][0] in procs

    @property
    def samplers_in_engine(self) -> bool:
        """True when this engine applies the samplers' rules inside generate."""
        procs = getattr(self.llm.llm_engine.model_config, "logits_processors", None) or []
        return PROCESSORS[self.model_runner][1] in procs

    def beam_search(self, prompts: Sequence[Sequence[int]], *, beam_width: int, max_tokens: int,
                    length_penalty: float = 1.0, ignore_eos: bool = False) -> list[dict[str, Any]]:
        """vLLM's own beam search (``LLM.beam_search``) over token-id prompts. Per prompt, the
        best beam: its generated token ids (prompt removed) and cumulative logprob, and
        ``beams``: every returned beam the same way, best first."""
        from vllm.sampling_params import BeamSearchParams

        if not prompts:
            return []
        params = BeamSearchParams(beam_width=beam_width, max_tokens=max_tokens, length_penalty=length_penalty,
                                  ignore_eos=ignore_eos)
        outs = self.llm.beam_search([{"prompt_token_ids": list(p)} for p in prompts], params)
        results = []
        for p, out in zip(prompts, outs):
            beams = [{"token_ids": list(s.tokens[len(p):]), "cum_logprob": float(s.cum_logprob)} for s in out.sequences]
            results.append({**beams[0], "beams": beams})
        return results

    # ---- scoring (metrics) ----------------------------------------------------------------

    def completion_logprobs(self, prompts: Sequence[Sequence[int]],
                            completions: Sequence[Sequence[int]]) -> list[list[float | None]]:
        """log p(completion token | prompt + earlier completion tokens) for each pair, from
        one batched prefill with prompt logprobs (``prompt_logprobs=0``: the actual token
        only), temperature 1, raw logprobs. A pair that vLLM rejects gives []."""
        if not prompts:
            return []
        sp = self.sampling_params(max_tokens=1, prompt_logprobs=0, detokenize=False, temperature=1.0)
        inputs = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompts, completions)]
        try:
            outs = self.llm.generate(inputs, [sp] * len(inputs), use_tqdm=False)
        except Exception:  # noqa: BLE001 - retry one by one so one bad pair costs only itself
            if len(inputs) == 1:
                return [[]]
            return [r for p, c in zip(prompts, completions) for r in self.completion_logprobs([p], [c])]
        result: list[list[float | None]] = []
        for p, c, out in zip(prompts, completions, outs):
            plp = out.prompt_logprobs or []
            lps: list[float | None] = []
            for pos in range(len(p), len(p) + len(c)):
                entry = plp[pos] if pos < len(plp) else None
                tok = int(c[pos - len(p)])
                lp = None
                if entry is not None:
                    got = entry.get(tok) if hasattr(entry, "get") else None
                    lp = None if got is None else float(getattr(got, "logprob", got))
                lps.append(lp)
            result.append(lps)
        return result
