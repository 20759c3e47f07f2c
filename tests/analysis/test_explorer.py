"""The sample explorer (``deceval view``, and ``deceval compare --view``): the page built from
two simulated runs is loaded in headless Chromium: side-by-side columns, filters and sorts,
the regressed-first list against a paired difference computed here, escaping, the sample
panel with its step trace, and no network request."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.explorer import explorer_data, json_for_script
from harness.cli import main
from tests.fakes.browser import chrome
from tests.fakes.reports import unit_rows, write_report

HOSTILE = 'Answer <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> done'
LONG = "word " * 400  # 2,000 characters: folded on the page, never cut
TRACE = [{"token_id": 10 + i, "logprob": -0.1 * i, "rank": 1 + i % 2, "candidates": 3 + i % 4,
          "n_chosen": 40 - 3 * i, "n_min": 5, "n_max": 90, "score": -1.0 - i} for i in range(12)]


def _runs(root: Path) -> tuple[Path, Path]:
    """A baseline run and a candidate whose greedy got worse (and better on a few prompts);
    the candidate's greedy holds an injected script, a long completion, an error row and a
    WSP-like step trace."""
    base = {"greedy": unit_rows("greedy", 0.85, 1, "base"), "top_p-0.9": unit_rows("top_p-0.9", 0.6, 2, "base")}
    cand = {"greedy": unit_rows("greedy", 0.7, 7, "cand", errors=frozenset({5})),
            "top_p-0.9": unit_rows("top_p-0.9", 0.6, 2, "cand")}
    g = cand["greedy"]
    g[1]["completion"] = HOSTILE
    g[2]["completion"] = LONG
    g[3]["steps"] = TRACE
    return write_report(root, "base", base), write_report(root, "cand", cand)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(baseline, candidate, the explorer written by ``deceval compare --view``, a browser on it)."""
    root = tmp_path_factory.mktemp("explorer")
    base, cand = _runs(root)
    out = root / "compare.html"
    assert main(["compare", str(base), str(cand), "--view", str(out)]) == 1  # the gate fails on greedy
    drv = chrome()
    try:
        drv.get(out.resolve().as_uri())
        assert drv.execute_script("return document.body.dataset.ready") == "1"
        yield base, cand, out, drv
    finally:
        drv.quit()


def _js(drv, script, *args):
    return drv.execute_script(script, *args)


def _shown_keys(drv) -> list[str]:
    return _js(drv, "return [...document.querySelectorAll('#samples tbody tr')].map(t => t.dataset.key)")


def _set(drv, element_id: str, value, event: str = "change") -> None:
    _js(drv, f"const e = document.getElementById(arguments[0]);"
             f"if (e.type === 'checkbox') e.checked = arguments[1]; else e.value = arguments[1];"
             f"e.dispatchEvent(new Event('{event}'))", element_id, value)


def _reset(drv) -> None:
    for i, v in (("f-errors", False), ("f-changed", False), ("f-rmin", ""), ("f-rmax", ""), ("f-sort", "diff-asc"),
                 ("f-task", ""), ("f-model", "")):
        _set(drv, i, v)
    _search(drv, "")


def _search(drv, text: str) -> None:
    """Type into the search box and wait until the (debounced) search has been applied."""
    from selenium.webdriver.support.ui import WebDriverWait
    _set(drv, "q", text, "input")
    WebDriverWait(drv, 10).until(lambda d: d.execute_script("return document.body.dataset.q === arguments[0]", text))


def _paired(base: Path, cand: Path, metric: str) -> pd.DataFrame:
    """candidate - baseline per (strategy, prompt), error rows unpaired (as the gate pairs them)."""
    a, b = (pd.read_parquet(r / "samples") for r in (base, cand))
    key = ["strategy_label", "prompt_set", "prompt_id", "base_seed", "sample_index"]
    a, b = (d[d["error"].isna() & d[metric].notna()][key + [metric]] for d in (a, b))
    m = a.merge(b, on=key, suffixes=("_a", "_b"))
    m["diff"] = m[f"{metric}_b"] - m[f"{metric}_a"]
    return m


def test_columns_side_by_side_with_baseline_and_cost(page):
    base, cand, _out, drv = page
    heads = _js(drv, "return [...document.querySelectorAll('#samples thead th')].map(t => t.firstChild.textContent)")
    assert heads == ["prompt", "greedy @ base", "top_p-0.9 @ base", "greedy @ cand", "top_p-0.9 @ cand"]
    assert _js(drv, "return [...document.querySelectorAll('#samples thead th.base')].length") == 2
    a = pd.read_parquet(base / "samples")
    row = a[(a["strategy_label"] == "greedy") & (a["prompt_id"] == "maths-007")].iloc[0]
    _search(drv, "maths-007")
    cells = _js(drv, "return [...document.querySelectorAll('#samples tbody tr')].map(t => [...t.children].map(c => c.textContent))")
    assert len(cells) == 1 and len(cells[0]) == 5
    assert row["prompt"] in cells[0][0] and f"reference: {row['reference']}" in cells[0][0]
    assert row["completion"] in cells[0][1]
    assert f"latency_s {row['latency_s']:.4f}" in cells[0][1] and "computed_tokens" in cells[0][1]
    assert f"contains_answer {int(row['contains_answer'])}" in cells[0][1]
    _reset(drv)


def test_regressed_first_list_matches_the_paired_difference(page):
    base, cand, _out, drv = page
    _reset(drv)
    assert _js(drv, "return document.getElementById('f-pair').value") == "contains_answer"  # the failing gated metric
    m = _paired(base, cand, "contains_answer")
    worst = m.groupby("prompt_id")["diff"].min()
    best = m.groupby("prompt_id")["diff"].max()
    regressed = sorted(worst[worst < 0].index)
    improved = sorted(p for p in best[best > 0].index if p not in regressed)
    assert regressed and improved  # the fixture plants both
    listed = _js(drv, "return [...document.querySelectorAll('#regressed-list li')].map(l => l.textContent)")
    assert sorted(re.match(r"maths/(\S+)", t).group(1) for t in listed) == regressed
    assert int(_js(drv, "return document.getElementById('n-regressed').textContent")) == len(regressed)
    assert int(_js(drv, "return document.getElementById('n-improved').textContent")) == len(improved)
    # the table lists the regressed rows first, then the improved ones
    shown = [k.split("/")[1] for k in _shown_keys(drv)]
    n = len(regressed)
    assert sorted(shown[:n]) == regressed and sorted(shown[n:n + len(improved)]) == improved
    # the greedy candidate column counts its own pairs
    g = m[m["strategy_label"] == "greedy"]
    counts = _js(drv, "return document.querySelector('#samples thead th[data-col=\"2\"] .counts').textContent")
    assert f"{(g['diff'] < 0).sum()} regressed, {(g['diff'] > 0).sum()} improved of {len(g)}" in counts


def test_filters_and_sorts_change_what_is_shown(page):
    base, cand, _out, drv = page
    _reset(drv)
    default = _shown_keys(drv)
    _set(drv, "f-sort", "id")
    by_id = _shown_keys(drv)
    assert by_id != default and by_id[:3] == ["maths/maths-000", "maths/maths-001", "maths/maths-002"]
    # sort by a metric of one column: the candidate greedy's length, high to low
    _set(drv, "f-sortcol", "2")
    _set(drv, "f-sort", "m:length:desc")
    b = pd.read_parquet(cand / "samples")
    g = b[b["strategy_label"] == "greedy"].sort_values(["length", "prompt_id"], ascending=[False, True])
    top = _shown_keys(drv)[:5]
    assert [k.split("/")[1] for k in top] == g["prompt_id"].head(5).tolist()
    # error rows only: the one planted error
    _set(drv, "f-errors", True)
    assert _shown_keys(drv) == ["maths/maths-005"]
    _set(drv, "f-errors", False)
    # a metric range: only rows where a shown strategy has exact_match in [1, 1]
    _set(drv, "f-rmetric", "length")
    _set(drv, "f-rmin", "12")
    _set(drv, "f-rmax", "12")
    a = pd.concat([pd.read_parquet(r / "samples") for r in (base, cand)])
    want = sorted(set(a[a["length"] == 12]["prompt_id"]))
    _set(drv, "f-sort", "id")
    info = _js(drv, "return document.getElementById('pageinfo').textContent")
    assert info.startswith(f"rows 1-{len(want)} of {len(want)} ")
    assert [k.split("/")[1] for k in _shown_keys(drv)] == want
    # a strategy switched off leaves its column out
    _js(drv, "const b = document.querySelector('#cols input[data-col=\"3\"]'); b.checked = false;"
             "b.dispatchEvent(new Event('change'))")
    assert _js(drv, "return document.querySelectorAll('#samples thead th').length") == 4
    _js(drv, "const b = document.querySelector('#cols input[data-col=\"3\"]'); b.checked = true;"
             "b.dispatchEvent(new Event('change'))")
    _reset(drv)


def test_a_script_in_a_completion_shows_as_text_and_never_runs(page):
    _b, _c, out, drv = page
    _reset(drv)
    _set(drv, "f-diff", False)
    _search(drv, "__pwned")
    assert _js(drv, "return window.__pwned === undefined")
    texts = _js(drv, "return [...document.querySelectorAll('#samples tbody td')].map(c => c.textContent)")
    assert any(HOSTILE in t for t in texts)
    assert _js(drv, "return document.querySelectorAll('#samples img, #samples script').length") == 0
    assert "<script>window.__pwned" not in out.read_text(encoding="utf-8")  # escaped in the embedded JSON too
    _set(drv, "f-diff", True)
    _reset(drv)


def test_long_completion_is_folded_not_cut(page):
    _b, _c, _out, drv = page
    _reset(drv)
    _set(drv, "f-diff", False)
    _search(drv, "maths-002")
    cell = "document.querySelector('#samples tbody td[data-col=\"2\"]')"
    assert "more characters (unfold)" in _js(drv, f"return {cell}.textContent")
    assert len(_js(drv, f"return {cell}.querySelector('.text').textContent")) < len(LONG)
    _js(drv, f"{cell}.querySelector('button.fold').click()")
    assert _js(drv, f"return {cell}.querySelector('.text').textContent") == LONG
    _set(drv, "f-diff", True)
    _reset(drv)


def test_sample_panel_shows_the_trace(page):
    _b, cand, _out, drv = page
    _reset(drv)
    _search(drv, "maths-003")
    _js(drv, "document.querySelector('#samples tbody td[data-col=\"2\"] button.open').click()")
    assert _js(drv, "return document.getElementById('panel').hidden") is False
    facts = dict(_js(drv, "return [...document.querySelectorAll('#panel-facts tr')].map(r => [r.children[0].textContent, r.children[1].textContent])"))
    b = pd.read_parquet(cand / "samples")
    row = b[(b["strategy_label"] == "greedy") & (b["prompt_id"] == "maths-003")].iloc[0]
    assert facts["seed"] == str(row["seed"]) and facts["finish reason"] == row["finish_reason"]
    assert _js(drv, "return document.getElementById('panel-completion').textContent") == row["completion"]
    assert _js(drv, "return document.querySelectorAll('#panel-steps tr').length") == len(TRACE) + 1
    header = _js(drv, "return [...document.querySelectorAll('#panel-steps tr:first-child th')].map(t => t.textContent)")
    assert {"candidates", "n_chosen", "logprob"} <= set(header)
    assert _js(drv, "return document.querySelectorAll('#panel svg.plot polyline').length") >= 2
    n_chosen = _js(drv, "return [...document.querySelectorAll('#panel-steps tr')].slice(1).map(r => r.children[1 + arguments[0]].textContent)",
                   header.index("n_chosen") - 1)
    assert n_chosen == [str(s["n_chosen"]) for s in TRACE]
    _js(drv, "document.getElementById('panel-close').click()")
    _reset(drv)


def test_page_made_no_network_request_and_no_console_error(page):
    _b, _c, out, drv = page
    assert _js(drv, "return performance.getEntriesByType('resource').length") == 0
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert urls and all(u == out.resolve().as_uri() for u in urls), urls  # the page itself, nothing else
    errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []  # a CSP violation (a blocked script or style) would be logged here
    html_text = out.read_text(encoding="utf-8")
    assert "http://" not in html_text.replace("http://www.w3.org/2000/svg", "") and "https://" not in html_text
    assert "default-src 'none'" in html_text


# ---- without a browser ----------------------------------------------------------------------

def test_embedded_json_cannot_end_its_script_element():
    text = json_for_script({"a": "</script><b>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><b>&\u2028"}


def test_view_cli_writes_a_page_and_rejects_an_unknown_baseline(tmp_path, capsys):
    base, _cand = _runs(tmp_path)
    assert main(["view", str(base), "--baseline", "greedy", "--out", str(tmp_path / "v.html")]) == 0
    data = explorer_data([base], baseline="greedy")
    assert [c["base"] for c in data["cols"]] == [None, 0] and len(data["cells"]) == 120
    assert (tmp_path / "v.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["view", str(base), "--baseline", "gredy", "--out", str(tmp_path / "w.html")]) == 2
    err = capsys.readouterr().err
    assert "'gredy' is not a strategy label" in err and "greedy" in err and not (tmp_path / "w.html").exists()
    assert main(["view", str(tmp_path / "nothing")]) == 2


def test_compare_without_view_prints_the_command(tmp_path, capsys):
    base, cand = _runs(tmp_path)
    assert main(["compare", str(base), str(cand)]) == 1
    err = capsys.readouterr().err
    assert f"deceval view {base} {cand} --metric contains_answer --out compare.html" in err


def _page_data(text: str) -> dict:
    start = text.index('id="deceval-data">') + len('id="deceval-data">')
    return json.loads(text[start:text.index("</script>", start)])


def test_view_reads_and_writes_reports_at_s3(tmp_path, s3_bucket, s3_env, capsys):
    """Reports at an s3:// prefix (a real S3 server): found, read in place, and the page
    written beside the first run.json or wherever --out points, local or at the URI."""
    from harness.report import StorePath, locate
    base, cand = _runs(locate(f"{s3_bucket}/reports"))
    assert isinstance(base, StorePath)
    assert main(["view", f"{s3_bucket}/reports", "--out", str(tmp_path / "v.html")]) == 0  # a prefix of runs
    data = _page_data((tmp_path / "v.html").read_text(encoding="utf-8"))
    assert [r["source"] for r in data["runs"]] == [str(base), str(cand)] and len(data["cells"]) == 240
    assert [c["base"] for c in data["cols"]] == [None, None, 0, 1]
    assert main(["view", str(base), "--baseline", "greedy"]) == 0  # default: beside its run.json
    assert f"{base}/explorer.html" in capsys.readouterr().out
    page = (base / "explorer.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>window.__pwned" not in page
    assert main(["compare", str(base), str(cand), "--view", f"{s3_bucket}/reports/compare.html"]) == 1
    assert f"explorer: {s3_bucket}/reports/compare.html" in capsys.readouterr().err
    assert len(_page_data(locate(f"{s3_bucket}/reports/compare.html").read_text())["cells"]) == 240


def test_rows_pair_samples_by_task_prompt_and_sample_index(tmp_path):
    """Two tasks and two samples per prompt: one row per (task, prompt, sample), each cell in
    the row of its own sample, the baseline label's column the base of the others."""
    def rows(label, seed):
        out = []
        for task in ("maths", "facts"):
            for sample in (0, 1):
                for r in unit_rows(label, 0.5, seed + sample, "r", prompt_set=task):
                    r["sample_index"] = sample
                    r["completion"] = f"{label} {task} {r['prompt_id']} sample {sample}"
                    out.append(r)
        return out
    run = write_report(tmp_path, "r", {"greedy": rows("greedy", 1), "wsp": rows("wsp", 5)})
    data = explorer_data([run], baseline="wsp")
    assert len(data["rows"]) == 2 * 60 * 2 and len(data["cells"]) == 2 * len(data["rows"])
    assert [(c["strategy"], c["base"]) for c in data["cols"]] == [("greedy", 1), ("wsp", None)]
    for cell in data["cells"]:
        model, task, prompt_id, _seed, sample = data["rows"][cell[0]][:5]
        label = data["cols"][cell[1]]["strategy"]
        assert cell[2] == f"{label} {data['tasks'][task]} {prompt_id} sample {sample}"
    assert data["metric"] == "contains_answer"  # no gate in run.json: the first quality metric present
