"""Run configuration: the schema (:mod:`.schema`), safe YAML files (:mod:`.files`), the
regression gate's settings (:mod:`.gate`) and the resolution of a YAML mapping into a
:class:`RunConfig` against the strategy and metric registries (:mod:`.resolve`).

Import-light: pydantic and yaml only; no vllm, torch or ray.
"""

from harness.config.files import ConfigLoader, YAMLLimitError, load_yaml
from harness.config.gate import (
                                    DEFAULT_GATES,
                                    GateConfig,
                                    load_gate_config,
                                    parse_gate_config,
)
from harness.config.resolve import (
                                    check_metric_plugins,
                                    check_planned_rows,
                                    expand_strategy,
                                    load_config,
                                    planned_rows,
                                    prompt_set_mapping,
                                    reject_other_kind,
                                    resolve_config,
)
from harness.config.schema import (
                                    MAX_CONFIG_BYTES,
                                    MAX_MODEL_LEN,
                                    MAX_NAME_CHARS,
                                    MAX_PLANNED_ROWS,
                                    MAX_PROMPT_LIMIT,
                                    MAX_REPLICAS,
                                    MAX_SAMPLES_PER_PROMPT,
                                    MAX_SHARD_SIZE,
                                    MAX_STRATEGY_CONFIGS,
                                    MAX_YAML_DEPTH,
                                    MAX_YAML_NODES,
                                    RUN_ID_PATTERN,
                                    EngineOptions,
                                    GenerationOptions,
                                    ModelConfig,
                                    RawConfig,
                                    RunConfig,
                                    StrategyConfig,
                                    check_run_id,
                                    slugify,
                                    stable_hash,
)
from harness.config.tune import Constraint, Family, Space, TuneConfig, parse_tune_config
from harness.tasks import PromptSetConfig

__all__ = [
    "ConfigLoader", "Constraint", "DEFAULT_GATES", "Family", "Space", "TuneConfig", "parse_tune_config", "EngineOptions", "GateConfig", "GenerationOptions", "MAX_CONFIG_BYTES",
    "MAX_MODEL_LEN", "MAX_NAME_CHARS", "MAX_PLANNED_ROWS", "MAX_PROMPT_LIMIT", "MAX_REPLICAS",
    "MAX_SAMPLES_PER_PROMPT", "MAX_SHARD_SIZE", "MAX_STRATEGY_CONFIGS", "MAX_YAML_DEPTH", "MAX_YAML_NODES",
    "ModelConfig", "PromptSetConfig", "RUN_ID_PATTERN", "RawConfig", "RunConfig", "StrategyConfig",
    "YAMLLimitError", "check_metric_plugins", "check_planned_rows", "check_run_id", "expand_strategy",
    "load_config", "load_gate_config", "load_yaml", "parse_gate_config", "planned_rows", "prompt_set_mapping", "reject_other_kind", "resolve_config",
    "slugify", "stable_hash",
]
