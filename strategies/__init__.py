"""Decoding strategies and their registry.

``STRATEGIES`` is the one registry: built-ins are lazy ``module:Class`` placeholders (no
import until used), third-party strategies come through the entry-point group
``harness.strategies`` or as a ``module:Class`` string in a config.
"""

from __future__ import annotations

from typing import Any

from harness.errors import RegistryError
from harness.registry import Registry
from strategies.base import Strategy


def _check_strategy(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise RegistryError(f"strategy {name!r} resolves to {obj!r}, which is not a strategies.base.Strategy subclass")


STRATEGIES: Registry = Registry("strategy", entry_point_group="harness.strategies", validate=_check_strategy)

BUILTINS = {
    "greedy": "strategies.native:Greedy",
    "temperature": "strategies.native:Temperature",
    "top_k": "strategies.native:TopK",
    "top_p": "strategies.native:TopP",
    "min_p": "strategies.native:MinP",
    "beam": "strategies.beam:BeamSearch",
    "typical": "strategies.stepwise:Typical",
    "eta": "strategies.stepwise:Eta",
    "epsilon": "strategies.stepwise:Epsilon",
    "mirostat": "strategies.stepwise:Mirostat",
    "dynamic_top_p": "strategies.stepwise:DynamicTopP",
    "wsp": "strategies.wsp:WSP",
    "wsp_guarded": "strategies.wsp:GuardedWSP",
}
for _name, _ref in BUILTINS.items():
    STRATEGIES.register(_name, _ref)


def builtin_names() -> list[str]:
    """The built-in strategies, in registration order."""
    return list(BUILTINS)


def get_strategy(name: str):
    """The strategy class for a registered name or a ``module:Class`` string."""
    return STRATEGIES.get(name)
