"""Training images/s idle and beside one busy process, per CPU thread policy (issue 24, item 9).

Each (policy, condition) trains MoCo v2 in a fresh subprocess, so that the OpenMP wait policy is
in the environment before torch loads (libgomp reads it once, then). The workload is the demo's
MoCo v2 cell on CPU: ``resnet8`` with the small-image stem, 28x28 grayscale images (the
``synthetic`` dataset, the shape of Fashion-MNIST), ``moco_v2`` augmentation on the on-device data
path, batch 128, K 4096, dim 64, MLP head, shuffle-BN over 2 splits, through the real
:class:`balfeat.engine.trainer.Trainer`.

Conditions: ``idle``, and ``loaded``: one spinning Python process (``while True: pass``) started
before the run and stopped after it. Both the run and the spinner are pinned to the first
``--cores`` CPUs this process may use (default 2: the 2-core laptop the goal names; 0 = all).

Policies (``--policies``):

- ``old``: the thread policy before issue 24: every core's thread, OpenMP's default wait policy
  (idle threads spin a while before they sleep);
- ``passive``: every core's thread, ``OMP_WAIT_POLICY=PASSIVE`` (what the CLI now sets);
- ``one``: one thread, ``PASSIVE``;
- ``auto``: ``PASSIVE`` and ``configure_threads(0)`` (what ``balfeat demo`` / ``study`` run,
  chosen again before each cell): the cores other processes leave free, every core when they
  leave none;
- ``spin_auto``: OpenMP's default wait policy and ``configure_threads(0)`` (balfeat used as a
  library without setting the variable): the cores that other processes leave free.

Reported per policy and condition: the median images/s of the steps after ``--warmup`` (an image
counts once) and the thread count used; per policy ``ratio_loaded_over_idle``; per condition the
ratio of each policy over ``old``. The goal: ``auto`` keeps >= 0.6 of its idle images/s loaded.
On a machine that other work keeps busy, ``idle`` is not idle: compare within one run.

Run: ``python benchmarks/bench_under_load.py [--cores 2] [--steps 10] [--warmup 3]
[--policies old passive one auto spin_auto]``. Prints one JSON object (about 3-4 minutes
on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

#: policy -> (OMP_WAIT_POLICY or None for OpenMP's default, threads: -1 every core, 0 auto, N).
POLICIES: dict[str, tuple[str | None, int]] = {
    "old": (None, -1),
    "passive": ("PASSIVE", -1),
    "one": ("PASSIVE", 1),
    "auto": ("PASSIVE", 0),
    "spin_auto": (None, 0),
}

SPIN = "while True: pass"


def worker_overrides(steps: int, batch: int, output_dir: str) -> list[str]:
    """The demo's MoCo v2 cell on synthetic 28x28 grayscale images, ``steps`` steps."""
    return [
        "data.dataset=synthetic",
        "data.image_size=28",
        "data.channels=1",
        "data.num_classes=10",
        f"data.synthetic_size={batch * steps}",
        "data.num_workers=0",
        "data.augmentation=moco_v2",
        "model.backbone=resnet8",
        "model.small_images=true",
        "method.name=moco_v2",
        "method.K=4096",
        "method.m=0.99",
        "method.T=0.2",
        "method.mlp=true",
        "method.dim=64",
        "method.bn_splits=2",
        "optim.epochs=1",
        f"optim.batch_size={batch}",
        "optim.base_lr=0.2",
        f"run.output_dir={output_dir}",
        "run.device=cpu",
        f"run.max_steps={steps}",
        "run.log_every=1",
        "run.progress=false",
        "run.keep_last=1",
    ]


def worker(args: argparse.Namespace) -> None:
    """In the subprocess: set the threads, train, print ``{"images_per_s", "threads"}``."""
    import tempfile
    import warnings

    from balfeat.device import configure_threads
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer

    cores = len(os.sched_getaffinity(0))
    threads = configure_threads(cores if args.threads < 0 else args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(overrides=worker_overrides(args.warmup + args.steps, args.batch, tmp))
        trainer = Trainer(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit()
    rates = [float(r["images_per_s"]) for r in trainer.history[args.warmup :]]
    print(json.dumps({"images_per_s": statistics.median(rates), "threads": threads}))


def pinned(cpus: set[int]) -> Any:
    """A ``preexec_fn`` that pins the child to ``cpus``."""
    return lambda: os.sched_setaffinity(0, cpus)


def measure(policy: str, loaded: bool, cpus: set[int], args: argparse.Namespace) -> dict[str, Any]:
    """One training run of ``policy`` in a subprocess, beside a spinner when ``loaded``."""
    wait, threads = POLICIES[policy]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait is not None:
        env["OMP_WAIT_POLICY"] = wait
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    spinner = None
    if loaded:
        spinner = subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=pinned(cpus))
        time.sleep(0.5)  # running before the run measures what others use
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, preexec_fn=pinned(cpus), check=False
        )
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if done.returncode != 0:
        raise RuntimeError(f"{policy} ({'loaded' if loaded else 'idle'}) failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Measure every policy idle and loaded; print the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2, help="CPUs to pin to (default 2; 0 = all)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128, the demo's)")
    p.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    usable = sorted(os.sched_getaffinity(0))
    cpus = set(usable[: args.cores] if args.cores > 0 else usable)
    report: dict[str, Any] = {
        "workload": "MoCo v2, resnet8 small-image stem, 28x28x1 synthetic, moco_v2 augmentation "
        f"on the device path, batch {args.batch}, K 4096, CPU",
        "cores": len(cpus),
        "competitor": f"one `python -c '{SPIN}'` on the same cores",
        "steps": args.steps,
        "warmup": args.warmup,
        "policies": {},
    }
    start = time.perf_counter()
    for policy in args.policies:
        wait, threads = POLICIES[policy]
        idle = measure(policy, False, cpus, args)
        loaded = measure(policy, True, cpus, args)
        report["policies"][policy] = {
            "wait_policy": wait or "default",
            "threads": {-1: "every core", 0: "auto"}.get(threads, threads),
            "idle": idle,
            "loaded": loaded,
            "ratio_loaded_over_idle": round(loaded["images_per_s"] / idle["images_per_s"], 3),
        }
        print(f"{policy}: {report['policies'][policy]}", file=sys.stderr)
    runs = report["policies"]
    if "old" in runs:
        for cond in ("idle", "loaded"):
            base = runs["old"][cond]["images_per_s"]
            report[f"ratio_over_old_{cond}"] = {
                k: round(v[cond]["images_per_s"] / base, 3) for k, v in runs.items()
            }
    if "auto" in runs:
        report["goal_auto_loaded_over_idle_at_least_0.6"] = (
            runs["auto"]["ratio_loaded_over_idle"] >= 0.6
        )
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
