"""Thread setup: the number of torch threads a run uses, chosen from what other processes use."""

from __future__ import annotations

import os

import pytest
import torch

from balfeat import device
from balfeat.device import (
    auto_threads,
    configure_threads,
    cpu_jiffies,
    others_cpu_use,
    own_jiffies,
)


def proc_stat(cpus: dict[int, tuple[int, int]]) -> str:
    """A /proc/stat text: ``{cpu: (busy user ticks, idle ticks)}`` (the other fields 0 or 1)."""
    lines = ["cpu  999 0 0 999 0 0 0 0 0 0"]  # the machine total line is not read
    lines += [f"cpu{c} {busy} 0 0 {idle} 0 0 0 0 0 0" for c, (busy, idle) in cpus.items()]
    return "\n".join([*lines, "intr 12345 0 0", "ctxt 678", "cpu_model_is_not_a_cpu 1"]) + "\n"


def self_stat(utime: int, stime: int) -> str:
    """A /proc/self/stat text whose command name holds a space and a parenthesis."""
    rest = ["S", "1", "1", "1", "0", "-1", "0", "10", "0", "0", "0", str(utime), str(stime)]
    return f"4242 (py thon) x) {' '.join(rest + ['0'] * 30)}\n"


class FakeProc:
    """Readings of /proc before and after the watched interval."""

    def __init__(self, before: dict[str, str], after: dict[str, str]) -> None:
        self.files, self.after, self.slept = before, after, 0.0

    def read(self, path: str) -> str:
        return self.files[path]

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.files = self.after


def test_jiffies_parsing() -> None:
    text = "cpu  9 9 9 9 9 9 9 9\ncpu0 1 2 3 100 7 1 1 1 5 5\ncpu1 10 0 0 50 0 0 0 0 0 0\n"
    assert cpu_jiffies(text) == (1 + 2 + 3 + 1 + 1 + 1 + 10, 116 + 60, 2)  # idle, iowait: not busy
    assert cpu_jiffies(text, {1}) == (10, 60, 1)
    assert own_jiffies(self_stat(70, 5)) == 75


def test_others_use_leaves_out_this_process_and_cpus_it_cannot_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = {"/proc/stat": proc_stat({0: (100, 100), 1: (100, 100), 2: (0, 0)}),
              "/proc/self/stat": self_stat(50, 10)}  # fmt: skip
    # 25 ticks pass on each CPU: cpu0 busy all of them, cpu1 for 10, cpu2 (not ours) busy too;
    # this process used 20 of the 35 busy ticks, so others kept 15 / 25 = 0.6 cores busy
    after = {"/proc/stat": proc_stat({0: (125, 100), 1: (110, 115), 2: (25, 0)}),
             "/proc/self/stat": self_stat(65, 15)}  # fmt: skip
    fake = FakeProc(before, after)
    others = others_cpu_use(0.3, read=fake.read, sleep=fake.sleep)
    assert others == pytest.approx(0.6) and fake.slept == 0.3
    assert auto_threads(2, others, passive=False) == 1
    # the same ticks all this process's own: nothing else is busy, every core is free
    after["/proc/self/stat"] = self_stat(80, 15)
    fake = FakeProc(dict(before), after)
    assert others_cpu_use(0.3, read=fake.read, sleep=fake.sleep) == pytest.approx(0.0)
    assert auto_threads(2, 0.0, passive=False) == 2


def test_spinning_threads_leave_the_others_cores() -> None:
    assert auto_threads(2, 1.0, passive=False) == 1  # one busy process on 2 cores
    assert auto_threads(2, 0.4, passive=False) == 2
    assert auto_threads(2, 0.5, passive=False) == 1
    assert auto_threads(8, 2.9, passive=False) == 5
    assert auto_threads(2, 6.0, passive=False) == 1  # never fewer than one


def test_sleeping_threads_leave_a_busy_core_and_fill_an_oversubscribed_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert auto_threads(2, 1.0, passive=True) == 1  # one busy process on 2 cores: its core
    assert auto_threads(2, 0.3, passive=True) == 2
    assert auto_threads(8, 2.9, passive=True) == 5
    # others use every core: sleeping threads take every core (a share per thread) ...
    assert auto_threads(2, 2.0, passive=True) == 2
    assert auto_threads(2, 7.5, passive=True) == 2
    # ... spinning ones never do
    assert auto_threads(2, 7.5, passive=False) == 1
    monkeypatch.setattr(device, "others_cpu_use", lambda: 0.0)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert device.passive_waits() and auto_threads(4) == 4
    monkeypatch.setattr(device, "others_cpu_use", lambda: 4.0)
    assert auto_threads(4) == 4
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not device.passive_waits() and auto_threads(4) == 1
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert not device.passive_waits()


def test_unreadable_proc_falls_back_to_the_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(path: str) -> str:
        raise FileNotFoundError(path)

    assert others_cpu_use(0.0, read=missing, sleep=lambda s: None) is None
    monkeypatch.setattr(device, "others_cpu_use", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    assert auto_threads(2, passive=False) == 1  # a busy machine: one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert auto_threads(2, passive=False) == 2  # idle: every core


def test_configure_threads_sets_and_returns_the_number(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:

        def never() -> float:
            raise AssertionError("a fixed thread count measures nothing")

        monkeypatch.setattr(device, "others_cpu_use", never)
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setattr(device, "usable_cores", lambda: 2)
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # spinning threads
        monkeypatch.setattr(device, "others_cpu_use", lambda: 1.0)
        assert configure_threads(0) == 1 and torch.get_num_threads() == 1  # one core busy
        monkeypatch.setattr(device, "others_cpu_use", lambda: 0.1)
        assert configure_threads(0) == 2 and torch.get_num_threads() == 2  # idle: every core
        monkeypatch.setattr(device, "others_cpu_use", lambda: 1.0)
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
        assert configure_threads(0) == 1  # sleeping threads leave the busy core too
        monkeypatch.setattr(device, "others_cpu_use", lambda: 3.0)
        assert configure_threads(0) == 2  # ... and fill an oversubscribed machine
    finally:
        torch.set_num_threads(before)
