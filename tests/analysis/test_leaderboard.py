"""Leaderboards: built on a real report (the session's small real run, or DECEVAL_TEST_REPORT),
ranked in each metric's direction; the HTML page checked in headless Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.analysis.leaderboard import (
    build_leaderboard,
    pareto_front,
    plots,
    to_html,
    to_markdown,
    write_leaderboard,
)
from harness.cli import main
from harness.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
from tests.fakes.browser import chrome
from tests.fakes.reports import GOOD, make_report


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
    # tok/s: an interval over the report's two timing repeats, not over prompts
    rate = t[t["metric"] == "gen_tokens_per_s"]
    assert (rate["ci"] == "timing repeats (2)").all() and (rate["ci_high"] > rate["ci_low"]).all()
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
    assert not any(t.startswith("WSP possibilities consumed") for t in titles)
    wsp = build_leaderboard([make_report(tmp_path, "wsp", {**GOOD, "wsp": (0.8, 3, False)}, wsp="wsp")], n_boot=200)
    # titled by the column's own description (strategies/wsp.py declares it)
    assert "WSP possibilities consumed (mean log N of the chosen tokens)" in [t for t, _ in plots(wsp, "fake")]
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

@pytest.mark.engine
def test_html_loads_without_console_errors_and_shows_tables_and_images(real_report, tmp_path):
    lb = build_leaderboard([real_report], n_boot=200)
    page = write_leaderboard(lb, tmp_path / "lb")["html"]
    drv = chrome()
    from selenium.webdriver.common.by import By
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


# ---- labels are shown as typed, in every output -----------------------------------------------

#: Strategy labels come from user configs; each of these breaks a naive renderer somewhere.
FORMULA_LABEL = '=HYPERLINK("x") $\\frac{1}{0}$ <script>alert(1)</script> | `x` & y\nz'
BRIEF_LABEL = '$\\frac{1}{0}$ <script>alert(1)</script> | =HYPERLINK("x")'
BROKEN_MATH = "@cost $\\sqrt{$ <img src=x onerror=alert(2)>"  # unbalanced mathtext: a parse error if parsed
LABELS = {"a": FORMULA_LABEL, "b": BRIEF_LABEL, "c": BROKEN_MATH}
HOSTILE_MODEL = "m $x^$ <b>bold</b> | model"


@pytest.fixture()
def hostile(tmp_path):
    """A leaderboard whose strategy labels and model name are LABELS and HOSTILE_MODEL (the
    report written with plain labels, then its rows relabelled, as a config could name them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    run = make_report(tmp_path, "hostile", {"a": (0.9, 1, False), "b": (0.6, 2, False), "c": (0.4, 3, False)},
                      wsp="a")
    for f in (run / "samples").rglob("*.parquet"):
        tbl = pq.read_table(f)
        label = LABELS[tbl.column("strategy_label")[0].as_py()]
        tbl = tbl.set_column(tbl.schema.get_field_index("strategy_label"), "strategy_label",
                             pa.array([label] * tbl.num_rows))
        names = pa.array([HOSTILE_MODEL] * tbl.num_rows)
        i = tbl.schema.get_field_index("model_name")
        tbl = tbl.set_column(i, "model_name", names) if i >= 0 else tbl.append_column("model_name", names)
        pq.write_table(tbl, f)
    lb = build_leaderboard([run], n_boot=100)
    assert set(lb.table["strategy"]) == set(LABELS.values()) and lb.models() == [HOSTILE_MODEL]
    return lb


def test_plots_draw_any_label_as_plain_text(hostile):
    import base64

    import matplotlib
    # even with TeX switched on by the user (and no LaTeX here), labels are never TeX or mathtext
    with matplotlib.rc_context({"text.usetex": True}):
        out = plots(hostile, HOSTILE_MODEL)
    assert [t.split(" ")[0] for t, _ in out] == ["Quality", "Cost", "WSP"]
    for _title, b64 in out:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"


def _gfm_cells(line: str) -> int:
    """Cells in a GFM table row: pipes not escaped by a backslash, minus the outer two."""
    pipes, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        pipes += line[i] == "|"
        i += 1
    return pipes - 1


def test_markdown_escapes_labels_and_keeps_the_table_shape(hostile):
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    from harness.analysis.leaderboard import md_escape
    md = to_markdown(hostile)
    assert "<script" not in md and "<img" not in md and "<b>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\`x\\` &amp; y z" in md  # the label, escaped, on one line
    assert f"## {md_escape(HOSTILE_MODEL)}" in md
    for label in LABELS.values():
        assert md_escape(label) in md
    for table in [b for b in md.split("\n\n") if b.startswith("| ")]:
        rows = table.splitlines()
        assert len({_gfm_cells(r) for r in rows}) == 1, table  # every row as wide as the header

    class Cells(HTMLParser):  # the page a Markdown renderer (raw HTML allowed) makes of it
        def __init__(self):
            super().__init__()
            self.tags, self.first, self._col, self._text = set(), [], None, None

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            self._col = 0 if tag == "tr" else self._col + 1 if tag == "td" else self._col
            self._text = [] if tag == "td" and self._col == 1 else self._text

        def handle_endtag(self, tag):
            if tag == "td" and self._text is not None:
                self.first.append("".join(self._text))
                self._text = None

        def handle_data(self, data):
            if self._text is not None:
                self._text.append(data)

    page = Cells()
    page.feed(MarkdownIt("commonmark").enable("table").render(md))
    assert page.tags <= {"h1", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "em"}, page.tags
    typed = {label.replace("\n", " ") for label in LABELS.values()}
    assert typed <= set(page.first)  # each label comes out of the renderer exactly as typed


def test_md_escape_lets_no_markup_through_for_any_text():
    from hypothesis import example, given, settings
    from hypothesis import strategies as st
    from markdown_it import MarkdownIt

    from harness.analysis.leaderboard import md_escape
    render = MarkdownIt("commonmark").enable("table").render
    structure = {"table", "thead", "tbody", "tr", "th", "td", "em", "strong"}

    @settings(max_examples=300, deadline=None)
    @example("[click](http://example.com)")
    @example("![x](http://example.com/t.png)")
    @example("a\\|b | `c` <i>i</i> &amp;\r\n")
    @given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
           | st.text(alphabet="\\|`<>&\n\r\t*_[]()!#$=+-@ ab", max_size=40))
    def check(text):
        cell = md_escape(text)
        assert "\n" not in cell and "\r" not in cell and "<" not in cell and ">" not in cell
        out = render(f"| label | n |\n|---|---|\n| {cell} | 1 |\n")
        tags = set(re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", out))
        assert tags <= structure, (text, out)
        assert out.count("<td>") == 2, (text, out)  # the label stayed in its own cell

    check()


def test_csv_quotes_cells_that_start_like_a_formula(hostile, tmp_path):
    import csv
    hostile.table.loc[hostile.table.index[0], "mean"] = -0.5  # a negative number stays a number
    path = write_leaderboard(hostile, tmp_path / "lb", html_page=False)["csv"]
    rows = list(csv.DictReader(path.open(newline="")))
    strategies = {r["strategy"] for r in rows}
    assert strategies == {"'" + FORMULA_LABEL, "'" + BROKEN_MATH, BRIEF_LABEL}  # '$' starts no formula
    assert rows[0]["mean"] == "-0.5" and float(rows[0]["mean"]) == -0.5
    assert {r["model"] for r in rows} == {HOSTILE_MODEL}


def test_csv_safe_touches_only_string_cells():
    import pandas as pd

    from harness.analysis.leaderboard import csv_safe
    df = pd.DataFrame({"label": ["=1+1", "+x", "-1", "@SUM(A1)", "\tx", "\rx", "plain", None, "a=b"],
                       "mean": [-1.5, -2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                       "n": [-1, 2, 3, 4, 5, 6, 7, 8, 9]})
    out = csv_safe(df)
    labels = out["label"].tolist()
    assert labels[:7] + labels[8:] == ["'=1+1", "'+x", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "plain", "a=b"]
    assert out["label"].isna().iloc[7]  # a missing cell stays missing
    assert out["mean"].tolist() == df["mean"].tolist() and out["n"].tolist() == df["n"].tolist()
    assert df["label"].iloc[0] == "=1+1"  # the leaderboard's own table is not changed


def test_html_escapes_every_label(hostile):
    from html.parser import HTMLParser
    page = to_html(hostile)
    assert "<script" not in page and "<img src=x" not in page and "<b>bold" not in page

    class Text(HTMLParser):  # the text a browser shows in each cell and model heading
        def __init__(self):
            super().__init__()
            self.tags, self.cells, self.h2, self._in = [], [], [], None

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self._in = tag

        def handle_endtag(self, tag):
            self._in = None

        def handle_data(self, data):
            {"td": self.cells, "h2": self.h2}.get(self._in, []).append(data)

    text = Text()
    text.feed(page)
    assert set(text.tags) <= {"html", "head", "meta", "link", "title", "style", "body", "h1", "h2", "h3", "p",
                              "table", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption"}
    assert text.tags.count("img") == 3  # the three plots, and no image from a label
    assert set(LABELS.values()) <= set(text.cells) and text.h2 == [HOSTILE_MODEL]


def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    from harness.cli import main
    report = make_report(tmp_path, "r1", {"greedy": (0.5, 10, True), "top_p": (0.4, 10, True)})
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert main(["leaderboard", str(report), "--out", str(afile), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file" in err and "Traceback" not in err
    assert afile.read_text() == "keep me"
    assert main(["leaderboard", str(report), "--out", str(afile / "below"), "--no-html"]) == 2
    assert "cannot write the leaderboard" in capsys.readouterr().err
