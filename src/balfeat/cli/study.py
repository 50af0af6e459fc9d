"""``balfeat study FILE``: run a grid of (method x imbalance set x probe) cells and report it.

Examples::

    balfeat study configs/study/fmnist_demo.yaml
    balfeat study --out runs/my-study configs/study/fmnist_demo.yaml seeds=5 optim.epochs=5

Finished (cell, seed)s (all their ``results.json`` present) are skipped, so re-running after a
crash or after adding methods, sets, probes or seeds only runs what is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from balfeat.cli.argtypes import int_in, path_of


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
    p.add_argument(
        "file",
        metavar="FILE",
        type=path_of("file"),
        help="the study YAML (see balfeat.study.spec; `defaults: [base.yaml]` layers files)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        type=path_of("out_dir"),
        help="output directory (default: the file's output_dir); change it to keep runs apart",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--plan",
        action="store_true",
        help="print every cell's commands and estimated pre-training cost, write the cells' "
        "config files, train nothing (default: off); use to submit cells as a SLURM array",
    )
    what.add_argument(
        "--collect",
        action="store_true",
        help="build the table, figures and report from the results the cells' folders hold, "
        "whoever ran them; name the missing cells; never trains (default: off)",
    )
    p.add_argument(
        "--plan-steps",
        type=int_in(ge=0),
        default=3,
        metavar="N",
        help="--plan: pre-training steps timed per method on synthetic images of the cell's "
        "shape (default: 3; 0 = commands only, no estimate)",
    )
    add_run_options(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides (default: none): study keys (seeds=5, family.total=2000) set the study; "
        "pre-training keys (optim.epochs=5, run.device=cpu) apply to every cell; run.seed and "
        "run.output_dir are refused (use seeds= and --out); put the --options before FILE",
    )
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--threads``, ``--quiet`` and ``--dpi``: shared by ``balfeat study`` and ``demo``."""
    p.add_argument(
        "--threads",
        type=int_in(ge=0),
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
    p.add_argument(
        "--dpi",
        type=int_in(ge=10, le=1200),
        default=None,
        metavar="N",
        help="resolution of the report's PNG figures (default: 150, for a screen; 300 for "
        "print); each figure is also written as PDF, which has no resolution",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``balfeat study``; returns the exit code."""
    from balfeat.device import configure_threads
    from balfeat.study.report import summary_text
    from balfeat.study.run import run_study
    from balfeat.study.spec import load_study
    from balfeat.typed_config import check_path, check_paths

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec, cell_overrides = load_study(args.file, list(args.overrides))
    check_paths(spec)
    if args.out:
        check_path("--out", args.out, "out_dir")
    configure_threads(args.threads)
    if args.plan or args.collect:
        return plan_or_collect(args, spec, cell_overrides)
    rows, paths = run_study(
        spec, out_dir=args.out, overrides=cell_overrides, progress=not args.quiet, dpi=args.dpi
    )
    print(summary_text(rows))
    print(f"report: {paths['report']}")
    print(f"html:   {paths['html']}")
    print(f"table:  {paths['csv']}")
    return 0


def plan_or_collect(args: argparse.Namespace, spec: Any, cell_overrides: list[str]) -> int:
    """``--plan`` (commands and costs) or ``--collect`` (report from existing results)."""
    from pathlib import Path

    from balfeat.errors import ConfigError
    from balfeat.study.report import summary_text, write_report

    out = Path(args.out or spec.output_dir)
    if args.plan:
        from balfeat.study.jobs import cell_jobs, write_job_files
        from balfeat.study.plan import plan_lines

        if not spec.is_job_study:
            raise ConfigError(
                f"--plan needs cells that `balfeat pretrain` can run (dataset image-folder, "
                f"cifar10-lt, cifar100-lt); {spec.dataset!r} sets are drawn in memory: run the "
                "study itself"
            )
        jobs = cell_jobs(spec, out, cell_overrides)
        for job in jobs:
            write_job_files(job)
        print("\n".join(plan_lines(spec, jobs, args.plan_steps)))
        return 0
    from balfeat.study.collect import collect_study

    rows, missing = collect_study(spec, out, cell_overrides)
    if not rows:
        print(f"no finished cells under {out}", file=sys.stderr)
        return 1
    paths = write_report(rows, out, title=spec.name, description=spec.description,
                         published=spec.published, dpi=args.dpi)  # fmt: skip
    print(summary_text(rows))
    print(
        f"report: {paths['report']}"
        + (f" ({len(missing)} lines on missing cells above)" if missing else "")
    )
    return 0
