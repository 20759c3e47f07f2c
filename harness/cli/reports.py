"""CLI commands over reports: leaderboard, compare, view (the sample explorer) and metrics."""

from __future__ import annotations

import argparse
import traceback
import sys
from pathlib import Path

from harness.analysis.leaderboard import (
    build_leaderboard,
    expand_reports,
    to_markdown,
    write_leaderboard,
)
from harness.analysis.explorer import default_out, view_command, write_explorer
from harness.analysis.regression import compare, format_comparison
from harness.config import load_gate_config
from harness.errors import DecevalError
from harness.files import is_uri
from harness.metrics import describe_metrics


def _metric_list(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    if args.out and not is_uri(args.out) and Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"error: --out {args.out} is a file; give a folder (it is created if missing)", file=sys.stderr)
        return 2
    try:
        reports = expand_reports(args.reports or ["reports"])
        lb = build_leaderboard(reports, _metric_list(args.metrics), n_boot=args.n_boot, confidence=args.confidence,
                               execute_code=args.execute_code)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or (reports[0] / "leaderboard")  # a folder or a URI, as the reports are
    try:
        paths = write_leaderboard(lb, out, html_page=not args.no_html)
    except OSError as exc:  # a read-only folder, a path through a file, a full disk
        print(f"error: cannot write the leaderboard to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(to_markdown(lb))
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0: the gate passed; 1: it failed; 2: bad input, or compare itself crashed (a
    crash must never read as a regression, nor as a pass)."""
    try:
        csv = Path(args.csv) if args.csv else None
        if csv is not None and csv.is_dir():
            raise ValueError(f"--csv {csv} is a folder; give a file path such as {csv / 'compare.csv'}")
        if csv is not None and not csv.parent.is_dir():
            raise ValueError(f"--csv {csv}: the folder {csv.parent} does not exist; create it or write elsewhere")
        gate = load_gate_config(args.gate) if args.gate else None  # None: the baseline's run.json section
        result = compare(args.baseline, args.candidate, gate, _metric_list(args.metrics),
                         execute_code=args.execute_code)
        text = format_comparison(result)
        if csv is not None:
            result.table.to_csv(csv, index=False)
    except (OSError, ValueError, ImportError, DecevalError) as exc:  # an extra or the sandbox a metric needs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug in compare: report it in one line, never as exit 1
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"error: compare failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]} at "
              f"{Path(where.filename).name}:{where.lineno}); please report this bug", file=sys.stderr)
        return 2
    print(text)
    _explorer_for_compare(args, result)
    return 0 if result.passed else 1


def _explorer_for_compare(args: argparse.Namespace, result) -> None:
    """The sample explorer of the two gated runs: written with ``--view FILE.html``, else the
    command that writes it; it opens on the first failing gated metric, regressed rows first."""
    failing = result.table[result.table["gated"] & (result.table["non_inferior"] == False)]  # noqa: E712
    metrics = list(dict.fromkeys(map(str, failing["metric"])))
    if not args.view:
        print("\nsamples side by side, regressed first: "
              + view_command([args.baseline, args.candidate], "compare.html", metrics[0] if metrics else None), file=sys.stderr)
        return
    try:
        path, _ = write_explorer([args.baseline, args.candidate], args.view, prefer=metrics)
    except (OSError, ValueError, DecevalError) as exc:  # the verdict stands; only the page is missing
        print(f"error: cannot write the explorer to {args.view}: {exc}", file=sys.stderr)
        return
    shown = path.resolve().as_uri() if isinstance(path, Path) else str(path)
    print(f"\nexplorer: {shown} (samples side by side, regressed first)", file=sys.stderr)


def _cmd_view(args: argparse.Namespace) -> int:
    try:
        out = args.out or default_out(args.reports)  # a file or a URI, as the reports are
        path, data = write_explorer(args.reports, out, baseline=args.baseline, metric=args.metric)
    except (FileNotFoundError, ValueError, DecevalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the explorer: {exc.strerror or exc}", file=sys.stderr)
        return 2
    size = f", {path.stat().st_size / 1e6:.1f} MB" if isinstance(path, Path) else ""
    print(f"{path} ({len(data['cells'])} samples, {len(data['rows'])} rows, {len(data['cols'])} columns{size}): "
          f"open it in a browser")
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    for m in describe_metrics():
        needs = f" needs {'+'.join(m['needs'])}" if m["needs"] else ""
        print(f"{m['name']}  [{m['direction']} is better, {m['aggregation']}{needs}"
              f"{'' if m['default'] else ', not default'}]  {m['description']}")
    return 0


def add_report_commands(sub: "argparse._SubParsersAction") -> None:
    """Add ``leaderboard``, ``compare``, ``view`` and ``metrics`` subparsers."""
    lb = sub.add_parser("leaderboard", help="rank strategies per model and metric over one or more reports; "
                                            "writes Markdown, CSV and an HTML page with plots")
    lb.add_argument("reports", nargs="*", metavar="REPORT",
                    help="report folders (reports/<run_id>) or folders of them, or URIs of either "
                         "(s3://BUCKET/PREFIX/<run_id>; default: reports)")
    lb.add_argument("--out", help="output folder or URI (default: <first report>/leaderboard)")
    lb.add_argument("--metrics", help="comma-separated metric names (default: the report's metrics)")
    lb.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    lb.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    lb.add_argument("--no-html", action="store_true", help="skip the HTML page (and matplotlib)")
    lb.add_argument("--execute-code", action="store_true",
                    help="compute a code metric (pass@k) a report lacks by running its HumanEval completions in "
                         "the sandbox (off: reading a report never runs code, and the metric stays absent)")
    lb.set_defaults(func=_cmd_leaderboard)

    c = sub.add_parser("compare", help="gate a candidate run against a baseline: per metric the paired difference, "
                                       "its CI and a non-inferiority test; exit 0 pass, 1 gate failed, 2 bad input")
    c.add_argument("baseline", metavar="BASELINE", help="baseline report folder (reports/<run_id>) or URI "
                                                         "(s3://BUCKET/PREFIX/<run_id>)")
    c.add_argument("candidate", metavar="CANDIDATE", help="candidate report folder or URI")
    c.add_argument("--gate", help="YAML file with a 'regression:' section (default: the BASELINE run.json's "
                                  "config.regression, never the candidate's; else exact_match/contains_answer/"
                                  "numeric_match/pass_at_1 with tolerance 0)")
    c.add_argument("--metrics", help="comma-separated metrics to compare besides the gated ones "
                                     "(default: all in both reports); gated metrics are always compared")
    c.add_argument("--execute-code", action="store_true",
                   help="compute a code metric (pass@k) a report lacks by running its generated code in the "
                        "sandbox (off: reading a report never runs code; a gated one then fails the gate)")
    c.add_argument("--csv", help="also write the comparison table to this CSV file (its folder must exist)")
    c.add_argument("--view", metavar="FILE.html",
                   help="also write the sample explorer of the two runs to this file (regressed prompts first, on "
                        "the first failing gated metric); without it, the deceval view command is printed")
    c.set_defaults(func=_cmd_compare)

    v = sub.add_parser("view", help="write one self-contained HTML file to read the samples: prompts as rows, "
                                    "strategies as columns, word diffs against a baseline, regressed prompts first")
    v.add_argument("reports", nargs="+", metavar="REPORT",
                   help="report folders (reports/<run_id>), folders of them, or report URIs; with two or more runs "
                        "and no --baseline, each strategy is diffed against the same label in the first run")
    v.add_argument("--baseline", metavar="LABEL", help="the strategy label every other strategy is diffed against")
    v.add_argument("--metric", help="the metric of the paired differences the page opens on (default: the first "
                                    "gated metric of the first run, else a quality metric)")
    v.add_argument("--out", metavar="FILE.html", help="output file or URI (default: <first report>/explorer.html)")
    v.set_defaults(func=_cmd_view)

    m = sub.add_parser("metrics", help="list metrics with direction, aggregation and needs")
    m.set_defaults(func=_cmd_metrics)
