"""CLI commands for clusters: submit a run as a Ray job."""

from __future__ import annotations

import argparse
import os

from harness.driver.submit import main_submit


def _cmd_submit(args: argparse.Namespace) -> int:
    return main_submit(args)


def add_cluster_commands(sub: "argparse._SubParsersAction") -> None:
    """Add the ``submit`` subparser."""
    s = sub.add_parser(
        "submit", help="send a run to a Ray cluster as a job (Ray Job Submission API)",
        description="Submit 'deceval run CONFIG' as a Ray job. The project folder travels as the job's working_dir "
                    "(without .venv, reports, .git, caches or secrets: .env*, .ray, ssh keys, *.pem, *.key, .aws, .netrc). The submission id comes from the config hash "
                    "(deceval-<run_name>-<hash>[-YYYYMMDD]), so the same run is never sent twice.")
    s.add_argument("config", help="YAML run config inside the project folder, e.g. configs/quickstart.yaml")
    s.add_argument("--address", default=os.environ.get("RAY_JOB_ADDRESS") or "http://127.0.0.1:8265",
                   help="the cluster's job server (dashboard) address, http://HOST:8265 (default: $RAY_JOB_ADDRESS "
                        "or %(default)s)")
    s.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its exit status")
    s.add_argument("--nightly", action="store_true", help="add today's date to the submission id (one run per day)")
    s.add_argument("--date", metavar="YYYY-MM-DD", help="like --nightly, for the given date")
    s.add_argument("--force-new", action="store_true",
                   help="send a new job even when this submission id was used (the run still skips done units)")
    s.add_argument("--output-dir", help="report root on the head node, or a URI every node writes to "
                                        "(s3://BUCKET/PREFIX; endpoint and region travel with the job, credentials "
                                        "never do) (default: the config's output.dir, made absolute for a local "
                                        "head; ~/deceval/reports for a remote one)")
    s.add_argument("--working-dir", help="folder shipped with the job (default: the project root)")
    s.add_argument("--python", default="python", help="the Python that runs the job on the head (default: "
                                                      "'python' on the head's PATH)")
    s.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment variable for the job")
    s.add_argument("--dry-run", action="store_true", help="print the job request and send nothing")
    s.add_argument("-v", "--verbose", action="store_true", help="engine and Ray logs in the job's output")
    s.set_defaults(func=_cmd_submit)
