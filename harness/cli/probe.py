"""``deceval probe dependency MODEL``: the empirical effective context length of a model."""

from __future__ import annotations

import argparse

from harness.cli.tune import local_only
from harness.probe import DEFAULT_KS, ProbeConfig, run_probe
from harness.probe.dependency import effective_line


def _ks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks takes comma-separated integers, e.g. 1,2,4,8; got {text!r}") from None


def _cmd_dependency(args: argparse.Namespace) -> int:
    cfg = ProbeConfig(args.model, texts=args.n_texts, context=args.context, positions=args.positions, ks=args.ks,
                      threshold=args.threshold, source=args.texts or "pydoc", n_boot=args.n_boot, seed=args.seed)
    cfg.validate()  # a bad option is one clear error before the model loads
    if args.output_dir:
        local_only("probe", args.output_dir, "--output-dir")
    res = run_probe(cfg, args.output_dir)
    print(f"probe: {res.out_dir}")
    for c in res.curve:
        print(f"  k={c['k']:>4}: mean KL {c['mean_kl']:.4f} nats [{c['ci_low']:.4f}, {c['ci_high']:.4f}]")
    print("  " + effective_line(res))
    print("  seed n*ln(m*h)/ln(V): " + ", ".join(f"{m} -> {v:.2f}" for m, v in res.seed_lengths.items()))
    return 0


def add_probe_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="probes of a model itself (dependency: how far back its context matters)")
    psub = p.add_subparsers(dest="probe", required=True, metavar="PROBE")
    d = psub.add_parser("dependency", help="mean KL(p(.|full context) || p(.|last k tokens)) per k over held-out texts, "
                                           "the effective length, and the seed paper's n*ln(m*h)/ln(V) beside it")
    d.add_argument("model", help="a built-in model (deceval models list)")
    d.add_argument("--texts", help="held-out texts: a .txt (blank-line separated) or .jsonl ({id, text}); default: "
                                   "the prose of Python's documentation topics")
    d.add_argument("--n-texts", type=int, default=24, help="texts to use (default 24)")
    d.add_argument("--context", type=int, default=192, help="tokens of each text: the full context (default 192)")
    d.add_argument("--positions", type=int, default=8, help="scored positions at the end of each text (default 8)")
    d.add_argument("--ks", type=_ks, default=DEFAULT_KS, help="truncated context lengths (default 1,2,4,...,128)")
    d.add_argument("--threshold", type=float, default=0.1, help="nats: the effective length is the first k with mean "
                                                                "KL below it (default 0.1)")
    d.add_argument("--n-boot", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--output-dir", default="reports", help="where probe-dependency-<model>-<hash>/ goes")
    d.set_defaults(func=_cmd_dependency)
