"""``deceval submit``: send a run to a Ray cluster through Ray's Job Submission API.

The job ships the project folder as a ``working_dir`` runtime env (without ``.venv``,
``reports``, ``.git``, caches, and secrets: ``.env*``, ``.ray``, ssh keys, ``*.pem``,
``*.key``, ``.aws``, ``.netrc``) and runs ``python -m harness.cli run CONFIG --address
auto`` on the head node, where ``ray.init`` joins the running cluster.

The submission id is deterministic: ``deceval-<run_name>-<config_hash[:12]>``, plus
``-YYYYMMDD`` for nightly runs. Ray refuses a used submission id, so a second submit of the
same config (or the same nightly twice on one day) does not start a second run: it
reports the first one's status instead (``--force-new`` starts a fresh job anyway; the run
itself still resumes, skipping the units already written).

``--dry-run`` prints the request with every environment value masked (``"KEY": "***"``).

Reports at a URI (``--output-dir s3://bucket/prefix``, or such an ``output.dir``): the job
writes there directly, so they outlive the cluster. The non-secret S3 settings of the
submitting shell (:data:`FORWARDED_STORAGE_ENV`: endpoint and region) travel with the job;
credentials never do. Ray writes a job's runtime_env, env vars included, into the cluster's
logs (``runtime_env_agent.log``), so ``--env`` refuses :data:`CREDENTIAL_ENV` and the
nodes hold their own credentials (``ray start``'s environment, ``~/.aws``, a role).

Import-light: Ray's job client is imported only when a job is really sent.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO
from urllib.parse import urlparse

from harness.config import RunConfig, load_config, slugify
from harness.errors import DecevalError
from harness.files import display_uri, is_uri, uri_problem, uri_scheme

#: Never shipped with the job: environments, reports, VCS data, caches, build outputs.
#: Ray reads these as .gitignore lines relative to the working_dir (its vendored pathspec,
#: "gitwildmatch"): a name without a slash matches at any depth, and a bare directory name
#: prunes the whole folder.
WORKING_DIR_EXCLUDES = [
    ".venv", "venv", "reports", ".git", "**/__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
    "build", "dist", ".mypy_cache", ".ruff_cache", "bench/results",
]
#: Secrets, never shipped either: the package is stored in the cluster's GCS and unpacked on
#: every node that runs the job. Kept apart so a test can name each one.
SECRET_EXCLUDES = [
    ".env*",           # .env, .env.local, .envrc
    ".ray",            # .ray/auth_token, the job server's token
    "id_*",            # ssh keys: id_rsa, id_ed25519(.pub); so no project file is named id_*
    ".ssh",
    "*.pem",
    "*.key",
    ".aws",
    ".netrc",
]
#: The job server's answer while a freshly started head's job agent is not up yet: retried
#: for up to AGENT_WAIT_S seconds.
NO_AGENT_YET = "No available agent to submit job"
AGENT_WAIT_S = 60.0
#: What a dry run prints in place of every environment value.
MASK = "***"
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Jobs that are over, and how they end.
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
#: Where reports go on the head node when the config's output dir is relative and the
#: cluster is not this machine (the working_dir copy is temporary and would lose them).
REMOTE_REPORT_DIR = "~/deceval/reports"
#: The S3 settings a job gets from the submitting shell when its reports go to s3://: where
#: the storage is, never who may use it.
FORWARDED_STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
#: Credentials: never sent with a job (Ray logs a job's runtime_env on the cluster).
CREDENTIAL_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})


class SubmitError(DecevalError):
    pass


@dataclass
class JobSpec:
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""

    def submit_kwargs(self) -> dict[str, Any]:
        return {"submission_id": self.submission_id, "entrypoint": self.entrypoint,
                "runtime_env": self.runtime_env, "metadata": self.metadata}

    def masked_kwargs(self) -> dict[str, Any]:
        """``submit_kwargs`` fit to print: every env value (``--env`` and the job's own) is
        ``***``; the key names stay."""
        kwargs = self.submit_kwargs()
        env_vars = kwargs["runtime_env"].get("env_vars") or {}
        kwargs["runtime_env"] = dict(kwargs["runtime_env"], env_vars={k: MASK for k in env_vars})
        return kwargs


def submission_id(cfg: RunConfig, nightly: _dt.date | None = None, suffix: str | None = None) -> str:
    """``deceval-<run_name>-<config_hash[:12]>[-YYYYMMDD][-suffix]``: the same config gives the
    same id, so Ray itself refuses a double submission."""
    parts = ["deceval", slugify(cfg.run_name).replace(".", "_"), cfg.config_hash[:12]]
    if nightly is not None:
        parts.append(nightly.strftime("%Y%m%d"))
    if suffix:
        parts.append(slugify(suffix))
    return "-".join(parts)


def is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in LOOPBACK


def build_job(config_path: str | Path, cfg: RunConfig, *, address: str, working_dir: str | Path | None = None,
              output_dir: str | None = None, nightly: _dt.date | None = None, suffix: str | None = None,
              env: dict[str, str] | None = None, verbose: bool = False, python: str = "python") -> JobSpec:
    """Everything Ray needs to run this config as a job; no network, no Ray import."""
    config_path = Path(config_path).resolve()
    root = Path(working_dir).resolve() if working_dir else _project_root(config_path)
    try:
        rel_config = config_path.relative_to(root)
    except ValueError:
        raise SubmitError(f"config {config_path} is outside the working dir {root}, so the job cannot see it; "
                          f"move it under {root} or pass --working-dir with a folder that holds both") from None
    if not (root / "harness").is_dir():
        raise SubmitError(f"working dir {root} holds no 'harness' package; run from the project root or pass "
                          f"--working-dir /path/to/deceval")
    if output_dir is None and is_uri(cfg.output_dir):
        output_dir = cfg.output_dir  # object storage: the same place from every node
    elif output_dir is None:
        if Path(cfg.output_dir).is_absolute():
            output_dir = cfg.output_dir
        elif is_loopback(address):
            output_dir = str((Path.cwd() / cfg.output_dir).resolve())  # the head is this machine
        else:
            output_dir = REMOTE_REPORT_DIR
    if is_uri(output_dir) and uri_problem(output_dir):
        raise SubmitError(f"--output-dir / output.dir {display_uri(output_dir)!r}: {uri_problem(output_dir)}")
    sid = submission_id(cfg, nightly, suffix)
    args = [python, "-m", "harness.cli", "run", rel_config.as_posix(), "--address", "auto", "--no-progress",
            "--output-dir"]
    # '~' must expand on the head, so it stays outside the quotes.
    out_arg = ("~/" + shlex.quote(output_dir[2:])) if output_dir.startswith("~/") else shlex.quote(output_dir)
    entrypoint = " ".join(shlex.quote(a) for a in args) + " " + out_arg + (" --verbose" if verbose else "")
    env_vars = {"PYTHONUNBUFFERED": "1"}
    if uri_scheme(output_dir) in ("s3", "s3a"):
        env_vars.update({k: os.environ[k] for k in FORWARDED_STORAGE_ENV if os.environ.get(k)})
    # ray.init inside the job adds VLLM_LOGGING_LEVEL and TOKENIZERS_PARALLELISM itself: a job
    # env var of the same name would conflict with it, so they are not set here.
    env_vars.update(env or {})
    runtime_env = {"working_dir": str(root), "excludes": WORKING_DIR_EXCLUDES + SECRET_EXCLUDES,
                   "env_vars": env_vars}
    metadata = {"deceval_run_name": cfg.run_name, "deceval_run_id": cfg.run_id,
                "deceval_config_hash": cfg.config_hash, "deceval_config": rel_config.as_posix(),
                "deceval_output_dir": output_dir}
    if nightly is not None:
        metadata["deceval_nightly"] = nightly.isoformat()
    return JobSpec(sid, entrypoint, runtime_env, metadata, output_dir)


def _project_root(config_path: Path) -> Path:
    """The folder that holds the ``harness`` package: the current directory when it does,
    else the nearest parent of the config that does."""
    cwd = Path.cwd().resolve()
    if (cwd / "harness").is_dir():
        return cwd
    for parent in config_path.parents:
        if (parent / "harness").is_dir():
            return parent
    return cwd


def ensure_auth_env() -> None:
    """Ray 2.60's job server wants a token when the head runs with RAY_AUTH_MODE=token. If the
    user has a token (RAY_AUTH_TOKEN or ~/.ray/auth_token) and chose no mode, use it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def job_info_or_none(client: Any, sid: str) -> Any | None:
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        text = str(exc)
        if "404" in text or "does not exist" in text or "not found" in text.lower():
            return None
        raise


def _status(info: Any) -> str:
    status = getattr(info, "status", info)
    return str(getattr(status, "value", status))


def submit(spec: JobSpec, client: Any, *, wait: bool = False, force_new: bool = False, out: TextIO = sys.stdout,
           poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> int:
    """Send the job (or find the one already sent under its id). Returns the exit status:
    without ``--wait`` 0 once the job is accepted; with ``--wait`` the job's own status
    (its driver's exit code when Ray knows it, else 0 for SUCCEEDED and 1 otherwise)."""
    sid = spec.submission_id
    if force_new:
        sid = spec.submission_id = f"{spec.submission_id}-{_dt.datetime.now().strftime('%H%M%S')}"
    existing = None if force_new else job_info_or_none(client, sid)
    if existing is None:
        deadline = clock() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(**spec.submit_kwargs())
            except RuntimeError as exc:
                existing = job_info_or_none(client, sid)  # someone sent the same id just now
                if existing is None and NO_AGENT_YET in str(exc) and clock() < deadline:
                    time.sleep(poll_s)  # a head that has just started: its job agent is not up yet
                    continue
                if existing is None:
                    raise SubmitError(f"the job server refused job {sid}: {exc}") from None
                break
            else:
                break
        if existing is None:
            print(f"submitted job {sid}", file=out)
            print(f"  entrypoint: {spec.entrypoint}", file=out)
            print(f"  report: {report_location(spec)}", file=out)
            print(f"  logs: ray job logs --follow {sid}    status: ray job status {sid}", file=out)
    if existing is not None:
        status = _status(existing)
        print(f"job {sid} was already submitted (status {status}); a submission id is used once: "
              f"this run is not sent twice", file=out)
        if status in TERMINAL and not wait:
            if status == "SUCCEEDED":
                print("  it succeeded: nothing to do", file=out)
                return 0
            print(f"  it ended {status}: resubmit with --force-new to run it again "
                  f"(units already written are skipped)", file=out)
            return 1
        if not wait:
            print(f"  it is still {status}; follow it with: ray job logs --follow {sid}  (or deceval submit ... --wait)",
                  file=out)
            return 0
    if not wait:
        return 0
    code = follow(client, sid, out=out, poll_s=poll_s)
    print(f"  report: {report_location(spec)}" + ("" if code == 0 else " (partial or absent: the job did not succeed)"),
          file=out)
    return code


def report_location(spec: JobSpec) -> str:
    """Where the job's report is: ``<output dir>/<run id>`` (a URI without its query)."""
    root = display_uri(spec.output_dir) if is_uri(spec.output_dir) else spec.output_dir
    return f"{root.rstrip('/')}/{spec.metadata.get('deceval_run_id', '')}"


def follow(client: Any, sid: str, *, out: TextIO = sys.stdout, poll_s: float = 2.0) -> int:
    """Stream the job's logs until it ends; return its exit status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(sid):
            out.write(lines)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as exc:  # noqa: BLE001 - fall back to polling when the log stream breaks
        print(f"(log stream ended: {type(exc).__name__}: {exc}; polling the status)", file=out)
    info = client.get_job_info(sid)
    while _status(info) not in TERMINAL:
        time.sleep(poll_s)
        info = client.get_job_info(sid)
    status = _status(info)
    code = getattr(info, "driver_exit_code", None)
    print(f"job {sid} {status}" + (f" (exit code {code})" if code is not None else "")
          + (f": {info.message}" if getattr(info, "message", None) and status != "SUCCEEDED" else ""), file=out)
    if code is not None and status != "STOPPED":
        return int(code)
    return 0 if status == "SUCCEEDED" else 1


def parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` arguments as a dict. An error names the argument by its position
    and never echoes it: a mistyped argument may be the secret itself."""
    env: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        if not sep:
            raise SubmitError(f"--env argument #{n} has no '=' (not shown, it may be a secret): expected KEY=VALUE")
        if not _ENV_KEY.fullmatch(key):
            raise SubmitError(f"--env argument #{n}: key {key!r} is not an environment variable name "
                              f"(letters, digits, '_', not starting with a digit): expected KEY=VALUE")
        if key in CREDENTIAL_ENV:
            raise SubmitError(f"--env {key}: credentials are not sent with a job, because Ray writes a job's env vars "
                              f"into the cluster's logs (runtime_env_agent.log); give the nodes their own "
                              f"credentials (the environment of 'ray start', ~/.aws/credentials or a role), see "
                              f"docs/object-storage.md")
        env[key] = value
    return env


def main_submit(args: Any) -> int:

    cfg = load_config(args.config)
    nightly = None
    if args.nightly or args.date:
        try:
            nightly = _dt.date.fromisoformat(args.date) if args.date else _dt.date.today()
        except ValueError as exc:
            raise SubmitError(f"--date {args.date!r}: expected YYYY-MM-DD ({exc})") from None
    env = parse_env(args.env or [])
    spec = build_job(args.config, cfg, address=args.address, working_dir=args.working_dir,
                     output_dir=args.output_dir, nightly=nightly, env=env, verbose=args.verbose,
                     python=args.python)
    if args.dry_run:
        print(json.dumps(spec.masked_kwargs(), indent=2))
        return 0
    ensure_auth_env()
    from ray.job_submission import JobSubmissionClient
    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # noqa: BLE001 - connection refused, auth, bad address
        raise SubmitError(f"cannot reach the Ray job server at {args.address}: {exc}. Is the head running "
                          f"(ray start --head --dashboard-host=...), and is RAY_AUTH_MODE=token set when it uses "
                          f"a token?") from None
    return submit(spec, client, wait=args.wait, force_new=args.force_new)
