"""Run generated code in a bubblewrap sandbox, never in the harness process.

Guarantees, when bubblewrap (``bwrap``) runs here:

- Namespaces: each program runs under ``bwrap --unshare-all --unshare-user --uid 65534
  --gid 65534``: no network (even loopback is a fresh, empty interface), its own PID
  namespace with its own ``/proc`` (the harness's processes, and their
  ``/proc/<pid>/environ`` with tokens in it, are not visible), its own IPC and hostname,
  uid and gid 65534 (nobody) with no capabilities, and no further user namespaces.
- Files: the root is read-only and holds only what the interpreter needs: ``/usr``, the
  ``/lib*`` and ``/bin`` links, the ``ld.so`` cache, and the interpreter's own prefix with
  its site-packages folders hidden behind empty ones (HumanEval programs need only the
  stdlib). No home folder, not ``/root`` (an interpreter installed under one appears alone
  at its own path), not the repository, not the virtualenv. The working folder (also
  ``/tmp``) is a fresh tmpfs of :data:`WORKDIR_BYTES`, gone when the program ends;
  ``/dev/shm`` is a 1 MiB one.
- Environment: only ``PATH``; bwrap itself is started with nothing else, so no process
  in the sandbox has a secret in its environment.
- rlimits: address space, CPU seconds, file size, number of processes, no core files.
- Output: stdout and stderr are read as they come; the last :data:`OUTPUT_CAP_BYTES` of
  each are kept, the rest is read and dropped, so a program that prints gigabytes costs
  the driver that much reading and no memory.
- Processes: the whole tree ends with the call, whether the program ends, runs past its
  timeout or the driver raises. bwrap's init dies with its parent (``--die-with-parent``)
  and takes the PID namespace with it: the kernel kills every process left in it, forked
  children and setsid grandchildren included. The call stops reading at the deadline
  whatever holds the pipes.
- Verdict: a pass is a fresh random token (``secrets.token_hex``) that the program writes
  as the last line of its stdout only after the code under test returned, and exit status
  0. Ending early with status 0 (``sys.exit(0)``, ``exit()``, ``os._exit(0)``, an
  ``atexit`` handler) is a failure. The token is part of the program text after the
  tests, and the text is sent on stdin, which the interpreter reads to its end before any
  of it runs: no file, argument or pipe the program can read holds it.

Not guaranteed:

- It is no boundary against kernel exploits: the program shares the host's kernel
  (namespaces and rlimits, no seccomp filter). For a model you do not trust at all, run
  the harness in a VM or a container as well.
- The token stops premature exits and guesses, not a program written to cheat: code that
  inspects the interpreter (its frames or code objects) can find it, and code that patches
  builtins or returns an object equal to everything can pass the tests themselves.
- When the harness runs as root, the kernel does not enforce RLIMIT_NPROC (it exempts
  the root user, which the sandbox's uid maps to); forks are then bounded by the timeout
  and the PID namespace's teardown only. Memory is bounded per process (RLIMIT_AS), not
  for the whole tree (no cgroups); with bwrap older than 0.7 (no ``--size``) the tmpfs
  folders are not bounded either, and before 0.8 nested user namespaces are allowed.
- Without a working bubblewrap, code metrics refuse (:class:`SandboxUnavailable`) unless
  the user allows the fallback (``deceval run --allow-unsandboxed-code``, carried as
  ``DECEVAL_ALLOW_UNSANDBOXED_CODE=1``): a plain ``python -I`` subprocess in a temporary
  folder with the same rlimits, output caps and token, sharing the network, the files,
  the user and ``/proc`` with the harness. A guard against accidents, nothing more.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from harness.errors import DecevalError
from harness.tasks import HUMANEVAL_SET, humaneval_problems, humaneval_prompt_hashes

log = logging.getLogger(__name__)

#: The bubblewrap binary (Debian package ``bubblewrap``).
BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
#: Set to "1" (``deceval run --allow-unsandboxed-code`` does) to run code without bwrap
#: where bwrap cannot run, instead of refusing.
ALLOW_UNSANDBOXED_ENV = "DECEVAL_ALLOW_UNSANDBOXED_CODE"
INSTALL_HINT = ("install bubblewrap with 'apt-get install bubblewrap' (or 'make sandbox'); or, to run generated "
                "code as a plain subprocess without the sandbox, pass --allow-unsandboxed-code to 'deceval run' "
                f"(or set {ALLOW_UNSANDBOXED_ENV}=1)")

DEFAULT_TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 1 << 30
FILE_SIZE_LIMIT_BYTES = 16 << 20
MAX_PROCESSES = 32
#: Size of the tmpfs that is the program's working folder and /tmp.
WORKDIR_BYTES = 64 << 20
#: Bytes kept of each of stdout and stderr (the last ones: the verdict is the last line).
OUTPUT_CAP_BYTES = 64 << 10
#: After the program ended or was killed, how long to wait for its pipes to close.
DRAIN_GRACE_S = 1.0
SANDBOX_UID = 65534
SANDBOX_DIR = "/tmp"
SANDBOX_PATH = "/usr/bin:/bin"
#: Where a HumanEval completion is cut (the usual stop sequences of the benchmark).
HUMANEVAL_STOPS = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


class SandboxUnavailable(DecevalError):
    """Generated code would have to run, and bubblewrap cannot run here."""


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    detail: str = ""
    #: the last OUTPUT_CAP_BYTES of stdout (without the pass token) and of stderr
    stdout: str = ""
    stderr: str = ""
    #: bytes the program wrote to stdout and stderr in all, kept or not
    output_bytes: int = 0
    #: False: it ran as a plain subprocess (the allowed fallback), not under bwrap
    sandboxed: bool = True


# ---- the sandbox's command line ---------------------------------------------------------------

def interpreter() -> str:
    """The base interpreter (a virtualenv's python resolved to the one it was made from)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@lru_cache(maxsize=1)
def _python_mounts() -> tuple[str, ...]:
    """Read-only binds of the interpreter's prefix, with its site-packages hidden."""
    exe = interpreter()
    roots = ["/usr"]
    args: list[str] = []
    for prefix in dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)):
        if not _inside(prefix, roots):
            args += ["--ro-bind", prefix, prefix]
            roots.append(prefix)
    if not _inside(exe, roots):
        args += ["--ro-bind", exe, exe]
    for sp in dict.fromkeys(os.path.realpath(p) for p in site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])):
        if os.path.isdir(sp) and _inside(sp, roots):
            args += ["--tmpfs", sp]
    return tuple(args)


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"):
        args += ["--ro-bind-try", f, f]
    return args


@lru_cache(maxsize=8)
def _bwrap_version(bwrap: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, env={"PATH": SANDBOX_PATH})
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return tuple(int(x) for x in out.stdout.split()[-1].split("."))
    except (ValueError, IndexError):
        return (0,)


def bwrap_argv(bwrap: str) -> list[str]:
    """The bwrap command line that runs the base interpreter on a program read from stdin."""
    version = _bwrap_version(bwrap) or (0,)

    def tmpfs(path: str, size: int) -> list[str]:
        return (["--size", str(size)] if version >= (0, 7) else []) + ["--tmpfs", path]  # --size: bwrap 0.7

    args = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--die-with-parent", "--new-session"]
    if version >= (0, 8):
        args.append("--disable-userns")
    args += _system_mounts() + list(_python_mounts())
    args += ["--proc", "/proc", "--dev", "/dev", *tmpfs("/dev/shm", 1 << 20), *tmpfs(SANDBOX_DIR, WORKDIR_BYTES),
             "--remount-ro", "/", "--chdir", SANDBOX_DIR, "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--hostname", "sandbox"]
    return args + [interpreter(), "-I", "-B", "-"]


# ---- the program around the code ----------------------------------------------------------------

def _prelude(timeout_s: float, memory_bytes: int) -> str:
    # Set inside the sandbox, after its user namespace exists: RLIMIT_NPROC then counts the
    # sandbox's processes only, not every process of the calling user.
    cpu = int(timeout_s) + 1
    limits = (("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", memory_bytes, memory_bytes),
              ("RLIMIT_FSIZE", FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES), ("RLIMIT_CORE", 0, 0),
              ("RLIMIT_NPROC", MAX_PROCESSES, MAX_PROCESSES))
    sets = "; ".join(f"_deceval_r.setrlimit(_deceval_r.{n}, ({s}, {h}))" for n, s, h in limits)
    return f"import resource as _deceval_r; {sets}; del _deceval_r\n"


def _epilogue(token: str) -> str:
    # Runs only when everything before it returned. Flush first so that no buffered output
    # of the program lands after the token.
    return ("\nimport os as _deceval_os, sys as _deceval_sys\n"
            "try:\n    _deceval_sys.stdout.flush()\nexcept BaseException:\n    pass\n"
            f"_deceval_os.write(1, b'\\n{token}\\n')\n")


class _Tail:
    """The last ``cap`` bytes written to a stream, and how many there were in all."""

    def __init__(self, cap: int) -> None:
        self.cap = cap  # bytes kept
        self.buf = bytearray()  # the kept bytes, the latest last
        self.total = 0  # bytes seen

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > self.cap:
            del self.buf[: len(self.buf) - self.cap]


@dataclass
class _Ran:
    returncode: int | None  # None: still running at the deadline (killed)
    stdout: bytes
    stderr: bytes
    output_bytes: int


def _kill_tree(proc: subprocess.Popen) -> None:
    # SIGKILL to the process group of bwrap (or of the fallback's python). Under bwrap its
    # init then dies with its parent, and the kernel kills the rest of the PID namespace.
    # A group id is not reused while any member lives, so this cannot hit another group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(proc: subprocess.Popen, program: bytes, deadline: float, out: _Tail, err: _Tail) -> None:
    """Feed ``program`` to stdin and read stdout/stderr into their tails, until both close,
    the deadline passes, or DRAIN_GRACE_S after the process ended (a child it left may hold
    the pipes open for ever)."""
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        pending = memoryview(program)
        stop_at = deadline
        while sel.get_map():
            now = time.monotonic()
            if now >= stop_at:
                return
            if proc.poll() is not None:
                stop_at = min(stop_at, now + DRAIN_GRACE_S)
            for key, _ in sel.select(timeout=min(stop_at - now, 0.2)):
                if key.fileobj is not proc.stdin:
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        key.data.add(chunk)
                    else:
                        sel.unregister(key.fileobj)
                    continue
                try:
                    pending = pending[os.write(key.fd, pending[: 1 << 16]):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # it stopped reading (it ended): the rest is moot
                    pending = pending[:0]
                if not pending:
                    sel.unregister(proc.stdin)
                    proc.stdin.close()


def _spawn(argv: list[str], program: bytes, timeout_s: float, cwd: str, env: dict[str, str]) -> _Ran:
    """Run ``argv`` with ``program`` on its stdin, outputs capped; the process tree is killed
    on the way out, however the call ends."""
    deadline = time.monotonic() + timeout_s
    out, err = _Tail(OUTPUT_CAP_BYTES), _Tail(OUTPUT_CAP_BYTES)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd, env=env, start_new_session=True, close_fds=True)
    returncode: int | None = None
    try:
        _pump(proc, program, deadline, out, err)
        returncode = proc.poll()
        if returncode is None and deadline > time.monotonic():  # its pipes closed: it is ending
            try:
                returncode = proc.wait(timeout=deadline - time.monotonic())
            except subprocess.TimeoutExpired:
                pass
    finally:
        _kill_tree(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # SIGKILL was sent above; should not happen
            log.warning("sandbox process %d did not end after SIGKILL", proc.pid)
    return _Ran(returncode, bytes(out.buf), bytes(err.buf), out.total + err.total)


# ---- is the sandbox there? ----------------------------------------------------------------------

@lru_cache(maxsize=8)
def _probe(bwrap: str) -> str | None:
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        return f"bwrap was not found at {bwrap}"
    token = secrets.token_hex(8)
    try:
        ran = _spawn(bwrap_argv(bwrap), f"print({token!r})\n".encode(), 20.0, "/", {"PATH": SANDBOX_PATH})
    except OSError as exc:
        return f"{bwrap} could not be started ({exc})"
    if ran.returncode == 0 and ran.stdout.decode(errors="replace").strip() == token:
        return None
    why = (ran.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {ran.returncode}"])[-1]
    return f"{bwrap} cannot run a sandboxed program here ({why[:300]})"


def sandbox_problem() -> str | None:
    """Why the bwrap sandbox cannot run here, or None when it runs (checked once per binary
    with a tiny program)."""
    return _probe(BWRAP)


def execution_mode() -> str:
    """How code runs here: "bwrap"; "unsandboxed" when bwrap cannot run and the user allowed
    the fallback (:data:`ALLOW_UNSANDBOXED_ENV`); else it raises SandboxUnavailable."""
    problem = sandbox_problem()
    if problem is None:
        return "bwrap"
    if os.environ.get(ALLOW_UNSANDBOXED_ENV) == "1":
        _warn_unsandboxed(problem)
        return "unsandboxed"
    raise SandboxUnavailable(f"generated code runs only in the bubblewrap sandbox, and {problem}; {INSTALL_HINT}")


@lru_cache(maxsize=1)
def _warn_unsandboxed(problem: str) -> None:
    log.warning("generated code runs WITHOUT the sandbox (%s=1): %s", ALLOW_UNSANDBOXED_ENV, problem)


# ---- running programs ---------------------------------------------------------------------------

def run_program(source: str, timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = MEMORY_LIMIT_BYTES, *,
                mode: str | None = None) -> ExecResult:
    """Run ``source`` as a Python program in the sandbox; passed = it ran to its end (the
    pass token printed after it, as the last line of stdout) and exited with status 0.
    ``mode``: "bwrap" or "unsandboxed"; None asks :func:`execution_mode`."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    mode = mode or execution_mode()
    token = secrets.token_hex(16)
    program = (_prelude(timeout_s, memory_bytes) + source + "\n" + _epilogue(token)).encode()
    if mode == "bwrap":
        ran = _spawn(bwrap_argv(BWRAP), program, timeout_s, "/", {"PATH": SANDBOX_PATH})
    else:
        with tempfile.TemporaryDirectory(prefix="deceval-code-") as tmp:
            ran = _spawn([interpreter(), "-I", "-B", "-"], program, timeout_s, tmp, {"PATH": SANDBOX_PATH, "HOME": tmp})
    return _verdict(ran, token, timeout_s, sandboxed=(mode == "bwrap"))


def _verdict(ran: _Ran, token: str, timeout_s: float, sandboxed: bool) -> ExecResult:
    mark = f"\n{token}\n".encode()
    reached_end = ran.stdout.endswith(mark)
    stdout = (ran.stdout[: -len(mark)] if reached_end else ran.stdout).decode("utf-8", "replace")
    stderr = ran.stderr.decode("utf-8", "replace")
    common = {"stdout": stdout, "stderr": stderr, "output_bytes": ran.output_bytes, "sandboxed": sandboxed}
    if ran.returncode is None:
        return ExecResult(False, "timeout", f"no result within {timeout_s} s", **common)
    if reached_end and ran.returncode == 0:
        return ExecResult(True, "passed", **common)
    last = stderr.strip().splitlines()[-1:]
    if last:
        detail = last[0][:300]
    elif ran.returncode == 0:
        detail = "exit status 0 before the end of the program (an early exit: not a pass)"
    else:
        detail = f"exit status {ran.returncode}"
    return ExecResult(False, "failed", detail, **common)


def run_programs(sources: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, workers: int | None = None) -> list[ExecResult]:
    """Run several programs, each in its own sandbox, a few at a time."""
    if not sources:
        return []
    mode = execution_mode()
    workers = workers or max(1, min(4, len(sources), (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_program(s, timeout_s, mode=mode), sources))


# ---- HumanEval ----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _humaneval_hashes() -> dict[str, frozenset[str]]:
    return humaneval_prompt_hashes()


def truncate_completion(completion: str, stops: Sequence[str] = HUMANEVAL_STOPS) -> str:
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def humaneval_program(problem: dict[str, Any], completion: str) -> str:
    return (problem["prompt"] + truncate_completion(completion) + "\n\n" + problem["test"] + "\n\n"
            + f"check({problem['entry_point']})\n")


def humaneval_task(row: dict[str, Any]) -> dict[str, Any] | None:
    """The HumanEval problem a row answers, or None. Known by the prompt set's identity, not
    by an id that looks like one: the row's ``prompt_set`` is the built-in humaneval set and
    its ``prompt_hash`` is the hash the prompt loader gives that task's prompt."""
    if row.get("prompt_set") != HUMANEVAL_SET or not isinstance(row.get("completion"), str):
        return None
    pid = row.get("prompt_id")
    if row.get("prompt_hash") not in _humaneval_hashes().get(pid, ()):
        return None
    return humaneval_problems().get(pid)


def humaneval_passed(rows: Sequence[dict[str, Any]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bool | None]:
    """For each row: True/False when it answers a HumanEval task (:func:`humaneval_task`)
    and passed/failed its tests, None otherwise. Callers pass rows without errors
    (``score_rows`` does). Memoised per row in ``row['_humaneval']``, an ExecResult, which
    no report column can forge."""
    out: list[bool | None] = [None] * len(rows)
    todo: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        problem = humaneval_task(r)
        if problem is None:
            continue
        memo = r.get("_humaneval")
        if isinstance(memo, ExecResult):
            out[i] = memo.passed
            continue
        todo.append((i, humaneval_program(problem, r["completion"])))
    for (i, _), res in zip(todo, run_programs([s for _, s in todo], timeout_s)):
        out[i] = res.passed
        rows[i]["_humaneval"] = res
    return out
