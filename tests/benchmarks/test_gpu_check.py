"""benchmarks/gpu_check.py: its CPU fallback runs the same driver code and writes the JSON shape
the GPU run writes; an erroring part fails the check loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_loader import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


gpu_check = load_benchmark("gpu_check")
TOP = {"device", "gpu", "sizes", "published_resnet50", "provenance", "parts", "failed", "ok"}


def test_the_cpu_fallback_writes_every_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu" / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) == TOP and report["device"] == "cpu" and report["gpu"] is None
    assert report["ok"] is True and report["failed"] == []
    assert set(report["parts"]) == {"torchrun_nccl", *gpu_check.PARTS}
    for name, part in report["parts"].items():
        assert part["status"] in ("ok", "skipped"), (name, part)
        assert isinstance(part["seconds"], (int, float))
        assert part["status"] == "ok" or part["reason"]
    parts = report["parts"]
    assert parts["torchrun_nccl"]["reason"] == "run through benchmarks/gpu_check.sh"
    assert parts["compile"]["status"] == "skipped"  # inductor is checked on CUDA only
    assert parts["autocast_bf16"]["autocast_dtype"] == "bfloat16"
    assert parts["autocast_fp16"]["autocast_dtype"] == "float32"  # fp16 needs a GPU
    assert parts["decode_gpu"]["decode_used"] == "cpu"  # the no-CUDA fallback of data.decode=gpu
    assert parts["exact_resume"] == {**parts["exact_resume"], "status": "ok", "stopped_at": 3}
    for m in ("sl", "moco_v2", "kcl"):
        rate = parts[f"throughput_{m}"]
        assert rate["images_per_s"] > 0 and rate["timed_steps"] == 2
        assert "ratio_to_published" not in rate  # a CPU rate is not compared with a GPU figure
    assert report["published_resnet50"]["source"].startswith("https://github.com/NVIDIA/")
    assert report["sizes"]["backbone"] == "resnet8"
    assert gpu_check.Sizes.for_device("cuda").backbone == "resnet50"
    assert gpu_check.Sizes.for_device("cuda").batch == 256


def test_an_erroring_part_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(ctx: object) -> dict[str, object]:
        raise RuntimeError("nvJPEG said no")

    monkeypatch.setitem(gpu_check.PARTS, "decode_gpu", broken)
    out = tmp_path / "r.json"
    rc = gpu_check.main(["--device", "cpu", "--out", str(out), "--parts", "decode_gpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "GPU CHECK FAILED: decode_gpu" in err and "RuntimeError: nvJPEG said no" in err
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["failed"] == ["decode_gpu"]
    assert report["parts"]["decode_gpu"]["error"] == "RuntimeError: nvJPEG said no"
    assert "Traceback" in report["parts"]["decode_gpu"]["traceback"]


def test_the_torchrun_result_is_read_or_its_absence_is_an_error(tmp_path: Path) -> None:
    assert gpu_check.torchrun_result(None, None)["status"] == "skipped"
    missing = gpu_check.torchrun_result(str(tmp_path / "none.json"), 1)
    assert missing["status"] == "error" and "exited with 1" in missing["error"]
    written = tmp_path / "t.json"
    written.write_text(json.dumps({"status": "ok", "backend": "nccl", "seconds": 1.0}))
    assert gpu_check.torchrun_result(str(written), 0)["backend"] == "nccl"


#: A CPU stand-in with the reference KCL builder's interface (constructor arguments, forward
#: returning logits, positive-key targets and soft labels); the real one needs CUDA.
STAND_IN = """
import torch
from torch import nn


class KCL(nn.Module):
    def __init__(self, base_encoder, dim=128, K=65536, m=0.999, T=0.07, mlp=False, posk=None,
                 losstype="v1"):
        super().__init__()
        self.K, self.T = K, T
        self.encoder_q = base_encoder(num_classes=dim)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("label_queue", torch.full((K,), -1, dtype=torch.long))

    def forward(self, im_q, im_k, labels):
        q = nn.functional.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            k = nn.functional.normalize(self.encoder_q(im_k), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue], dim=1) / self.T
        same = (self.label_queue[None, :] == labels[:, None]).float()
        soft = torch.cat([torch.ones(len(q), 1), same], dim=1)
        return logits, torch.zeros(len(q), dtype=torch.long), soft / soft.sum(1, keepdim=True)
"""


def test_the_reference_step_is_timed_beside_balfeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    ref = tmp_path / "BalFeat"
    (ref / "moco").mkdir(parents=True)
    (ref / "moco" / "__init__.py").write_text("")
    (ref / "moco" / "kcl_builder.py").write_text(STAND_IN)
    ctx = gpu_check.Context("cpu", gpu_check.Sizes.for_device("cpu"), tmp_path)
    monkeypatch.delenv("BALFEAT_REFERENCE", raising=False)
    assert gpu_check.run_part(gpu_check.part_reference_kcl, ctx)["status"] == "skipped"
    monkeypatch.setenv("BALFEAT_REFERENCE", str(ref))
    assert "CUDA only" in gpu_check.run_part(gpu_check.part_reference_kcl, ctx)["reason"]
    monkeypatch.setenv("BALFEAT_REFERENCE_ON_CPU", "1")
    try:
        part = gpu_check.run_part(gpu_check.part_reference_kcl, ctx)
    finally:
        sys.modules.pop("moco.kcl_builder", None)
        sys.modules.pop("moco", None)
        if dist.is_initialized():
            dist.destroy_process_group()
    assert part["status"] == "ok", part
    assert part["reference_ms"] > 0 and part["balfeat_ms"] > 0
    assert part["ratio_balfeat_over_reference"] == part["balfeat_ms"] / part["reference_ms"]
    monkeypatch.setenv("BALFEAT_REFERENCE", str(tmp_path))  # no moco/kcl_builder.py there
    assert gpu_check.run_part(gpu_check.part_reference_kcl, ctx)["status"] == "error"


@pytest.mark.slow
def test_the_wrapper_runs_the_torchrun_part(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--parts", "device_loader"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"JSON at {out}" in proc.stdout
    torchrun = json.loads(out.read_text())["parts"]["torchrun_nccl"]
    assert torchrun["status"] == "ok", torchrun
    assert torchrun["backend"] == "gloo" and torchrun["world_size"] == 1
    assert torchrun["trainer_steps"] == 3
