"""A real S3 server for tests: moto's server mode (``moto.server.ThreadedMotoServer``) on
loopback, in a child process of its own.

Why a child process: pyarrow's S3 client and the server then never share one interpreter,
so a client call that holds the GIL (an output stream closed from a destructor) cannot
stall the server, and Ray workers, job drivers and other processes of a test reach the same
server by its address.

Use it through the fixtures in ``tests/conftest.py``:

- ``s3_server`` (session): the running server, an :class:`S3Server`;
- ``s3_env`` (function): ``AWS_ENDPOINT_URL``, a fake key pair and the region exported for
  the test (and the processes it starts), so ``s3://`` URIs reach the server the way they
  reach real S3 (pyarrow reads the standard AWS variables);
- ``s3_bucket`` (function): a fresh, empty bucket, as ``s3://<name>``.

moto before 5.2.2 answers CompleteMultipartUpload in a form pyarrow rejects
(getmoto/moto#10055); the dev extra pins ``moto[server]>=5.2.2``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

#: What the child runs: the server on a free loopback port; prints the port; ends with stdin.
_SERVE = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class S3Server:
    """A running moto S3 server: its ``endpoint`` and the ``env`` a client needs. The secret
    key is random per session, so a test can search logs and files for it."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key: str = "deceval-test-key"
    secret_key: str = field(default_factory=lambda: "deceval-test-secret-" + secrets.token_hex(12))
    region: str = "us-east-1"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point pyarrow (and boto3) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region, "AWS_EC2_METADATA_DISABLED": "true"}

    def filesystem(self):
        """A pyarrow S3FileSystem on this server (credentials passed here, not read from the env)."""
        import pyarrow.fs as pafs
        host = self.endpoint.split("://", 1)[1]
        return pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key, region=self.region,
                                 endpoint_override=host, scheme="http", allow_bucket_creation=True)

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket; returns ``s3://<name>``."""
        name = name or f"deceval-{secrets.token_hex(4)}"
        self.filesystem().create_dir(name)
        return f"s3://{name}"


def start_s3_server() -> S3Server:
    """Start moto's S3 server in a child process; :func:`stop_s3_server` ends it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    line = proc.stdout.readline().strip()  # the port, once the server listens ('' if the child died)
    if not line.isdigit():
        proc.kill()
        raise RuntimeError(f"moto's S3 server did not start (got {line!r}); is moto[server] installed "
                           f"(pip install -e '.[dev]')?")
    return S3Server(endpoint=f"http://127.0.0.1:{line}", process=proc)


def stop_s3_server(server: S3Server) -> None:
    proc = server.process
    if proc is None:
        return
    try:
        proc.stdin.close()  # the child stops the server and exits
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)
