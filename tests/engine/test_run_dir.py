"""The run folder under concurrency and signals: nothing deleted without the lock, SIGTERM as safe
as Ctrl-C, leftovers of a killed write tidied, a failed first start leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from engine_standins import TinyImages, TinySL, params_of, tiny_overrides

from balfeat.engine.checkpoint import load_checkpoint
from balfeat.engine.config import load_config
from balfeat.engine.run_dir import LOCK_NAME
from balfeat.engine.trainer import Trainer
from balfeat.errors import TrainingError


def _trainer(
    out: Path, extra: tuple[str, ...] = (), epochs: int = 2, resume: bool = False
) -> Trainer:
    cfg = load_config(None, [*tiny_overrides(str(out), epochs=epochs), *extra])
    torch.manual_seed(123)
    return Trainer(cfg, method=TinySL(), train_dataset=TinyImages(views=1), resume=resume)  # type: ignore[arg-type]


def test_overwrite_never_touches_a_live_run(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    files = {
        str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
    }
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        (tmp_path / LOCK_NAME).write_text(f"{live.pid} {socket.gethostname()}\n")
        with pytest.raises(TrainingError, match=rf"another balfeat process \(pid {live.pid}"):
            _trainer(tmp_path, ("run.overwrite=true",), epochs=1).fit()
        after = {
            str(p.relative_to(tmp_path)): p.read_bytes()
            for p in tmp_path.rglob("*")
            if p.is_file() and p.name != LOCK_NAME
        }
        assert after == files  # config, metrics and every checkpoint of the live run are intact
    finally:
        live.communicate(b"")


def test_leftover_tmp_files_are_removed_and_last_pth_restored(tmp_path: Path) -> None:
    _trainer(tmp_path, epochs=1).fit()
    (tmp_path / "last.pth").rename(tmp_path / "last.pth.tmp")  # killed between the two writes
    (tmp_path / ".metrics.jsonl.abc.tmp").write_text("half")
    summary = _trainer(tmp_path, epochs=1, resume=True).fit()
    assert summary.get("already_finished")
    assert not list(tmp_path.glob("*.tmp"))
    assert load_checkpoint(tmp_path / "last.pth")["epoch"] == 1


def test_a_start_that_fails_on_its_first_batch_does_not_block_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: TinySL, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError("first batch fails")

    real = TinySL.forward
    monkeypatch.setattr(TinySL, "forward", broken)
    with pytest.raises(RuntimeError, match="first batch fails"):
        _trainer(tmp_path, epochs=1).fit()
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / LOCK_NAME).exists()
    monkeypatch.setattr(TinySL, "forward", real)
    assert _trainer(tmp_path, epochs=1).fit()["steps"] == 4  # no "already holds a run"


_TERM_SCRIPT = textwrap.dedent(
    """
    import signal, sys, torch
    sys.path.insert(0, {tests!r})
    from engine_standins import TinyImages, TinySL, tiny_overrides
    from balfeat.engine.config import load_config
    from balfeat.engine.trainer import Trainer
    real = TinySL.after_step
    def after_step(self):
        real(self)
        if self.calls == 6 and {wait}:  # the parent's signal arrives during step 6
            sig = getattr(signal, {signame!r})
            signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
            print("ready", flush=True)
            while sig not in signal.sigpending():
                pass
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])  # delivered to the trainer now
    TinySL.after_step = after_step
    # no TensorBoard: its writer thread would take the signal this thread waits for as pending
    cfg = load_config(None, [*tiny_overrides({out!r}, epochs=2), "run.tensorboard=off"])
    torch.manual_seed(123)
    try:
        Trainer(cfg, method=TinySL(), train_dataset=TinyImages(views=1), resume=True).fit()
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_sigterm_checkpoints_the_step_releases_the_lock_and_resumes(
    tmp_path: Path, signame: str
) -> None:
    full = _trainer(tmp_path / "full")
    full.fit()
    out = tmp_path / "term"
    tests = str(Path(__file__).parent)
    script = tmp_path / "train.py"
    script.write_text(_TERM_SCRIPT.format(tests=tests, out=str(out), wait=True, signame=signame))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"{signame}: finishing the current step" in err
    state = load_checkpoint(out / "last.pth")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)
    assert not (out / LOCK_NAME).exists()
    script.write_text(_TERM_SCRIPT.format(tests=tests, out=str(out), wait=False, signame=signame))
    done = subprocess.run([sys.executable, str(script)], env=env, timeout=120)
    assert done.returncode == 0
    final = load_checkpoint(out / "last.pth")
    assert final["step"] == 8
    for k, v in params_of(full.method).items():
        assert torch.equal(v, final["model"][k]), k
