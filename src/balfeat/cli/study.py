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
from pathlib import Path
from typing import Any

from balfeat.cli.argtypes import int_in, path_of

#: A run estimated longer than this (hours) needs ``--yes``, or a "y" at an interactive prompt.
CONFIRM_HOURS = 1.0


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
    _count_option(
        p,
        "--plan-steps",
        3,
        "--plan: pre-training steps timed per method on synthetic images of the cell's shape "
        "(default: 3; 0 = commands only, no estimate)",
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


def _count_option(p: argparse.ArgumentParser, flag: str, default: int, text: str) -> None:
    """An option taking a whole number >= 0."""
    p.add_argument(flag, type=int_in(ge=0), default=default, metavar="N", help=text)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--threads``, ``--quiet``, ``--yes`` and ``--dpi`` of ``balfeat study`` and ``demo``."""
    _count_option(
        p,
        "--threads",
        0,
        "CPU threads of torch (default: 0 = auto, chosen again before every cell: the cores "
        "that other processes leave free, at least 1); N fixes N threads "
        "for every cell "
        "(results on CPU depend on the number); ignored on a GPU",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (default: off); use in batch jobs",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help=f"start even when the estimate printed first is over {CONFIRM_HOURS:g} h (default: "
        "off: an interactive terminal asks, a batch job or --quiet is refused with exit 2); "
        "use in batch jobs you have sized",
    )
    p.add_argument(
        "--dpi",
        type=int_in(ge=10, le=1200),
        default=None,
        metavar="N",
        help="resolution of the report's PNG figures (default: 150, for a screen; 300 for "
        "print); each figure is also written as PDF, which has no resolution",
    )


def confirm_estimate(
    spec: Any, out: str | Path, overrides: list[str], args: argparse.Namespace, gate: bool = True
) -> int:
    """Print the estimated pre-training time of the cells left to train, before any training
    (:func:`balfeat.study.plan.study_estimate`).

    Returns:
        0 to go on; else the exit code: a run estimated over :data:`CONFIRM_HOURS` starts with
        ``--yes`` or a "y" at the prompt of an interactive terminal, and is refused (2) without
        ``--yes`` when stdin is not a terminal or with ``--quiet``. ``gate=False`` only prints
        (the demo's own presets, sized for a laptop, never stop to ask).
    """
    from balfeat.study.plan import study_estimate

    estimate = study_estimate(spec, Path(out), overrides)
    if not estimate.cells:
        return 0
    print(estimate.line(), flush=True)
    if not gate or estimate.hours <= CONFIRM_HOURS or args.yes:
        return 0
    if args.quiet or not sys.stdin.isatty():
        print(
            f"not started: the estimate is over {CONFIRM_HOURS:g} h; add --yes to run it "
            "anyway, or reduce seeds/methods/epochs (--plan prints each cell's cost)",
            file=sys.stderr,
        )
        return 2
    answer = input(f"the estimate is over {CONFIRM_HOURS:g} h; start? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return 0
    print("not started", file=sys.stderr)
    return 1


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
    code = confirm_estimate(spec, args.out or spec.output_dir, cell_overrides, args)
    if code:
        return code
    rows, paths = run_study(
        spec,
        out_dir=args.out,
        overrides=cell_overrides,
        progress=not args.quiet,
        threads=args.threads,
        dpi=args.dpi,
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
    from balfeat.study.published import study_trains

    rows, missing = collect_study(spec, out, cell_overrides)
    if not rows:
        print(f"no finished cells under {out}", file=sys.stderr)
        return 1
    names, datasets = study_trains(spec, cell_overrides)
    paths = write_report(rows, out, title=spec.name, description=spec.description,
                         published=spec.published, method_names=names,
                         published_datasets=datasets, dpi=args.dpi)  # fmt: skip
    print(summary_text(rows))
    print(
        f"report: {paths['report']}"
        + (f" ({len(missing)} lines on missing cells above)" if missing else "")
    )
    return 0
