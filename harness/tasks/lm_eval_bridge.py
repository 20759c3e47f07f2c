"""lm-evaluation-harness tasks as prompt sets: lm-eval builds the prompts and lm-eval scores
the completions, so a task YAML of lm-eval's runs under every decoding strategy here and
gets the exact_match lm-eval would give the same completions.

- :func:`lm_eval_records`: the task's eval docs as prompt records. Each prompt is the
  context lm-eval's ``build_all_requests`` gives its generate_until request: the
  description, ``num_fewshot`` examples drawn by the task's own few-shot sampler seeded as
  lm-eval seeds it (:data:`FEWSHOT_SEED`), ``doc_to_text`` and any ``gen_prefix``. The
  reference is ``doc_to_target`` as text (a list of targets: the first, the rest as
  aliases); the id is the doc's index in the task's eval split.
- :func:`lm_eval_score`: completions scored by the task itself: one Instance per completion
  (``construct_requests``), the completion as its ``resps``, the task's own filters
  (``apply_filters``: its ``filter_list``, or lm-eval's ``take_first``) and
  ``process_results`` on each filter's response.
- :func:`score_lm_eval_rows`: the rows of a unit, grouped by task, scored by one
  :func:`lm_eval_score` call per task.

What follows lm-eval and what does not:

- The task's ``until`` strings are recorded on each record (``stop``) and stop generation:
  the set's units stop at ``generation.stop`` and at them (:func:`harness.plan.stop_groups`;
  a unit never mixes sets with different stop strings). Scoring also cuts each completion
  at the first of them, as every lm-eval model does with its output
  (``lm_eval.models.utils.postprocess_generated_text``).
  Its other ``generation_kwargs`` (temperature, do_sample, max_gen_toks) are lm-eval's
  decoding settings: here the strategy and ``max_tokens`` decide.
- Each sample is its own lm-eval response (``repeats: 1``): filters that combine a doc's
  repeats (``majority_vote``) see one response at a time.
- The prompts are lm-eval's plain-text contexts. ``chat: true`` puts the whole context in
  one user turn of the model's chat template, which is not what lm-eval's
  ``--apply_chat_template`` builds (a system turn, few-shot examples as turns).
- With several filters (GSM8K's strict-match and flexible-extract) the rows carry the first
  filter's answer and metric values; :class:`LmEvalScore` holds every filter's.
- The task is built once per (task, num_fewshot) in a process, with Hugging Face in offline
  mode (HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1, restored afterwards): its dataset comes
  from local files (``dataset_path: json``, ``dataset_kwargs: {data_files: ...}``) or the
  local cache, never the network.

lm-eval is imported inside the functions that need it (extra ``lmeval``): importing this
module costs nothing.
"""

from __future__ import annotations

import difflib
import numbers
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.errors import PromptError, excerpt
from harness.tasks.extract import LM_EVAL_MARKER
from harness.tasks.sources import hf_offline

#: lm-eval's default ``fewshot_random_seed`` (``lm_eval.defaults.DEFAULT_OTHER_SEED``), with
#: which ``simple_evaluate`` seeds every task's few-shot sampler before building its requests.
FEWSHOT_SEED = 1234
#: The ``extractor`` of an lm-eval task's prompts and rows is this prefix and the task reference.
MARKER_PREFIX = LM_EVAL_MARKER
#: A task reference ending so (or holding a '/') is the path of a task YAML; else a task name.
YAML_SUFFIXES = (".yaml", ".yml")
#: The only output type a decoding strategy can produce.
GENERATE_UNTIL = "generate_until"

_INSTALL_HINT = "pip install -e '.[lmeval]' (lm-eval==0.4.13)"


def is_yaml_ref(task_ref: str) -> bool:
    """Whether ``task_ref`` names a task YAML file rather than a task lm-eval knows by name."""
    return task_ref.endswith(YAML_SUFFIXES) or "/" in task_ref


def lm_eval_marker(task_ref: str) -> str:
    """The ``extractor`` value of the prompts and rows of ``task_ref``."""
    return MARKER_PREFIX + task_ref


def marked_task(extractor: Any) -> str | None:
    """The task reference of an ``lm_eval:<task>`` extractor value; None for anything else."""
    if isinstance(extractor, str) and extractor.startswith(MARKER_PREFIX) and len(extractor) > len(MARKER_PREFIX):
        return extractor[len(MARKER_PREFIX):]
    return None


def _label(task_ref: str) -> str:
    return f"lm-eval task YAML {task_ref!r}" if is_yaml_ref(task_ref) else f"lm-eval task {task_ref!r}"


@dataclass(frozen=True)
class LmEvalScore:
    """lm-eval's verdict on one completion: its first filter's response and metric values,
    and every filter's (filter name -> (response, metrics))."""

    #: the task's first filter ("none" for lm-eval's default take_first)
    filter: str
    #: that filter's response: the answer lm-eval compares with the target
    answer: Any
    #: that filter's per-sample metric values (process_results), numbers only
    metrics: dict[str, float]
    by_filter: dict[str, tuple[Any, dict[str, float]]] = field(default_factory=dict)


@dataclass
class _Loaded:
    """One lm-eval task, built: the task object and what its prompts and scoring need. Its
    lock guards the task's state (the sampler's generator, its instances) while in use."""

    ref: str  # the task reference as given
    label: str  # names it in every error
    task: Any  # the lm_eval ConfigurableTask
    num_fewshot: int
    docs: list[Any]  # the eval docs, by doc id
    contexts: dict[int, str] = field(default_factory=dict)  # doc id -> the prompt lm-eval built
    lock: threading.Lock = field(default_factory=threading.Lock)


_TASKS: dict[tuple[str, int | None], _Loaded] = {}  # (task key, num_fewshot asked for) -> the built task
_MANAGERS: dict[bool, Any] = {}  # with lm-eval's own tasks indexed (True) or none (False) -> TaskManager
_LOCK = threading.Lock()  # guards both caches


def _task_key(task_ref: str) -> str:
    return str(Path(task_ref).expanduser().resolve()) if is_yaml_ref(task_ref) else task_ref


def _import_lm_eval(label: str) -> tuple[Any, Any]:
    """(lm_eval.tasks, datasets), or a PromptError with the install hint."""
    try:
        import datasets
        import lm_eval.tasks
    except ImportError as exc:
        raise PromptError(f"{label} needs lm-evaluation-harness, which is not importable here ({exc}); "
                          f"{_INSTALL_HINT}") from None
    return lm_eval.tasks, datasets


def _manager(lm_eval_tasks: Any, builtin: bool) -> Any:
    """A TaskManager: with lm-eval's own tasks indexed (to find one by name: its 13,000 task
    YAMLs parsed, about 15 s on a small CPU, once per process), or with none (a YAML given by
    path needs no index)."""
    if builtin not in _MANAGERS:
        _MANAGERS[builtin] = lm_eval_tasks.TaskManager(include_defaults=builtin)
    return _MANAGERS[builtin]


def _raw_config(task_ref: str, label: str, manager: Any) -> tuple[str, dict[str, Any]]:
    """(spec for ``TaskManager.load``, the task's config with its includes, functions
    unresolved), read before anything is built, so a wrong task fails before its data loads."""
    if is_yaml_ref(task_ref):
        path = Path(task_ref).expanduser()
        if not path.is_file():
            raise PromptError(f"{label}: no such file ({path.resolve()}); give the path of an lm-eval task YAML "
                              f"or the name of a task lm-eval knows")
        from lm_eval.tasks._yaml_loader import load_yaml  # the loader TaskManager reads YAMLs with
        try:
            cfg = load_yaml(path.resolve(), resolve_func=False, recursive=True)
        except Exception as exc:  # noqa: BLE001 - bad YAML, a missing include: name the file and the cause
            raise PromptError(f"{label}: cannot read it as an lm-eval task config "
                              f"({excerpt(f'{type(exc).__name__}: {exc}', 300, quote=False)})") from None
        if not isinstance(cfg, dict):
            raise PromptError(f"{label}: expected a mapping with 'task:' and the task's keys, got "
                              f"{type(cfg).__name__}")
        if "group" in cfg or "task" not in cfg or not isinstance(cfg["task"], str):
            raise PromptError(f"{label}: not a single task (it needs 'task: NAME'; a group of tasks is not "
                              f"supported); give the YAML of one of its tasks")
        return str(path.resolve()), cfg
    entry = manager.task_index.get(task_ref)
    if entry is None:
        close = difflib.get_close_matches(task_ref, manager.all_subtasks, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise PromptError(f"unknown {label}{hint} (lm-eval knows {len(manager.all_subtasks):,} tasks; "
                          f"'lm-eval ls tasks' lists them); or give the path of a task YAML")
    kind = getattr(entry.kind, "name", str(entry.kind))
    if kind not in ("TASK", "PY_TASK"):
        raise PromptError(f"{label} is an lm-eval {kind.lower()} of several tasks; give one of its tasks "
                          f"(one prompt set per task)")
    return task_ref, dict(entry.cfg or {})


def _check_output_type(label: str, name: str, output_type: Any) -> None:
    if output_type != GENERATE_UNTIL:
        raise PromptError(f"{label}: only generate_until tasks run under decoding strategies; {name} is "
                          f"{output_type}")


def _build(task_ref: str, num_fewshot: int | None) -> _Loaded:
    label = _label(task_ref)
    lm_eval_tasks, datasets = _import_lm_eval(label)
    with hf_offline(datasets):
        manager = _manager(lm_eval_tasks, builtin=not is_yaml_ref(task_ref))
        spec, cfg = _raw_config(task_ref, label, manager)
        name = cfg.get("task", task_ref)
        if "class" not in cfg:  # a Python task says its output type only once built
            _check_output_type(label, name, cfg.get("output_type", GENERATE_UNTIL))
        try:
            loaded = manager.load(spec)
        except Exception as exc:  # noqa: BLE001 - most often its dataset: say where it is read from and how to fix it
            detail = excerpt(f"{type(exc).__name__}: {exc}", 300, quote=False)
            raise PromptError(
                f"{label}: lm-eval cannot build the task ({detail}); its dataset is read offline "
                f"(HF_DATASETS_OFFLINE=1): give local files in the YAML (dataset_path: json, dataset_kwargs: "
                f"{{data_files: {{test: FILE}}}}) or download it once into the Hugging Face cache (HF_HOME) where "
                f"there is network access") from None
    tasks = loaded.get("tasks", {})
    if len(tasks) != 1 or loaded.get("groups"):
        raise PromptError(f"{label}: lm-eval built {len(tasks)} tasks ({excerpt(sorted(tasks), 200)}); give one "
                          f"task per prompt set")
    (task,) = tasks.values()
    _check_output_type(label, name, task.OUTPUT_TYPE)
    # num_fewshot as lm-eval's simple_evaluate sets it, except that an override the task's
    # own num_fewshot: 0 would silently ignore is an error here
    own = task.get_config("num_fewshot")
    if num_fewshot is not None:
        if own == 0 and num_fewshot > 0:
            raise PromptError(f"{label}: the task sets num_fewshot: 0, which lm-eval never overrides; drop "
                              f"num_fewshot from the prompt set entry, or from the task YAML")
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif own is None:
        task.set_config(key="num_fewshot", value=0)
    try:
        docs = list(task.eval_docs)
    except Exception as exc:  # noqa: BLE001 - no test or validation split
        raise PromptError(f"{label}: no docs to evaluate ({excerpt(str(exc), 200, quote=False)}); give the task a "
                          f"test_split or validation_split") from None
    return _Loaded(ref=task_ref, label=label, task=task, num_fewshot=task.get_config("num_fewshot"), docs=docs)


def _load(task_ref: str, num_fewshot: int | None, any_fewshot: bool = False) -> _Loaded:
    """The built task, from this process's cache when it is there. ``any_fewshot``: a task
    built for any num_fewshot will do (scoring does not depend on it)."""
    key = _task_key(task_ref)
    with _LOCK:
        if (key, num_fewshot) in _TASKS:
            return _TASKS[(key, num_fewshot)]
        if any_fewshot:
            for (k, _), loaded in _TASKS.items():
                if k == key:
                    return loaded
        loaded = _build(task_ref, num_fewshot)
        _TASKS[(key, num_fewshot)] = loaded
        return loaded


def _reference(task: Any, doc: Any) -> tuple[str | None, list[str]]:
    """(reference, aliases) as text: the target lm-eval's process_results compares with."""
    gold = task.doc_to_target(doc)
    if task.config.doc_to_choice is not None and isinstance(gold, int):
        gold = task.doc_to_choice(doc)[gold]
    if isinstance(gold, (list, tuple)):
        golds = [str(g) for g in gold]
        return (golds[0] if golds else None), golds[1:]
    return str(gold), []


def lm_eval_records(task_ref: str, num_fewshot: int | None = None,
                    limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(where, record)`` of each of the task's first ``limit`` eval docs (all without it):
    ``id`` (the doc index), ``prompt`` (the context lm-eval sends for generate_until),
    ``reference`` and ``aliases`` (``doc_to_target``), ``stop`` (its ``until`` strings).
    ``num_fewshot`` None: the task's own (0 when it gives none), as in lm-eval."""
    loaded = _load(task_ref, num_fewshot)
    task = loaded.task
    with loaded.lock:
        try:
            task.set_fewshot_seed(seed=FEWSHOT_SEED)  # the sampler's draws start afresh, as in lm-eval
            task.build_all_requests(limit=limit)
        except Exception as exc:  # noqa: BLE001 - a template naming a missing field, too few few-shot docs
            raise PromptError(f"{loaded.label}: lm-eval cannot build its prompts with num_fewshot "
                              f"{loaded.num_fewshot} ({excerpt(f'{type(exc).__name__}: {exc}', 300, quote=False)}); "
                              f"check the task's doc_to_text and its few-shot split") from None
        instances = list(task.instances)
    out = []
    for inst in instances:
        ctx, gen_kwargs = inst.arguments[0], inst.arguments[1]
        if not isinstance(ctx, str):
            raise PromptError(f"{loaded.label}: doc {inst.doc_id}: lm-eval built a {type(ctx).__name__} context, "
                              f"not a text (a multiple-input task); only single-text generate_until tasks run here")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        loaded.contexts[inst.doc_id] = ctx
        reference, aliases = _reference(task, inst.doc)
        out.append((f"{loaded.label} doc {inst.doc_id}",
                    {"id": str(inst.doc_id), "prompt": ctx, "reference": reference, "aliases": aliases,
                     "stop": until}))
    return out


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-sample metric values that are numbers (corpus metrics such as bleu give items
    for their aggregation instead)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}


def lm_eval_score(task_ref: str, num_fewshot: int | None,
                  docs_completions: Sequence[tuple[int, str]]) -> list[LmEvalScore]:
    """lm-eval's verdict on each ``(doc id, completion)``: the completion cut at the task's
    ``until`` strings (as lm-eval's models cut their output) becomes the ``resps`` of the
    doc's Instance; the task's ``apply_filters`` and ``process_results`` do the rest."""
    from lm_eval.models.utils import postprocess_generated_text  # the cut lm-eval's models apply
    loaded = _load(task_ref, num_fewshot, any_fewshot=True)
    task = loaded.task
    instances = []
    for doc_id, completion in docs_completions:
        if not 0 <= doc_id < len(loaded.docs):
            raise PromptError(f"{loaded.label}: no doc {doc_id} (its eval split has {len(loaded.docs)}); the rows "
                              f"do not come from this task")
        doc = loaded.docs[doc_id]
        inst = task.construct_requests(doc=doc, ctx=loaded.contexts.get(doc_id, ""),
                                       metadata=(task.config.task, doc_id, 1))
        until = inst.arguments[1].get("until")
        inst.resps = [postprocess_generated_text(completion if isinstance(completion, str) else "", until, None)]
        instances.append(inst)
    if not instances:
        return []
    with loaded.lock:
        kept = getattr(task, "_instances", None)  # apply_filters works on the task's instances: lend it these
        task._instances = instances
        try:
            task.apply_filters()
        finally:
            task._instances = kept
    out = []
    for inst in instances:
        by_filter = {key: (resp, _numbers(task.process_results(inst.doc, [resp])))
                     for key, resp in inst.filtered_resps.items()}
        first = next(iter(by_filter))
        out.append(LmEvalScore(filter=first, answer=by_filter[first][0], metrics=by_filter[first][1],
                               by_filter=by_filter))
    return out


def _doc_id(row: dict[str, Any], label: str) -> int:
    pid = row.get("prompt_id")
    try:
        return int(str(pid))
    except ValueError:
        raise PromptError(f"{label}: row of prompt {excerpt(pid)} is marked as this task's, but its id is not a "
                          f"doc index") from None


def score_lm_eval_rows(rows: Iterable[dict[str, Any]]) -> None:
    """Each row whose ``extractor`` is ``lm_eval:<task>`` gets ``row['_lm_eval']``, its
    :class:`LmEvalScore`; one :func:`lm_eval_score` call per task. Other rows are left alone."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        ref = marked_task(r.get("extractor"))
        if ref is not None:
            by_task.setdefault(ref, []).append(r)
    for ref, group in by_task.items():
        label = _label(ref)
        scores = lm_eval_score(ref, None, [(_doc_id(r, label), r.get("completion")) for r in group])
        for r, s in zip(group, scores):
            r["_lm_eval"] = s


def row_lm_eval_answer(row: dict[str, Any]) -> str | None:
    """The answer lm-eval's filter found in a scored row (:func:`score_lm_eval_rows`), as text."""
    s = row.get("_lm_eval")
    if not isinstance(s, LmEvalScore) or s.answer is None:
        return None
    return s.answer if isinstance(s.answer, str) else str(s.answer)
