"""Speed of a MoCo training step on CPU: eager float32 vs bf16 autocast vs ``torch.compile``.

Usage: ``.venv/bin/python benchmarks/bench_precision.py [--steps 5 --batch 64]``; prints JSON
with the median step time of each mode and the ratios to eager float32. Compilation time is
reported separately (the first compiled call). If ``torch.compile`` fails on the machine (no C++
compiler, unsupported platform) the JSON gives the reason instead of its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from typing import Any

import torch


def _setup(batch: int) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor]:
    from balfeat.methods.moco import MoCo
    from balfeat.models.backbones import build_backbone

    torch.manual_seed(0)
    model = MoCo(build_backbone("resnet8", small_images=True, in_channels=1), dim=128, K=4096,
                 m=0.99, T=0.2, mlp=True).train()  # fmt: skip
    views = [torch.randn(batch, 1, 28, 28) for _ in range(2)]
    return model, views, torch.arange(batch) % 10


def _time(step: Any, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base, views, labels = _setup(args.batch)
    res: dict[str, Any] = {"batch": args.batch, "threads": args.threads, "steps": args.steps}

    def make_step(model: torch.nn.Module, bf16: bool) -> Any:
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], 0.01)

        def step() -> None:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                loss = model(views, labels)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    modes = {"fp32": (copy.deepcopy(base), False), "bf16": (copy.deepcopy(base), True)}
    for name, (model, bf16) in modes.items():
        step = make_step(model, bf16)
        step()  # warm-up
        res[f"{name}_step_s"] = round(statistics.median(_time(step, args.steps)), 4)
    try:
        compiled = torch.compile(copy.deepcopy(base))
        step = make_step(compiled, False)
        t0 = time.perf_counter()
        step()
        res["compile_first_call_s"] = round(time.perf_counter() - t0, 1)
        res["compiled_step_s"] = round(statistics.median(_time(step, args.steps)), 4)
        res["compiled_over_fp32_speed"] = round(res["fp32_step_s"] / res["compiled_step_s"], 2)
    except Exception as err:  # report why instead of failing the whole run
        res["compile_error"] = f"{type(err).__name__}: {str(err)[:300]}"
    res["bf16_over_fp32_speed"] = round(res["fp32_step_s"] / res["bf16_step_s"], 2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
