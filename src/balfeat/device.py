"""The one place that decides which device tensors live on (nothing else calls ``.cuda()``) and
how many CPU threads torch uses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

from balfeat.distributed import local_rank
from balfeat.errors import ConfigError


def default_device(requested: str = "auto") -> torch.device:
    """Resolve a device name.

    Args:
        requested: ``"auto"`` (this rank's GPU when CUDA is available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ConfigError: (a ``ValueError``) a name that is none of these, a CUDA device when CUDA is
            not available, or ``cuda:N`` beyond the GPUs of this machine.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        device = None
    mps = getattr(torch.backends, "mps", None)
    known = ("cpu", "cuda", "mps") if mps is not None and mps.is_available() else ("cpu", "cuda")
    if device is None or device.type not in known:
        raise ConfigError(
            f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N (N = GPU index)"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {requested!r} was requested but CUDA is not available on this machine; "
            "use device=cpu or device=auto"
        )
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ConfigError(
                f"device {requested!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})"
            )
    return device


#: How long :func:`others_cpu_use` watches the CPUs (seconds): long enough to see a busy process
#: (25 clock ticks at 100 Hz), short enough to spend once per study cell.
SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask: ``taskset`` and cpusets count),
    else every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return os.cpu_count() or 1


def cpu_jiffies(proc_stat: str, cpus: set[int] | None = None) -> tuple[int, int, int]:
    """``(busy, total, n)`` clock ticks summed over the ``cpuN`` lines of ``/proc/stat``.

    Args:
        proc_stat: the text of ``/proc/stat``.
        cpus: the CPU numbers to count (default: all).

    Returns:
        Busy ticks (all but idle and iowait; guest time is inside user time), all ticks, and the
        number of CPUs counted.
    """
    busy = total = n = 0
    for line in proc_stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - ticks[4]
        total += sum(ticks)
        n += 1
    return busy, total, n


def own_jiffies(self_stat: str) -> int:
    """User + system clock ticks of this process (all its threads) from ``/proc/self/stat``."""
    fields = self_stat.rpartition(")")[2].split()  # the command name may hold spaces
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def others_cpu_use(
    interval: float = SAMPLE_SECONDS,
    read: Callable[[str], str] = _read,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """How many of this process's usable CPUs OTHER processes keep busy, watched for ``interval``.

    The busy ticks of the CPUs this process may use, minus this process's own, over the ticks
    that passed per CPU. This process's threads are left out, so a run re-checking between its
    own cells does not count itself (the load average would).

    Returns:
        Cores in use by others (``0.0`` .. cores), or ``None`` where ``/proc`` cannot be read.
    """
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        cpus = None
    try:
        busy0, total0, n = cpu_jiffies(read("/proc/stat"), cpus)
        own0 = own_jiffies(read("/proc/self/stat"))
        sleep(interval)
        busy1, total1, _ = cpu_jiffies(read("/proc/stat"), cpus)
        own1 = own_jiffies(read("/proc/self/stat"))
    except (OSError, ValueError, IndexError):
        return None
    per_cpu = (total1 - total0) / n if n else 0.0
    if per_cpu <= 0:
        return None
    others = ((busy1 - busy0) - (own1 - own0)) / per_cpu
    return min(max(others, 0.0), float(n))


def passive_waits() -> bool:
    """Whether idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, which the ``balfeat``
    command sets before torch loads) rather than spin a while first (OpenMP's default)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def auto_threads(
    cores: int | None = None, others: float | None = None, passive: bool | None = None
) -> int:
    """The thread count of ``threads=0``: the cores that other processes leave free.

    Measured with ``benchmarks/bench_under_load.py`` (MoCo v2, 2 cores, one spinning process
    beside it): 1 thread kept 569 images/s, 2 sleeping (PASSIVE) threads 510-518 of their idle
    772-892, 2 spinning threads 348 of 932. So a process that leaves a core busy gets that core
    left to it. Where others use every core (an oversubscribed machine), sleeping threads take
    every core: each thread gets its share of a contended CPU, and a thread that waits gives its
    core away. Spinning threads never take a core another process uses (they burn it and make
    every barrier wait).

    Args:
        cores: usable cores (default: :func:`usable_cores`).
        others: cores in use by other processes (default: measured by :func:`others_cpu_use`).
            Where that cannot be measured, the 1-minute load average decides: 1 thread when it
            is at least the number of cores, else every core.
        passive: whether OpenMP threads sleep when idle (default: :func:`passive_waits`).
    """
    cores = cores or usable_cores()
    if others is None:
        others = others_cpu_use()
    if others is None:
        try:
            return 1 if os.getloadavg()[0] >= cores else cores
        except OSError:  # pragma: no cover - platforms without getloadavg
            return cores
    free = cores - int(others + 0.5)
    if free < 1 and (passive_waits() if passive is None else passive):
        return cores
    return max(1, free)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op CPU threads and return the number used.

    Args:
        threads: ``N > 0`` uses N threads; ``0`` (auto): :func:`auto_threads`, the cores
            other processes leave free (every core when they leave none and OpenMP threads
            sleep when idle, as the ``balfeat`` command sets): with one other busy process on 2
            cores, 2 spinning threads trained MoCo v2 3.3x slower than idle
            (``benchmarks/bench_under_load.py`` measures the policies). Studies call this
            before every cell and record the number used in its results (results on CPU
            depend on it).
    """
    if threads <= 0:
        threads = auto_threads()
    torch.set_num_threads(threads)
    return threads
