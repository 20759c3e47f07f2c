"""Report I/O at a URI against a local folder: writing unit files, the check resume makes
before it skips a unit (each file read back whole), and reading the samples as one dataset.

The S3 side is moto's server on loopback (tests/fakes/s3_server.py, a child process), so
the figures show the cost of the object-storage code path (one upload per file, one
download per check), not of a real network. Needs the dev extra (moto[server]).

    python bench/object_storage.py                 # 50 units x 64 rows, 3 repetitions
    python bench/object_storage.py --units 200 --rows 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import report  # noqa: E402
from harness.hardware import cpu_info  # noqa: E402
from harness.rows import sample_schema  # noqa: E402
from tests.fakes.rows import make_rows  # noqa: E402
from tests.fakes.s3_server import start_s3_server, stop_s3_server  # noqa: E402


def measure(root: str, units: int, rows: int) -> dict[str, float]:
    schema = sample_schema(["exact_match"])
    data = {f"u{i}": make_rows(f"u{i}", rows, "greedy") for i in range(units)}
    run = report.run_folder(root, f"run-{time.time_ns()}")
    rel = "model=m/strategy=greedy/{}.parquet"
    t = time.perf_counter()
    for uid, rs in data.items():
        report.write_unit(run, rel.format(uid), rs, schema, {"unit_id": uid, "rows": rows})
    write = time.perf_counter() - t
    t = time.perf_counter()
    bad = [u for u in data if report.unit_problem(run, rel.format(u), u, rows, schema)]
    verify = time.perf_counter() - t
    assert not bad, bad
    t = time.perf_counter()
    n = len(report.read_samples(run))
    read = time.perf_counter() - t
    assert n == units * rows
    return {"write": write, "verify": verify, "read": read}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=50)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    server = start_s3_server()
    try:
        os.environ.update(server.env)
        bucket = server.create_bucket()
        print(f"{args.units} unit files x {args.rows} rows, median of {args.repeats}; "
              f"{cpu_info().describe()}")
        for name, root in (("local folder", tempfile.mkdtemp()), ("s3:// (moto, loopback)", f"{bucket}/bench")):
            runs = [measure(root, args.units, args.rows) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"  {name:24s} write {1000 * med['write'] / args.units:6.1f} ms/unit   "
                  f"resume check {1000 * med['verify'] / args.units:6.1f} ms/unit   "
                  f"read all {med['read']:.2f} s")
    finally:
        stop_s3_server(server)


if __name__ == "__main__":
    main()
