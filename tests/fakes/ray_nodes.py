"""Real Ray nodes for the job tests: ``ray start --block`` processes on loopback, each with
ports of its own, ended by pid (never ``ray stop``: other Rays share this machine).

The head gets a temp folder of its own. Ray's job supervisor tells a job's driver where the
cluster is by reading ``<temp dir>/ray_current_cluster``, the pointer the *latest* ``ray start``
on the machine wrote; in the shared ``/tmp/ray`` any other Ray started on this machine moves
that pointer, and the job's driver then joins the wrong cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import pytest

RAY_POINTER = Path("/tmp/ray/ray_current_cluster")  # `ray start`'s "latest cluster" in the shared temp folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_flags(*names: str) -> list[str]:
    return [f"--{n}={free_port()}" for n in names]


class BlockNodes:
    """A head (``head_flags``) and any workers, started in order; :meth:`stop` ends them all,
    workers first, and everything they started."""

    AGENT_PORTS = ("dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port",
                   "dashboard-agent-grpc-port")

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.ray = str(Path(sys.executable).parent / "ray")
        self.gcs, self.dashboard = free_port(), free_port()
        # short: Ray's unix sockets live below it (108 bytes at most)
        self.temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []  # each process's node name, as in its log file's name
        self.logs: list[IO[str]] = []

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def common(self) -> list[str]:
        return ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--min-worker-port=0",
                "--max-worker-port=0"]

    def head_flags(self, num_cpus: int) -> list[str]:
        return ["--head", "--dashboard-host=127.0.0.1", f"--port={self.gcs}", f"--dashboard-port={self.dashboard}",
                f"--num-cpus={num_cpus}", "--include-dashboard=true", f"--temp-dir={self.temp_dir}",
                *port_flags("ray-client-server-port", *self.AGENT_PORTS)]

    def worker_flags(self, num_cpus: int) -> list[str]:
        return [f"--address=127.0.0.1:{self.gcs}", f"--num-cpus={num_cpus}", *port_flags(*self.AGENT_PORTS)]

    def start(self, name: str, flags: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        self.logs.append(log)
        proc = subprocess.Popen([self.ray, "start", *self.common(), *flags], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.names.append(name)
        return proc

    def wait_for_job_server(self, head: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if head.poll() is not None:
                pytest.fail(f"ray start --head exited: {(self.log_dir / 'head.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except urllib.error.HTTPError:  # 401 without a token: the server is up
                return
            except Exception:  # noqa: BLE001
                time.sleep(1)
        pytest.fail(f"the job server did not come up in {timeout:.0f} s")

    def start_worker(self, name: str, num_cpus: int, tries: int = 2) -> None:
        """A worker node, up before the next one starts (several raylets registering at once on
        a loaded 2-core machine have timed out); one whose ``ray start`` gives up is tried again."""
        for attempt in range(tries):
            self.start(name, self.worker_flags(num_cpus))
            if self.wait_for_nodes([name], fail=attempt == tries - 1):
                return

    def wait_for_nodes(self, names: list[str], timeout: float = 120, fail: bool = True) -> bool:
        """Until each named node's ``ray start`` says its runtime is up (its raylet has joined):
        a job started earlier would see, and place its replicas on, fewer nodes."""
        deadline = time.time() + timeout
        waiting = list(names)
        while waiting and time.time() < deadline:
            latest = dict(zip(self.names, self.procs))  # a node started again: its newest process
            for name, proc in [(n, latest[n]) for n in list(waiting)]:
                log = (self.log_dir / f"{name}.log").read_text(errors="replace")
                if "Ray runtime started" in log:
                    waiting.remove(name)
                elif proc.poll() is not None:
                    if not fail:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)  # what it had started (its own session)
                        (self.log_dir / f"{name}.log").rename(self.log_dir / f"{name}.failed-{proc.pid}.log")
                        return False
                    pytest.fail(f"ray start ({name}) exited: {log[-3000:]}")
            time.sleep(0.5)
        if waiting:
            pytest.fail(f"{', '.join(waiting)} did not come up in {timeout:.0f} s")
        return True

    def stop(self) -> None:
        import psutil
        kids = []
        for p in self.procs:
            try:
                kids += psutil.Process(p.pid).children(recursive=True)
            except psutil.Error:
                pass
        for p in reversed(self.procs):  # workers first, then the head
            p.send_signal(signal.SIGTERM)  # --block: ray start ends what it started
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        _gone, alive = psutil.wait_procs(kids, timeout=30)
        for p in alive:
            p.kill()
        for log in self.logs:
            log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        # `ray stop` would clear this pointer (a worker's `ray start` writes it too); a --block node
        # ended by signal may leave it, and a stale one makes a later ray.init() join a cluster that is gone.
        if RAY_POINTER.exists() and RAY_POINTER.read_text().strip().endswith(f":{self.gcs}"):
            RAY_POINTER.unlink(missing_ok=True)


def first_unit_meta(run_dir: Path) -> dict | None:
    """The metadata of the first unit file the run has written, or None while there is none."""
    from harness.report import unit_meta
    files = list((run_dir / "samples").rglob("*.parquet")) if run_dir.exists() else []
    return unit_meta(files[0]) if files else None
