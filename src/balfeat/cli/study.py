"""``balfeat study FILE``: run a grid of (method x imbalance set x probe) cells and report it.

Examples::

    balfeat study configs/study_fmnist_demo.yaml
    balfeat study --out runs/my-study configs/study_fmnist_demo.yaml optim.epochs=5

Finished cells (all their ``results.json`` present) are skipped, so re-running after a crash or
after adding methods/sets only runs what is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``study`` subcommand."""
    p = subparsers.add_parser(
        "study",
        help="run a study (methods x imbalance sets x probes) from a YAML file and report it",
        description=(
            "Pre-train every method on every set of an imbalance family, probe each "
            "representation on a balanced training set, and write results.csv, results.md, "
            "figures/ and report.md/report.html into the study's output directory. Resumable: "
            "finished cells are skipped."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the study YAML (see balfeat.study.study)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default: the file's output_dir); change it to keep runs apart",
    )
    p.add_argument(
        "--probe-args",
        action="store_true",
        help="FILE is a probe recipe (configs/probe_*.yaml): print its `balfeat probe` "
        "arguments and exit (default: off), e.g. balfeat probe $(balfeat study --probe-args F)",
    )
    add_run_options(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="pretrain config overrides applied to every cell (default: none), e.g. "
        "optim.epochs=5 run.device=cpu; put the --options before FILE",
    )
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--quiet``, shared by ``balfeat study`` and ``balfeat demo``."""
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="CPU threads of torch (default: 0 = auto: all cores, or 1 when the machine is "
        "already busy, which is faster under contention); ignored on a GPU",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (default: off); use in batch jobs",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``balfeat study``; returns the exit code."""
    from balfeat.study.report import summary_text
    from balfeat.study.study import configure_threads, load_study, probe_recipe_args, run_study

    if args.probe_args:
        print(" ".join(probe_recipe_args(args.file)))
        return 0

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    configure_threads(args.threads)
    spec = load_study(args.file)
    rows, paths = run_study(
        spec, out_dir=args.out, overrides=list(args.overrides), progress=not args.quiet
    )
    print(summary_text(rows))
    print(f"report: {paths['report']}")
    print(f"html:   {paths['html']}")
    print(f"table:  {paths['csv']}")
    return 0
