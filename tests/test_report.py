"""Parquet report: schema round trip, atomic unit files, one dataset for pandas/pyarrow/DuckDB."""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from harness.plan import builtin_columns
from harness.report import read_samples, unit_done, write_unit
from harness.rows import sample_schema
from tests.fakes.rows import make_rows


def test_schema_round_trip(tmp_path):
    schema = sample_schema(["exact_match"], *builtin_columns())  # the trace holds every declared field
    rows = make_rows("u1", 3, "greedy")
    path = write_unit(tmp_path, "model=m/strategy=greedy/u1.parquet", rows, schema, {"unit_id": "u1", "rows": 3})
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == schema
    back = table.to_pylist()
    assert back[1]["completion"] == "out 1" and back[0]["reference"] is None and back[1]["exact_match"] == 1.0
    assert back[0]["steps"][0]["token_id"] == 1 and back[0]["steps"][0]["n_chosen"] is None
    assert not list(path.parent.glob(".*tmp*")), "temporary file left behind"


def test_unit_done_checks_id_and_row_count(tmp_path):
    schema = sample_schema([])
    rel = "model=m/strategy=greedy/u1.parquet"
    assert not unit_done(tmp_path, rel, "u1", 2)
    write_unit(tmp_path, rel, make_rows("u1", 2, "greedy"), schema, {"unit_id": "u1", "rows": 2})
    assert unit_done(tmp_path, rel, "u1", 2)
    assert not unit_done(tmp_path, rel, "u1", 3)
    # A truncated file (e.g. copied half-way) is not done.
    path = tmp_path / "samples" / rel
    path.write_bytes(path.read_bytes()[:50])
    assert not unit_done(tmp_path, rel, "u1", 2)


def test_dataset_reads_as_one_with_pandas_pyarrow_duckdb(tmp_path):
    schema = sample_schema(["exact_match"])
    write_unit(tmp_path, "model=m/strategy=greedy/u1.parquet", make_rows("u1", 3, "greedy"), schema, {"unit_id": "u1"})
    write_unit(tmp_path, "model=m/strategy=top_p_0.9/u2.parquet", make_rows("u2", 4, "top_p"), schema, {"unit_id": "u2"})
    df = read_samples(tmp_path)
    assert len(df) == 7 and set(df["strategy"]) == {"greedy", "top_p_0.9"} and set(df["model"]) == {"m"}
    import pandas as pd
    assert len(pd.read_parquet(tmp_path / "samples")) == 7
    assert ds.dataset(tmp_path / "samples", partitioning="hive").count_rows() == 7
    duckdb = pytest.importorskip("duckdb")
    n = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/samples/**/*.parquet', hive_partitioning=true) "
                   f"where strategy = 'greedy'").fetchall()[0][0]
    assert n == 3
