"""CLI commands that list what is built in: ``strategies``, ``models`` (and ``models
prepare``), ``prompts``."""

from __future__ import annotations

import argparse

from harness import models
from harness.prompts import BUILTIN_SETS, GENERATED_SETS, PromptSetConfig, load_prompt_set
from strategies import STRATEGIES


def _cmd_strategies(args: argparse.Namespace) -> int:
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        kind = ("native" if not cls.stepwise else "stepwise" if cls().runs_stepwise()
                else "inside generate, or impl: stepwise")
        det = "deterministic" if cls.deterministic else "seeded"
        print(f"{name}  [{kind}, {det}]  {cls.description}")
        for pname, default, doc in cls.Params.describe():
            print(f"    {pname} = {default!r}  {doc}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    if args.models_cmd == "prepare":
        return models.main_prepare(args.names, force=args.force)
    for spec in models.BUILTIN_MODELS.values():
        print(f"{spec.name}  {spec.description}")
    return 0


def _cmd_prompts(args: argparse.Namespace) -> int:
    for name, desc in BUILTIN_SETS.items():
        ps = load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None))
        print(f"{name}  ({len(ps.prompts)} prompts{', with references' if ps.has_references else ''})  {desc}")
    for name, (desc, _) in GENERATED_SETS.items():
        print(f"{name}  (generated)  {desc}")
    return 0


def add_catalogue_commands(sub: "argparse._SubParsersAction") -> None:
    """Add the ``strategies``, ``models`` and ``prompts`` subparsers."""
    s = sub.add_parser("strategies", help="list strategies with their parameters and defaults")
    s.set_defaults(func=_cmd_strategies)

    m = sub.add_parser("models", help="built-in models: list, or prepare (install and convert) them offline")
    msub = m.add_subparsers(dest="models_cmd")
    mp = msub.add_parser("prepare", help="install and convert built-in models into the local cache")
    mp.add_argument("names", nargs="+", help="e.g. smollm2-135m gemma3-270m")
    mp.add_argument("--force", action="store_true", help="convert again even when the cache is complete")
    msub.add_parser("list", help="list built-in models")
    m.set_defaults(func=_cmd_models, models_cmd="list")

    pr = sub.add_parser("prompts", help="list built-in prompt sets")
    pr.set_defaults(func=_cmd_prompts)
