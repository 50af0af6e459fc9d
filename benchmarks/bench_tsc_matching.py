"""Time of TSC's class -> target matching: the hand-written Hungarian solver against scipy's.

Random unit class centres and targets (``dim`` 128, seeded), the cost ``-cos``; both solvers get
the same matrix, built inside the timing as TSC builds it. ``old`` is
``balfeat.losses.matching.hungarian`` (numpy-vectorised Kuhn-Munkres, TSC's solver before),
``new`` is ``assign_targets`` as TSC calls it (``linear_sum_assignment`` plus the tie rule).
Sizes: 100 (CIFAR-100-LT), 1,000 (ImageNet-LT), 2,000 and 8,142 (iNaturalist 2018) classes.
``same`` says whether the two assignments are equal.

Run: ``python benchmarks/bench_tsc_matching.py [--sizes 100 1000 2000] [--repeats 1]``; the
default sizes take about 10 s, ``--sizes 8142`` about 2 minutes (the old solver most of it).
Prints one JSON object; the ratios are old / new medians measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from balfeat.losses.matching import assign_targets, hungarian


def _median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], torch.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(n: int, dim: int, repeats: int, seed: int = 0) -> dict[str, object]:
    """Old and new matching time of ``n`` classes."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)
    targets = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=1)

    def old_assign() -> torch.Tensor:  # assign_targets as it was: the same cost, old solver
        return hungarian(-(F.normalize(centres, dim=1) @ targets.t()))

    old_s, old = _median_seconds(old_assign, repeats)
    new_s, new = _median_seconds(lambda: assign_targets(centres, targets), repeats)
    return {
        "classes": n,
        "old_s": round(old_s, 4),
        "new_s": round(new_s, 4),
        "ratio_old_over_new": round(old_s / new_s, 1),
        "same": bool(torch.equal(old, new)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import scipy

    assign_targets(torch.eye(2), torch.eye(2))  # imports scipy's solver outside the timing
    rows = [measure(n, args.dim, args.repeats) for n in args.sizes]
    print(
        json.dumps(
            {
                "benchmark": "tsc_matching",
                "dim": args.dim,
                "repeats": args.repeats,
                "torch_threads": torch.get_num_threads(),
                "scipy": scipy.__version__,
                "cpu": platform.processor() or platform.machine(),
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
