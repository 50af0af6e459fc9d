"""2 CPU processes (gloo) vs 1 process on the same global batch; a failing rank ends the job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_standins import free_port, run_standin, spawn_worker

from balfeat.engine.checkpoint import load_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


KINDS = [
    "sl",
    "moco",
    "real_moco",
    "real_kcl",
    "real_supcon",
    "real_tsc",
    "real_paco",
    "real_gpaco",
    "real_bcl",
    "real_supcon_inbatch",
]
# Trained in the same job, not compared with 1 process: a BatchNorm in the projection head
# normalises each rank's rows (as the authors' DDP / DataParallel code, no SyncBatchNorm), so 2
# ranks with half batches do not compute what 1 process does.
SMOKE_KINDS = ["real_paco_head_bn", "real_bcl_head_bn"]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-process gloo job (spawn is the slow part) training every kind in turn."""
    out = tmp_path_factory.mktemp("two")
    kinds = [*KINDS, *SMOKE_KINDS]
    mp.spawn(spawn_worker, args=(2, free_port(), str(out), kinds, []), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_equal_one_rank(tmp_path: Path, two_rank_runs: Path, kind: str) -> None:
    one = run_standin(str(tmp_path / "one"), kind, [], noise=0.0)
    two = load_checkpoint(two_rank_runs / kind / "last.pth")
    assert two["world_size"] == 2 and two["step"] == one.step == 8
    assert len(two["rng"]) == 2  # every rank's RNG state is kept
    ref = one.method.state_dict()
    for k, v in two["model"].items():
        if k in ("queue", "queue.keys"):
            # Same keys, enqueued in rank order (rank 0's half batch, then rank 1's) instead of
            # sampler order: compare as sets of rows.
            a, b = ref[k], v  # (K, dim)
            a, b = a[a[:, 0].argsort()], b[b[:, 0].argsort()]
            assert torch.allclose(a, b, atol=1e-5), k
        elif k in ("queue_labels", "queue.labels"):
            assert torch.equal(v.sort().values, ref[k].sort().values)
        else:
            assert torch.allclose(v, ref[k], atol=1e-5), k


@pytest.mark.parametrize("kind", SMOKE_KINDS)
def test_head_bn_trains_under_ddp(two_rank_runs: Path, kind: str) -> None:
    two = load_checkpoint(two_rank_runs / kind / "last.pth")
    assert two["world_size"] == 2 and two["step"] == 8
    model = two["model"]
    assert "head.bn.running_mean" in model
    assert not torch.equal(
        model["head.bn.running_var"], torch.ones_like(model["head.bn.running_var"])
    )
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    if kind == "real_paco_head_bn":  # the key head's BN: momentum parameters, own statistics
        assert "head_k.bn.weight" in model and "head_k.bn.running_mean" in model


_RANK_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from engine_standins import run_standin
    run_standin({out!r}, True, sys.argv[1:], epochs=50)
    """
)


def test_failing_rank_makes_job_exit_nonzero(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    port = free_port()
    procs = []
    for r in range(2):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "OMP_NUM_THREADS": "1",
            "BALFEAT_TEST_FAULT": "raise:3:1",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    "run.timeout_s=8",
                ],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # Rank 1 raises; rank 0 must not hang: gloo reports the lost peer (or the collective times
    # out after run.timeout_s). communicate's timeout bounds the test if it ever hangs.
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        codes.append((p.returncode, err))
    assert codes[1][0] != 0 and "injected fault on rank 1 at step 3" in codes[1][1]
    assert codes[0][0] != 0
