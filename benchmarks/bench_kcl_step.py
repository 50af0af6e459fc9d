"""Cost of the KCL loss step against MoCo's and against the bare matrix products (the floor).

One training step of the head + loss: a linear encoder on tiny inputs (``Linear(32, dim)``,
L2-normalised), momentum keys without gradient, loss against a queue of ``K`` keys, backward and
an SGD step. The floor is ``q @ queue.T`` plus its gradient ``g @ queue`` (the two ``B x K x dim``
products any queue-based loss needs). Peak memory is measured with the torch profiler on CPU
(``profile_memory=True``): the highest running sum of each op's self allocations minus frees
during one step, i.e. the step's own tensor memory above what was live before it (queue
excluded; 64 MiB is one (256, 65536) float32 tensor).

Run: ``python benchmarks/bench_kcl_step.py [--repeats 5] [--steps 5] [--batches 32 256]``.
Prints one JSON object; ratios are medians measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from balfeat.losses.contrastive import kcl_loss, moco_loss, select_positives


def make_step(
    method: str, batch: int, K: int, dim: int, loss_type: str = "v1"
) -> Callable[[], None]:
    """A closure running one training step of ``method`` (``moco``/``kcl``/``floor``)."""
    gen = torch.Generator().manual_seed(0)
    enc = nn.Linear(32, dim)
    enc_k = nn.Linear(32, dim).requires_grad_(False)
    opt = torch.optim.SGD(enc.parameters(), lr=0.01)
    queue = F.normalize(torch.randn(K, dim, generator=gen), dim=1)
    # Long-tailed label queue over 100 classes (Zipf-like), as on ImageNet-LT.
    probs = 1.0 / torch.arange(1, 101, dtype=torch.float64)
    queue_labels = torch.multinomial(probs / probs.sum(), K, replacement=True, generator=gen)
    x = torch.randn(batch, 32, generator=gen)
    x_k = torch.randn(batch, 32, generator=gen)
    labels = torch.multinomial(probs / probs.sum(), batch, replacement=True, generator=gen)
    sel_gen = torch.Generator().manual_seed(1)
    if method == "floor":
        q0 = F.normalize(torch.randn(batch, dim, generator=gen), dim=1)
        g = torch.randn(batch, K, generator=gen)

        def floor_step() -> None:
            logits = q0 @ queue.t()  # (B, K)
            grad_q = g @ queue  # (B, dim)
            del logits, grad_q

        return floor_step

    def step() -> None:
        q = F.normalize(enc(x), dim=1)
        with torch.no_grad():
            k = F.normalize(enc_k(x_k), dim=1)
        if method == "moco":
            loss = moco_loss(q, k, queue, 0.07)
        else:
            loss = kcl_loss(
                q,
                k,
                queue,
                select_positives(labels, queue_labels, 6, "random", sel_gen),
                0.07,
                loss_type,  # type: ignore[arg-type]
            )
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def time_step(step: Callable[[], None], steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls after two warm-up calls."""
    step()
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def peak_memory_mb(step: Callable[[], None]) -> float:
    """Peak of the running sum of tensor allocations during one step (torch profiler, CPU)."""
    step()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Self (not inclusive) memory, so nested ops are not counted twice.
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2**20


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--K", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (medians)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = ["floor", "moco", "kcl_v1", "kcl_v2", "kcl_sum"]
    result: dict[str, object] = {
        "K": args.K,
        "dim": args.dim,
        "threads": torch.get_num_threads(),
        "memory": "torch.profiler profile_memory (CPU), peak running sum of allocations in a step",
        "timing": f"median and min over {args.repeats} interleaved repeats x {args.steps} steps",
    }
    for batch in args.batches:
        steps = {}
        for m in methods:
            name, _, lt = m.partition("_")
            steps[m] = make_step(name, batch, args.K, args.dim, lt or "v1")
        samples: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for m in methods:
                samples[m].extend(time_step(steps[m], args.steps))
        med = {m: statistics.median(v) for m, v in samples.items()}
        low = {m: min(v) for m, v in samples.items()}
        mem = {m: peak_memory_mb(steps[m]) for m in methods if m != "floor"}
        result[f"batch_{batch}"] = {
            "ms_median": {m: round(v * 1e3, 3) for m, v in med.items()},
            "ms_min": {m: round(v * 1e3, 3) for m, v in low.items()},
            "peak_mb": {m: round(v, 2) for m, v in mem.items()},
            "ratio_kcl_v1_over_moco": round(med["kcl_v1"] / med["moco"], 3),
            "ratio_kcl_v2_over_moco": round(med["kcl_v2"] / med["moco"], 3),
            "ratio_kcl_sum_over_moco": round(med["kcl_sum"] / med["moco"], 3),
            "ratio_moco_over_floor": round(med["moco"] / med["floor"], 3),
            "ratio_kcl_v1_over_floor": round(med["kcl_v1"] / med["floor"], 3),
            "ratio_of_minima_kcl_v1_over_moco": round(low["kcl_v1"] / low["moco"], 3),
            "ratio_of_minima_moco_over_floor": round(low["moco"] / low["floor"], 3),
            "ratio_of_minima_kcl_v1_over_floor": round(low["kcl_v1"] / low["floor"], 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
