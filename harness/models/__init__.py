"""Models: the built-in catalogue and its cache (:mod:`.catalogue`), offline preparation
and model references (:mod:`.preparation`), and the seed paper's capacity formulas
(:mod:`.capacity`). Standard library only at import time."""

from harness.models.capacity import capacity, model_capacity, run_capacities
from harness.models.catalogue import (
                                      BUILTIN_MODELS,
                                      MARKER_NAME,
                                      GGUFLocator,
                                      ModelError,
                                      ModelSpec,
                                      builtin_names,
                                      cache_root,
                                      folder_size,
                                      get_spec,
                                      human_size,
                                      is_prepared,
                                      model_dir,
)
from harness.models.preparation import (
                                      main_prepare,
                                      model_architecture,
                                      prepare,
                                      resolve_model,
)

__all__ = ["BUILTIN_MODELS", "GGUFLocator", "MARKER_NAME", "ModelError", "ModelSpec", "builtin_names", "cache_root",
           "capacity", "folder_size", "get_spec", "human_size", "is_prepared", "main_prepare", "model_architecture",
           "model_capacity", "model_dir", "prepare", "resolve_model", "run_capacities"]
