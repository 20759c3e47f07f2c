"""deceval: an evaluation harness for LLM decoding strategies.

Import-light by contract: nothing here (nor config, registry or strategies.base)
imports vllm, torch or ray, so ``deceval --help``, config validation and the
leaderboard work on a laptop with none of them loaded.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
