"""CLI commands that list what is built in: ``strategies``, ``models`` (and ``models
prepare``), ``tasks`` (and ``tasks prepare``; ``prompts`` is the same list)."""

from __future__ import annotations

import argparse

from harness import models
from harness.errors import DecevalError
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks.catalogue import TASKS
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


def _cmd_tasks(args: argparse.Namespace) -> int:
    if getattr(args, "tasks_cmd", None) == "prepare":
        return _prepare_tasks(args.names, archive_file=args.archive)
    rows = [("task", "prompts", "licence", "metrics", "ready", "source")]
    for t in TASKS.values():
        problem = t.problem()
        rows.append((t.name, str(t.size), t.licence, ",".join(t.metrics), "yes" if problem is None else "no: " + problem,
                     t.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print("\nyour own data: a JSONL/Parquet/CSV file or a Hugging Face dataset in prompt_sets (docs/tasks-reference.md, 'Your own data')")
    return 0


def _prepare_tasks(names: list[str], archive_file: str | None = None) -> int:
    """Load each named task once in full (its packaged file checked against its SHA-256, or
    its extra's generator run), so a run finds it ready; exit 1 when one cannot be.
    ``archive_file``: a local copy of the tasks' package archive, used instead of a download."""
    failed = 0
    for name in names:
        if name not in TASKS:
            print(f"deceval: unknown task {name!r}; tasks: {', '.join(TASKS)}")
            failed += 1
            continue
        try:
            archive = TASKS[name].archive
            if archive is None and archive_file is not None:
                raise DecevalError(f"--archive is for tasks taken out of a package archive; {name!r} is not one")
            if archive is not None and archive.problem() is not None:
                where = archive_file or f"{archive.url.split('/')[2]} ({archive.size / 2**20:.0f} MiB)"
                print(f"{name}: reading {archive.dist} {archive.version} from {where} to take out "
                      f"{TASKS[name].member}", flush=True)
                archive.prepare(local=archive_file)
            ps = load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None))
        except DecevalError as exc:
            print(f"deceval: {name}: {exc}")
            failed += 1
            continue
        print(f"{name}: ready ({len(ps.prompts)} prompts, hash {ps.hash}, licence {ps.licence})")
    return 1 if failed else 0


def add_catalogue_commands(sub: "argparse._SubParsersAction") -> None:
    """Add the ``strategies``, ``models``, ``tasks`` and ``prompts`` subparsers."""
    s = sub.add_parser("strategies", help="list strategies with their parameters and defaults")
    s.set_defaults(func=_cmd_strategies)

    m = sub.add_parser("models", help="built-in models: list, or prepare (install and convert) them offline")
    msub = m.add_subparsers(dest="models_cmd")
    mp = msub.add_parser("prepare", help="install and convert built-in models into the local cache")
    mp.add_argument("names", nargs="+", help="e.g. smollm2-135m gemma3-270m")
    mp.add_argument("--force", action="store_true", help="convert again even when the cache is complete")
    msub.add_parser("list", help="list built-in models")
    m.set_defaults(func=_cmd_models, models_cmd="list")

    t = sub.add_parser("tasks", help="built-in tasks (prompt sets): list with size, licence, metrics and whether "
                                     "ready, or prepare (check) them")
    tsub = t.add_subparsers(dest="tasks_cmd")
    tp = tsub.add_parser("prepare", help="load tasks once in full: check packaged data, run generators")
    tp.add_argument("names", nargs="+", help="e.g. gsm8k humaneval")
    tp.add_argument("--archive", metavar="FILE", help="a local copy of the tasks' package archive (e.g. "
                    "bigbench-1.0.0.tar.gz), read instead of a download; its SHA-256 is still checked")
    tsub.add_parser("list", help="list built-in tasks")
    t.set_defaults(func=_cmd_tasks, tasks_cmd="list")
    pr = sub.add_parser("prompts", help="the same list as 'deceval tasks'")
    pr.set_defaults(func=_cmd_tasks, tasks_cmd="list")
