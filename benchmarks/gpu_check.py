"""The GPU check: every GPU path of balfeat in one call, as JSON (``bash benchmarks/gpu_check.sh``).

Parts (each records ``status`` ok / error / skipped, its seconds and, on error, the error text):

- ``torchrun_nccl``: a one-rank ``torchrun`` launch (run by ``gpu_check.sh``, see
  :func:`torchrun_part`): an NCCL process group, its collectives, a DDP-wrapped balfeat step
  and the Trainer inside the launch;
- ``autocast_bf16``, ``autocast_fp16``, ``channels_last``, ``compile``: a few Trainer steps with
  ``run.precision``, ``run.channels_last``, ``run.compile``;
- ``decode_gpu``: ``data.decode=gpu`` (nvJPEG decode + on-device augmentation) on a JPEG folder;
- ``device_loader``: ``data.loader=device`` (arrays resident on the device);
- ``exact_resume``: a run stopped mid-epoch and resumed ends bit-identical to the uninterrupted
  run (deterministic kernels on);
- ``throughput_sl``, ``throughput_moco_v2``, ``throughput_kcl``: ResNet-50 at batch 256 on
  ImageNet-sized synthetic JPEGs (bf16, channels_last, data.decode=gpu), median images/s of the
  Trainer's own per-step figures, and the ratio to NVIDIA's published ResNet-50 rate (below);
- ``reference_kcl_step``: the reference BalFeat KCL step (``moco/kcl_builder.py`` of a clone
  named by ``BALFEAT_REFERENCE``; never downloaded) beside balfeat's, same GPU, same batch.

Without CUDA it runs the same driver code with tiny sizes (``"device": "cpu"`` in the JSON), so
its logic is tested in the suite. Exit status 1 when any part errors (printed loudly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

#: NVIDIA's published single-GPU ResNet-50 v1.5 training rate (PyTorch, mixed precision, batch
#: 256, pytorch-21.03 NGC container, one A100 80GB of a DGX A100). No H100 figure is published
#: there; the ratio therefore compares this GPU against an A100 and says so.
PUBLISHED_RATE = 2470
PUBLISHED = {
    "images_per_s": PUBLISHED_RATE,
    "what": "ResNet-50 v1.5 training, PyTorch, mixed precision, batch 256, 1 GPU",
    "gpu": "A100 80GB (DGX A100), NGC pytorch-21.03",
    "source": "https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/"
    "Classification/ConvNets/resnet50v1.5/README.md (Training performance: NVIDIA DGX A100)",
}
DEFAULT_OUT = "docs/results/gpu/gpu_check.json"
METHODS = ("sl", "moco_v2", "kcl")


class Skip(Exception):
    """A part that cannot run here (the reason is recorded)."""


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: ImageNet scale on a GPU, tiny on a CPU."""

    backbone: str  # the throughput runs' backbone
    image_size: int
    batch: int
    jpegs: int
    jpeg_side: int  # long side of the synthetic JPEGs
    steps: int  # timed steps of each throughput run
    warmup: int
    K: int  # the MoCo/KCL queue of the throughput runs
    small: str  # the backbone of the path checks

    @staticmethod
    def for_device(device: str) -> Sizes:
        if device == "cuda":
            return Sizes("resnet50", 224, 256, 1024, 500, 12, 4, 65536, "resnet18")
        return Sizes("resnet8", 32, 8, 16, 48, 2, 1, 64, "resnet8")


@dataclass
class Context:
    device: str
    sizes: Sizes
    tmp: Path
    jpegs: Path | None = None

    def jpeg_folder(self) -> Path:
        if self.jpegs is None:
            self.jpegs = write_jpegs(self.tmp / "jpegs", self.sizes.jpegs, self.sizes.jpeg_side)
        return self.jpegs


def write_jpegs(root: Path, n: int, side: int, classes: int = 4, seed: int = 0) -> Path:
    """``n`` textured JPEGs (quality 90) of about ``side`` x 3/4 ``side`` in ``classes`` folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = side, side * 3 // 4
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.01, 0.08, 3)
        img = np.stack([128 + 90 * np.sin(f[c] * (xx + c * yy)) for c in range(3)], axis=-1)
        img += rng.normal(0, 20, img.shape)
        sub = root / f"n{i % classes:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(sub / f"{i:05d}.jpg", quality=90)
    return root


def config(
    ctx: Context,
    out: Path,
    overrides: list[str],
    *,
    method: str = "kcl",
    queue: tuple[int, int, int] = (64, 16, 2),
    folder: bool = False,
) -> Any:
    """A pre-training config of the checks: synthetic arrays, or the JPEG folder.

    Args:
        queue: ``(K, dim, bn_splits)`` of the queue methods (``sl`` has none).
    """
    from balfeat.engine.config import load_config

    s = ctx.sizes
    data = (
        ["data.dataset=imagenet", f"data.root={ctx.jpeg_folder()}", "data.num_workers=0"]
        if folder
        else ["data.dataset=synthetic", "data.num_classes=4", f"data.synthetic_size={6 * s.batch}"]
    )
    k, dim, splits = queue
    keys = [f"method.K={k}", f"method.dim={dim}", f"method.bn_splits={splits}",
            "method.prefill=never"] if method != "sl" else []  # fmt: skip
    size = 64 if ctx.device == "cuda" else 16
    return load_config(
        None,
        [
            *data,
            f"data.image_size={size}", "data.channels=3", "data.augmentation=moco_v2",
            f"model.backbone={s.small}", "model.small_images=true", f"method.name={method}",
            *keys, f"optim.batch_size={min(s.batch, 32)}", "optim.epochs=1", "run.max_steps=3",
            f"run.device={ctx.device}", "run.progress=false", "run.log_every=1",
            f"run.output_dir={out}", *overrides,
        ],
    )  # fmt: skip


def train(cfg: Any, resume: bool = False) -> Any:
    """Fit a Trainer on ``cfg``; refuse a non-finite loss."""
    import math

    from balfeat.engine.trainer import Trainer

    trainer = Trainer(cfg, resume=resume)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit()
    losses = [float(r["loss"]) for r in trainer.history if "loss" in r]
    if not losses or not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite or no training loss: {losses}")
    return trainer


def part_autocast(precision: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        t = train(config(ctx, ctx.tmp / f"amp_{precision}", [f"run.precision={precision}"]))
        used = str(t.amp_dtype).removeprefix("torch.") if t.amp_dtype else "float32"
        if ctx.device == "cuda" and used == "float32":
            raise RuntimeError(f"run.precision={precision} trained in float32 on CUDA")
        return {"autocast_dtype": used, "grad_scaler": bool(t.scaler.is_enabled())}

    return run


def part_channels_last(ctx: Context) -> dict[str, Any]:
    t = train(config(ctx, ctx.tmp / "cl", ["run.channels_last=true"]))
    conv = next(p for p in t.method.parameters() if p.ndim == 4)
    if not conv.is_contiguous(memory_format=torch.channels_last):
        raise RuntimeError("run.channels_last=true left the conv weights in NCHW")
    return {"conv_weights_channels_last": True}


def part_compile(ctx: Context) -> dict[str, Any]:
    if ctx.device != "cuda":
        raise Skip("checked on CUDA only (inductor on CPU needs a C++ toolchain and minutes)")
    t = train(config(ctx, ctx.tmp / "compile", ["run.compile=true"]))
    return {"compiled": type(t.model).__name__}


def part_decode_gpu(ctx: Context) -> dict[str, Any]:
    from balfeat.engine import build

    cfg = config(ctx, ctx.tmp / "decode", ["data.decode=gpu"], method="moco_v2", folder=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CPU fallback's "no CUDA" warning
        used = build.resolve_decode(cfg)
    if ctx.device == "cuda" and used != "gpu":
        raise RuntimeError(f"data.decode=gpu resolved to {used!r} on a CUDA machine")
    t = train(cfg)
    return {"decode_used": used, "steps": t.step}


def part_device_loader(ctx: Context) -> dict[str, Any]:
    from balfeat.engine import build

    cfg = config(ctx, ctx.tmp / "devloader", ["data.loader=device"])
    t = train(cfg)
    if not build.uses_device_loader(cfg, t.dataset):
        raise RuntimeError("data.loader=device did not select the on-device loader")
    return {"steps": t.step}


def part_exact_resume(ctx: Context) -> dict[str, Any]:
    """Stop mid-epoch (step 3 of 8), resume, compare with the uninterrupted run bit for bit."""
    if ctx.device == "cuda":  # the same kernels every time (the env var is set before CUDA init)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        full = train(config(ctx, ctx.tmp / "full", ["run.max_steps=0"]))
        train(config(ctx, ctx.tmp / "cut", ["run.max_steps=3"]))
        resumed = train(config(ctx, ctx.tmp / "cut", ["run.max_steps=0"]), resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = full.method.state_dict(), resumed.method.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if full.step != resumed.step or differ:
        raise RuntimeError(
            f"resume is not exact: steps {full.step} vs {resumed.step}, {len(differ)} tensors "
            f"differ (first: {differ[:3]})"
        )
    return {"steps": full.step, "stopped_at": 3, "tensors_compared": len(a)}


def part_throughput(method: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        s = ctx.sizes
        cuda = ctx.device == "cuda"
        cfg = config(
            ctx,
            ctx.tmp / f"rate_{method}",
            [
                f"model.backbone={s.backbone}",
                f"model.small_images={str(not cuda).lower()}", f"data.image_size={s.image_size}",
                f"optim.batch_size={s.batch}", f"run.max_steps={s.warmup + s.steps}",
                f"optim.epochs={s.warmup + s.steps}", f"data.decode={'gpu' if cuda else 'cpu'}",
                f"data.augmentation={'supervised' if method == 'sl' else 'moco_v2'}",
                *(["run.precision=bf16", "run.channels_last=true"] if cuda else []),
                f"data.num_workers={min(8, os.cpu_count() or 1) if cuda else 0}",
            ],
            method=method,
            queue=(s.K, 128, 8 if ctx.device == "cuda" else 2),
            folder=True,
        )  # fmt: skip
        t = train(cfg)
        rates = [float(r["images_per_s"]) for r in t.history[s.warmup :]]
        median = statistics.median(rates)
        out: dict[str, Any] = {
            "backbone": s.backbone, "batch": s.batch, "image_size": s.image_size,
            "timed_steps": len(rates), "images_per_s": median,
            "precision": cfg.run.precision, "decode": cfg.data.decode,
        }  # fmt: skip
        if cuda:  # an image counts once however many views; MoCo/KCL also run the key encoder
            out["ratio_to_published"] = median / PUBLISHED_RATE
        return out

    return run


def part_reference_kcl(ctx: Context) -> dict[str, Any]:
    """Median ms of one training step of the reference KCL and of balfeat's, same inputs."""
    ref = os.environ.get("BALFEAT_REFERENCE", "")
    if not ref:
        raise Skip("set BALFEAT_REFERENCE=/path/to/BalFeat (a clone of bingykang/BalFeat)")
    if not (Path(ref) / "moco" / "kcl_builder.py").is_file():
        raise RuntimeError(f"BALFEAT_REFERENCE={ref!r} holds no moco/kcl_builder.py")
    if ctx.device != "cuda" and not os.environ.get("BALFEAT_REFERENCE_ON_CPU"):
        raise Skip("the reference calls .cuda(): it runs on CUDA only")
    import torch.distributed as dist

    made_group = not dist.is_initialized()
    if made_group:  # the reference gathers keys and broadcasts its shuffle even on one process
        backend = "nccl" if ctx.device == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{ctx.tmp / 'pg'}", rank=0,
                                world_size=1)  # fmt: skip
    try:
        return _time_reference_kcl(ctx, ref)
    finally:
        if made_group:
            dist.destroy_process_group()


def _time_reference_kcl(ctx: Context, ref: str) -> dict[str, Any]:
    import importlib

    import torchvision

    from balfeat.engine import build

    s = ctx.sizes
    sys.path.insert(0, ref)
    try:
        kcl_builder = importlib.import_module("moco.kcl_builder")
    finally:
        sys.path.remove(ref)
    dev = torch.device(ctx.device)
    arch = s.backbone if ctx.device == "cuda" else "resnet18"  # a torchvision ResNet on both sides
    cfg = config(ctx, ctx.tmp / "ref", [f"model.backbone={arch}", "model.small_images=false",
                                        f"data.image_size={s.image_size}"],
                 queue=(s.K, 128, 8 if ctx.device == "cuda" else 2))  # fmt: skip
    classes, bb = 1000, getattr(torchvision.models, arch)
    p = cfg.method
    reference = kcl_builder.KCL(bb, p.dim, p.K, p.m, p.T, p.mlp, p.posk, losstype=p.loss_type)
    ours = build.build_method(cfg, classes)
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(s.batch, 3, s.image_size, s.image_size, generator=gen).to(dev) for _ in "qk"]
    # 10 classes in the batch: same-class keys (positives) are in both queues from step 2 on
    y = torch.randint(0, 10, (s.batch,), generator=gen).to(dev)

    def ref_loss() -> torch.Tensor:
        logits, _, soft = reference(x[0], x[1], y)
        return -(soft * torch.log_softmax(logits, dim=1)).sum(1).mean()

    def our_loss() -> torch.Tensor:
        return ours(x, y)["loss"]

    times = {}
    for name, model, loss_of in (("reference", reference, ref_loss), ("balfeat", ours, our_loss)):
        model.to(dev).train()
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.01)
        times[name] = time_steps(loss_of, opt, model, s.warmup, s.steps, dev)
        model.to("cpu")  # one ResNet-50 pair on the GPU at a time
        del opt
    return {
        "backbone": arch, "batch": s.batch, "K": s.K, "precision": "fp32", "posk": p.posk,
        "balfeat_selection": p.selection,
        "reference_ms": times["reference"], "balfeat_ms": times["balfeat"],
        "ratio_balfeat_over_reference": times["balfeat"] / times["reference"],
    }  # fmt: skip


def time_steps(
    loss_of: Callable[[], torch.Tensor], opt: Any, model: Any, warmup: int, steps: int, dev: Any
) -> float:
    """Median ms of ``steps`` optimiser steps after ``warmup``."""
    ms = []
    for i in range(warmup + steps):
        sync(dev)
        t0 = time.perf_counter()
        loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(model, "after_step"):
            model.after_step()
        sync(dev)
        if i >= warmup:
            ms.append(1000 * (time.perf_counter() - t0))
    return statistics.median(ms)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def torchrun_part(out: Path) -> None:
    """What ``gpu_check.sh`` runs under ``torchrun --nproc_per_node 1``: NCCL (gloo on CPU)
    initialised from torchrun's env, collectives, a DDP-wrapped balfeat step, the Trainer."""
    import torch.distributed as dist

    from balfeat.engine import build

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)
    start = time.perf_counter()
    result: dict[str, Any]
    try:
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # balfeat's init_distributed leaves world size 1 without a group: make one here
        dist.init_process_group("nccl" if cuda else "gloo")
        dev = torch.device("cuda" if cuda else "cpu")
        t = torch.ones(4, device=dev)
        dist.all_reduce(t)
        gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, t)
        dist.broadcast(t, src=0)
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context("cuda" if cuda else "cpu", Sizes.for_device("cuda" if cuda else "cpu"),
                          Path(tmp))  # fmt: skip
            cfg = config(ctx, Path(tmp) / "run", [])
            method = build.build_method(cfg, 4).to(dev)
            ddp = torch.nn.parallel.DistributedDataParallel(
                method, device_ids=[dev.index or 0] if cuda else None, broadcast_buffers=False
            )
            side = cfg.data.image_size
            x = [torch.randn(8, 3, side, side, device=dev) for _ in "qk"]
            ddp(x, torch.arange(8, device=dev) % 4)["loss"].backward()
            backend, world = dist.get_backend(), dist.get_world_size()
            trainer = train(cfg)
        result = {
            "status": "ok", "backend": backend, "world_size": world, "trainer_steps": trainer.step,
            "note": "balfeat trains world size 1 as one process (no DDP wrap, no gathers); the "
            "multi-rank paths need NPROC=2 or more GPUs",
        }  # fmt: skip
    except Exception as err:  # recorded: the main driver fails loudly on it
        result = {"status": "error", "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - start, 2)
    if not dist.is_initialized() or dist.get_rank() == 0:
        out.write_text(json.dumps(result, indent=2) + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()


PARTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "autocast_bf16": part_autocast("bf16"),
    "autocast_fp16": part_autocast("fp16"),
    "channels_last": part_channels_last,
    "compile": part_compile,
    "decode_gpu": part_decode_gpu,
    "device_loader": part_device_loader,
    "exact_resume": part_exact_resume,
    **{f"throughput_{m}": part_throughput(m) for m in METHODS},
    "reference_kcl_step": part_reference_kcl,
}


def run_part(fn: Callable[[Context], dict[str, Any]], ctx: Context) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(ctx)}
    except Skip as why:
        result = {"status": "skipped", "reason": str(why)}
    except Exception as err:
        result = {"status": "error", "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def torchrun_result(path: str | None, rc: int | None) -> dict[str, Any]:
    """The ``torchrun_nccl`` part from the file the torchrun launch wrote."""
    if not path:
        return {"status": "skipped", "reason": "run through benchmarks/gpu_check.sh", "seconds": 0}
    p = Path(path)
    if not p.is_file():
        return {"status": "error", "seconds": 0,
                "error": f"torchrun exited with {rc} and wrote no result ({path})"}  # fmt: skip
    return dict(json.loads(p.read_text()))


def check(
    device: str, parts: list[str], torchrun_file: str | None = None, torchrun_rc: int | None = None
) -> dict[str, Any]:
    """Run ``parts`` on ``device`` and return the report (the JSON written by :func:`main`)."""
    sizes = Sizes.for_device(device)
    threads = torch.get_num_threads()
    if device == "cpu":  # many tiny ops: more threads only spin on a shared CPU
        torch.set_num_threads(1)
    try:
        return _check(device, sizes, parts, torchrun_result(torchrun_file, torchrun_rc))
    finally:
        torch.set_num_threads(threads)


def _check(device: str, sizes: Sizes, parts: list[str], torchrun: dict[str, Any]) -> dict[str, Any]:
    from balfeat.provenance import provenance

    report: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "sizes": asdict(sizes),
        "published_resnet50": PUBLISHED,
        "provenance": provenance(device=torch.device(device), seed=0),
        "parts": {"torchrun_nccl": torchrun},
    }
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(device, sizes, Path(tmp))
        for name in parts:
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            report["parts"][name] = run_part(PARTS[name], ctx)
            print(f"gpu_check: {name} {report['parts'][name]['status']}", file=sys.stderr)
    failed = sorted(k for k, v in report["parts"].items() if v["status"] == "error")
    report["failed"] = failed
    report["ok"] = not failed
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT})")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="auto: cuda when available, else the tiny CPU fallback")  # fmt: skip
    ap.add_argument("--parts", nargs="*", choices=list(PARTS), default=list(PARTS),
                    help="parts to run (default: all)")  # fmt: skip
    ap.add_argument("--torchrun-part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--torchrun-result", default=None, help="file the torchrun launch wrote")
    ap.add_argument("--torchrun-rc", type=int, default=None, help="its exit status")
    args = ap.parse_args(argv)
    # exact_resume's deterministic cuBLAS needs this before the first CUDA call
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if args.torchrun_part:
        torchrun_part(Path(args.torchrun_part))
        return 0
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    report = check(device, args.parts, args.torchrun_result, args.torchrun_rc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {out}")
    if report["failed"]:
        bar = "!" * 72
        print(f"{bar}\nGPU CHECK FAILED: {', '.join(report['failed'])}", file=sys.stderr)
        for name in report["failed"]:
            print(f"  {name}: {report['parts'][name]['error']}", file=sys.stderr)
        print(bar, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
