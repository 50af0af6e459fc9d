"""``balfeat demo``: the paper's headline experiment on the embedded Fashion-MNIST data.

Builds a Fashion-MNIST imbalance family (balanced, long tails with ratios 10 and 100), learns SL,
MoCo v2 and KCL representations on each set, probes each on a balanced training set, and writes a
report with the results table and figures, 3 seeds per cell with 95% intervals. Within 10
minutes on 2 CPU cores; ``--full`` trains longer for better numbers. Re-running resumes (finished
cells are skipped).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from balfeat.cli.argtypes import path_of
from balfeat.cli.study import add_run_options, confirm_estimate


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="run the Fashion-MNIST demo (SL vs MoCo v2 vs KCL under imbalance) and report it",
        description=(
            "Learn SL, MoCo v2 and KCL representations on a balanced and two long-tailed "
            "Fashion-MNIST training sets, probe them on balanced data, and write report.md / "
            "report.html with figures into --out. Resumable: finished cells are skipped."
        ),
    )
    p.add_argument(
        "--out",
        default="balfeat-demo",
        metavar="DIR",
        type=path_of("out_dir"),
        help="output directory (default: balfeat-demo); a new one starts from scratch, the same "
        "one resumes",
    )
    size = p.add_mutually_exclusive_group()  # --tiny --full: one of the two would be ignored
    size.add_argument(
        "--full",
        action="store_true",
        help="train longer on more images for better numbers (default: off; 6000 images per set, "
        "5 epochs, the whole test set: measured 28 min on a shared 2-core CPU, about 6x the "
        "quick run). Use a different --out than the quick run",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="smoke-test setting: a few hundred images, one epoch (default: off); numbers are "
        "meaningless, use it to check an installation",
    )
    add_run_options(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides (default: none): study keys (seeds=5) or pre-training keys for every "
        "cell (run.device=cpu); run.seed and run.output_dir are refused (use seeds= and --out)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``balfeat demo``; returns the exit code."""
    from balfeat.device import configure_threads
    from balfeat.study.demo import demo_spec
    from balfeat.study.report import summary_text
    from balfeat.study.run import run_study
    from balfeat.study.spec import split_overrides, validate_study
    from balfeat.typed_config import apply_overrides

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = demo_spec(args.out, full=args.full, tiny=args.tiny)
    study_over, cell_over = split_overrides(list(args.overrides))
    apply_overrides(spec, study_over)
    validate_study(spec, cell_over)
    configure_threads(args.threads)  # for the estimate's measured steps; cells choose again
    # The presets (default, --full, --tiny) are sized for a laptop and only print the estimate
    # (a busy machine inflates it); a demo resized with KEY=VALUE asks as a study does.
    code = confirm_estimate(spec, spec.output_dir, cell_over, args, gate=bool(args.overrides))
    if code:
        return code
    start = time.perf_counter()
    rows, paths = run_study(
        spec,
        overrides=cell_over,
        progress=not (args.quiet or args.tiny),
        threads=args.threads,
        dpi=args.dpi,
    )
    print()
    print(summary_text(rows))
    used = f"{args.threads} torch thread(s)" if args.threads else "torch threads chosen per cell"
    print(f"\ndone in {time.perf_counter() - start:.0f} s ({used})")
    print(f"report: {paths['report']}")
    print(f"html:   {paths['html']}")
    print(f"table:  {paths['csv']}")
    return 0
