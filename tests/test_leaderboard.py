"""Leaderboards: built on a real report (the session's small real run, or DECEVAL_TEST_REPORT),
ranked in each metric's direction; the HTML page checked in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.leaderboard import build_leaderboard, pareto_front, plots, to_html, to_markdown, write_leaderboard
from harness.metrics import METRICS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_regression import GOOD, make_report  # noqa: E402


@pytest.fixture(scope="session")
def real_report(request) -> Path:
    """A real report: DECEVAL_TEST_REPORT when set (reports/<run_id> of a quickstart or smoke
    run), else the session's small real run (conftest ``small_report``: six native strategy
    configs through Ray on the real engine)."""
    given = os.environ.get("DECEVAL_TEST_REPORT")
    if given:
        return Path(given)
    _cfg, outcome, _out = request.getfixturevalue("small_report")
    assert outcome.ok, outcome.units_failed
    return outcome.run_dir


@pytest.mark.engine
def test_leaderboard_on_real_report_ranks_in_each_direction(real_report):
    lb = build_leaderboard([real_report], n_boot=500)
    t = lb.table
    strategies = set(t["strategy"])
    assert len(strategies) >= 2
    for (model, metric), g in t.groupby(["model", "metric"]):
        hib = METRICS.get(metric).higher_is_better if metric in METRICS else None
        if hib is None:
            assert g["rank"].isna().all(), metric
            continue
        best = g.loc[g["rank"] == 1, "mean"]
        assert len(best) >= 1
        assert best.iloc[0] == (g["mean"].max() if hib else g["mean"].min()), metric
        assert ((g["ci_low"] <= g["mean"] + 1e-12) & (g["mean"] <= g["ci_high"] + 1e-12)).all(), metric
    for m in ("rep_2", "diversity", "eos_share", "gen_tokens_per_s", "contains_answer"):
        assert m in set(t["metric"]), m
    md = to_markdown(lb)
    for s in strategies:
        assert s in md
    assert "dependency length" in md and "| rep_2 |" in md.replace("| rep_2 | lower", "| rep_2 |")


@pytest.mark.engine
def test_leaderboard_cli_writes_files(real_report, tmp_path, capsys):
    assert main(["leaderboard", str(real_report), "--out", str(tmp_path / "lb"), "--n-boot", "200"]) == 0
    assert "# Decoding-strategy leaderboard" in capsys.readouterr().out
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        assert (tmp_path / "lb" / name).stat().st_size > 100
    assert main(["leaderboard", str(tmp_path / "nothing-here")]) == 2


def test_pareto_front():
    pts = [(0.1, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.1), (0.2, 0.2), (float("nan"), 1.0)]
    assert pareto_front(pts) == [0, 1, 3]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]


def test_possibilities_plot_only_when_the_column_exists(tmp_path):
    plain = build_leaderboard([make_report(tmp_path, "plain", GOOD)], n_boot=200)
    titles = [t for t, _ in plots(plain, "fake")]
    assert titles[0].startswith("Quality (numeric_match) against diversity") and "Cost per strategy" in titles
    assert "WSP possibilities consumed" not in titles
    wsp = build_leaderboard([make_report(tmp_path, "wsp", {**GOOD, "wsp": (0.8, 3, False)}, wsp="wsp")], n_boot=200)
    assert "WSP possibilities consumed" in [t for t, _ in plots(wsp, "fake")]
    assert "mean_log_possibilities" in set(wsp.table["metric"])


def test_several_runs_with_clashing_labels_are_told_apart(tmp_path):
    a = make_report(tmp_path, "a", GOOD)
    b = make_report(tmp_path / "other", "b", {"greedy": (0.5, 9, False)})
    # same label, same strategy id: pooled; now give b's greedy another id
    import pyarrow.parquet as pq
    f = next((b / "samples").rglob("*.parquet"))
    tbl = pq.read_table(f)
    ids = tbl.column("strategy_id").to_pylist()
    tbl = tbl.set_column(tbl.schema.get_field_index("strategy_id"), "strategy_id",
                         __import__("pyarrow").array(["other-id"] * len(ids)))
    pq.write_table(tbl, f)
    lb = build_leaderboard([a, b], n_boot=200)
    assert {"greedy [id-gre]", "greedy [other-]", "top_p-0.9"} == set(lb.table["strategy"])
    assert build_leaderboard([tmp_path], n_boot=200).runs[0]["run_id"] == "a"  # a folder of runs expands


# ---- the HTML page in headless Chromium -------------------------------------------------------

def _chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver; installed here when missing and we may (root + apt)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver) and os.geteuid() == 0 and shutil.which("apt-get") \
            and os.environ.get("DECEVAL_NO_APT") != "1":
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=False, env=env,
                       capture_output=True, timeout=900)
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium not available: apt-get install chromium chromium-driver")
    return browser, driver


@pytest.mark.engine
def test_html_loads_without_console_errors_and_shows_tables_and_images(real_report, tmp_path):
    pytest.importorskip("selenium")
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    lb = build_leaderboard([real_report], n_boot=200)
    page = write_leaderboard(lb, tmp_path / "lb")["html"]
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.get(page.resolve().as_uri())
        assert drv.title == "deceval leaderboard"
        errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        tables = drv.find_elements(By.TAG_NAME, "table")
        assert len(tables) >= 2 and all(t.is_displayed() for t in tables)
        assert len(tables[1].find_elements(By.TAG_NAME, "tr")) >= 3
        images = drv.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 2
        for img in images:
            assert drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 50
    finally:
        drv.quit()


def test_html_is_self_contained(tmp_path):
    lb = build_leaderboard([make_report(tmp_path, "r", GOOD)], n_boot=200)
    page = to_html(lb)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 2
