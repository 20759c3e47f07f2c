"""The run config's schema: the YAML keys and their limits (pydantic, strict), and the
resolved objects a run works from (:class:`RunConfig`, :class:`StrategyConfig`, ...).

Import-light: pydantic only.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import ConfigError
from harness.tasks import PromptSetConfig
from strategies import get_strategy

# ---- schema ---------------------------------------------------------------------------------


#: Upper bounds of sizes a config may ask for; each error names the key, range and value.
MAX_SAMPLES_PER_PROMPT = 1000
MAX_PROMPT_LIMIT = 1_000_000
MAX_SHARD_SIZE = 100_000
MAX_REPLICAS = 256
MAX_MODEL_LEN = 1 << 20
MAX_TIMING_REPEATS = 20
MAX_FEWSHOT = 64  # solved examples before each prompt
MAX_STRATEGY_CONFIGS = 10_000  # expanded grid points over all strategy entries
MAX_NAME_CHARS = 100  # run_name, model names: each becomes (part of) a folder name
#: Planned rows (prompts x strategy configs x samples x seeds x models) above this need --force.
MAX_PLANNED_ROWS = 1_000_000
#: YAML limits: file size, nesting depth, and values after alias expansion (alias bombs).
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
#: Longest excerpt of a given value quoted in an error message.

class _Strict(BaseModel):
    # strict: no "3" for an int, no true for a number; no inf or nan anywhere.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EngineOptions(_Strict):
    """vLLM engine settings. On the CPU the KV cache lives in RAM (kv_cache_gib)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a CPU with native bf16 (AVX512_BF16, AMX), float32 on other CPUs, "
        "the model's own dtype on a GPU (harness.hardware)")
    max_model_len: int = Field(2048, ge=16, le=MAX_MODEL_LEN, description="context length (prompt + completion)")
    block_size: int = Field(32, ge=16, description="KV-cache block size; a multiple of 32 on the CPU")
    enable_prefix_caching: bool = True
    share_prefix_cache: bool = Field(
        False, description="keep the prefix cache (and the tail cache) from one unit to the next; false (the "
        "default): every unit starts from an empty cache, so its prompts cost it the same wherever it sits in the "
        "plan, and cached_tokens counts only reuse inside the unit")
    warmup_tokens: int = Field(
        4, ge=0, le=64, description="before the first timed unit of each strategy and batch size on an engine, run "
        "that unit's strategy on its own prompts for this many tokens, untimed (reported as the engine's warm-up); "
        "0 turns the warm-up off")
    tail_cache_slots: int | None = Field(
        None, ge=0, description="stepwise strategies: prompt tails kept for reuse (harness.engine.vllm_ext.tailcache), one KV block "
        "of every layer each; default 512 on the CPU, 0 (off) on CUDA; 0 turns it off")
    kv_cache_gib: int = Field(2, ge=1, description="CPU KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    enforce_eager: bool = True
    max_num_seqs: int | None = Field(None, ge=1)
    cpu_cores: str | None = Field(None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$", description="cores to bind, e.g. '0-1'; default: this replica's even share of the node's cores")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine_core_process: bool = Field(
        True, description="CPU: run vLLM's engine core in a process of its own (vLLM's layout); false runs it in "
        "the engine's process, one process start fewer (bench/engine_layout.py: faster starts, a little lower "
        "bf16 throughput)")


class ModelEntry(_Strict):
    model: str = Field(description="built-in name (smollm2-135m, gemma3-270m), local HF folder or hub id")
    name: str | None = Field(None, description="label in reports; default: the built-in name or folder name")
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    engine: dict[str, Any] = Field(default_factory=dict)


class HFDatasetEntry(_Strict):
    """A Hugging Face dataset, read offline (HF_DATASETS_OFFLINE=1): from the local cache, a
    local dataset folder, or local files through a builder (``path: json``, ``data_files``)."""

    path: str = Field(min_length=1, description="hub id in the local cache, a local folder, or a builder: json, "
                                                "csv, parquet (with data_files)")
    name: str | None = Field(None, min_length=1, description="the dataset's configuration, e.g. 'main' for gsm8k")
    data_files: Union[str, list[str], dict[str, Union[str, list[str]]], None] = Field(
        None, description="local file(s) for a builder, as datasets.load_dataset takes them")
    split: str = Field("train", min_length=1)


class FieldsEntry(_Strict):
    """Which column of the records holds each prompt field (default: the column of its own name)."""

    prompt: str | None = Field(None, min_length=1, description="the prompt text (or give 'template')")
    reference: str | None = Field(None, min_length=1, description="the reference answer")
    id: str | None = Field(None, min_length=1, description="a stable id; default <set>-<record number>")
    aliases: str | None = Field(None, min_length=1, description="other accepted answers: a list, or one text")


class PromptSetEntry(_Strict):
    name: str | None = None
    path: str | None = Field(None, description="a JSONL, Parquet or CSV file")
    hf_dataset: HFDatasetEntry | None = None
    fields: FieldsEntry | None = None
    template: str | None = Field(None, min_length=1, description="the prompt from any fields of a record, as plain "
                                                                 "{field} placeholders: 'Question: {question}\\nAnswer:'")
    fewshot: int = Field(0, ge=0, le=MAX_FEWSHOT, description="solved examples before each prompt: the first N records "
                                                              "of fewshot_path, or of the set itself (left out of it)")
    fewshot_path: str | None = Field(None, description="a JSONL, Parquet or CSV file of few-shot examples")
    extractor: str | None = Field(None, description="the answer extractor exact_match compares (harness.tasks.extract)")
    licence: str | None = Field(None, min_length=1, max_length=200,
                                description="the data's licence, recorded in run.json (a built-in states its own)")
    lm_eval_task: str | None = Field(
        None, min_length=1, description="an lm-evaluation-harness task (extra 'lmeval'): a task name lm-eval knows "
        "or the path of a task YAML; lm-eval builds its prompts (doc_to_text, few-shot) and scores its rows (its "
        "filters and metrics); generate_until tasks only")
    num_fewshot: int | None = Field(None, ge=0, le=MAX_FEWSHOT, description="lm_eval_task: few-shot examples before "
                                                                           "each prompt (lm-eval's --num_fewshot); "
                                                                           "default: the task's own")
    chat: bool | None = None
    limit: int | None = Field(None, ge=1, le=MAX_PROMPT_LIMIT)
    split: Literal["dev", "test"] | None = Field(None, description="only the dev or the test part (a stable hash "
                                                                   "of each prompt id against dev_fraction)")
    dev_fraction: float = Field(0.5, gt=0, lt=1)


class GenerationOptions(_Strict):
    max_tokens: int = Field(64, ge=1, description="at most each model's engine.max_model_len")
    samples_per_prompt: int = Field(1, ge=1, le=MAX_SAMPLES_PER_PROMPT)
    seed: Union[int, list[int]] = 0
    stop: list[str] = Field(default_factory=list)
    timing_repeats: int = Field(
        1, ge=1, le=MAX_TIMING_REPEATS, description="time each unit's generation this many times (each from the same "
        "empty cache; the rows come from the first); the cost CIs and the gate's timing comparisons need >= 2")


class OutputOptions(_Strict):
    dir: str = "reports"
    run_id: str | None = None


class RawConfig(_Strict):
    run_name: str = Field("run", min_length=1, max_length=MAX_NAME_CHARS, description="part of the run id (a folder name)")
    description: str = ""
    models: list[Union[str, ModelEntry]] = Field(min_length=1)
    engine: dict[str, Any] = Field(default_factory=dict)
    prompt_sets: list[Union[str, PromptSetEntry]] = Field(min_length=1)
    strategies: list[dict[str, Any]] = Field(min_length=1)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    chat: bool = False
    shard_size: int | None = Field(None, ge=1, le=MAX_SHARD_SIZE, description="prompts per work unit; default: the whole prompt list")
    metrics: list[str] | None = None
    regression: dict[str, Any] | None = Field(None, description="gate settings read by 'deceval compare'")
    output: OutputOptions = Field(default_factory=OutputOptions)


# ---- resolved objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str
    ref: str
    replicas: int
    engine: EngineOptions


@dataclass(frozen=True)
class StrategyConfig:
    """One point of a strategy grid: stable label, slug (path-safe) and id."""

    name: str
    label: str
    params: dict[str, Any]
    samples_per_prompt: int
    max_tokens: int

    @property
    def id(self) -> str:
        return stable_hash({"name": self.name, "params": self.params,
                            "samples_per_prompt": self.samples_per_prompt, "max_tokens": self.max_tokens})[:12]

    @property
    def slug(self) -> str:
        return slugify(self.label)

    def build(self):
        return get_strategy(self.name).from_dict(self.params)


@dataclass(frozen=True)
class RunConfig:
    source: str
    run_name: str
    description: str
    models: tuple[ModelConfig, ...]
    prompt_sets: tuple[PromptSetConfig, ...]
    strategies: tuple[StrategyConfig, ...]
    seeds: tuple[int, ...]
    stop: tuple[str, ...]
    shard_size: int | None
    metrics: tuple[str, ...] | None
    output_dir: str
    run_id_override: str | None
    #: how many times each unit's generation is timed (generation.timing_repeats)
    timing_repeats: int = 1
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes outputs (not the output dir or run id)."""
        body = {k: v for k, v in self.raw.items() if k not in ("output", "description", "regression")}
        return stable_hash(body)[:12]

    @property
    def run_id(self) -> str:
        return self.run_id_override or f"{slugify(self.run_name)}-{self.config_hash[:8]}"


# ---- helpers ------------------------------------------------------------------------------------


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


#: A run id names a folder directly under the output folder.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


def check_run_id(run_id: str, where: str) -> str:
    """``run_id``, after checking it is a plain folder name (no '/', not '.' or '..')."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or run_id in (".", "..") \
            or len(run_id) > 128:
        shown = run_id if isinstance(run_id, str) and len(run_id) <= 60 else f"{str(run_id)[:60]}..."
        raise ConfigError(f"{where}: a run id must be 1-128 of the characters A-Z a-z 0-9 . _ - (a folder name "
                          f"under the output folder, not '.' or '..'), got {shown!r}")
    return run_id
