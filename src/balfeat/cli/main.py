"""Entry point of the ``balfeat`` command."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from balfeat import __version__
from balfeat.errors import BalfeatError

# Subcommand modules under balfeat.cli, in the order --help lists them. Each defines
# ``add_parser(subparsers)`` that registers one subcommand and sets ``func`` to a callable taking
# the parsed namespace and returning an exit code.
COMMANDS: tuple[str, ...] = (
    "data",
    "splits",
    "pretrain",
    "probe",
    "evaluate",
    "export",
    "study",
    "demo",
)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``balfeat CMD: error: MESSAGE``.

    argparse prints the usage block before each error; for a user who mistyped one value that
    block hides the line that matters. ``--help`` still shows the full usage. Subparsers made with
    ``add_subparsers`` inherit this class, so every subcommand behaves the same.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line to stderr and exit with status 2."""
        text = " ".join(message.split())  # an error message never spans lines
        self.exit(2, f"{self.prog}: error: {text}\n")


def _subparser_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _show_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A ``func`` for a command group: print the group's own help (exit 2: no subcommand)."""

    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def _finish_tree(parser: argparse.ArgumentParser) -> None:
    """Give every command group its own help as default ``func`` and every subcommand a
    description (its one-line help when it declares none)."""
    for action in _subparser_actions(parser):
        helps = {c.dest: c.help for c in action._choices_actions}
        for name, sub in action.choices.items():
            sub.set_defaults(_balfeat_prog=sub.prog)
            if not sub.description and helps.get(name):
                sub.description = str(helps[name])[:1].upper() + str(helps[name])[1:] + "."
            if _subparser_actions(sub):
                if sub.get_default("func") is None:
                    sub.set_defaults(func=_show_help(sub))
                _finish_tree(sub)


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every (sub)subparser under it, groups included."""
    out = [parser]
    for action in _subparser_actions(parser):
        for sub in action.choices.values():
            out.extend(_all_parsers(sub))
    return out


def iter_parsers(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every leaf subcommand of ``parser`` as ``(prog, parser)``, e.g. ``balfeat splits stats``."""
    out: list[tuple[str, argparse.ArgumentParser]] = []
    actions = _subparser_actions(parser)
    if not actions:
        return [(parser.prog, parser)]
    for action in actions:
        for sub in action.choices.values():
            out.extend(iter_parsers(sub))
    return out


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = OneLineParser(
        prog="balfeat",
        description=(
            "Learn and measure image representations on class-imbalanced (long-tailed) data. "
            "Start with `balfeat demo` on the embedded Fashion-MNIST data."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"balfeat {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"balfeat.cli.{name}")
        module.add_parser(subparsers)
    _finish_tree(parser)
    return parser


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line, in the user's terms.

    An ``OSError`` becomes ``PATH: reason`` (no ``[Errno 2]``); an error re-raised from a
    DataLoader worker (whose message holds the worker's traceback) gives the original message.
    """
    if isinstance(err, OSError) and not isinstance(err, BalfeatError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror[:1].lower()}{err.strerror[1:]}"
    text = str(err)
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        return last.split(": ", 1)[1] if last.startswith("balfeat.errors.") else last
    return " ".join(text.split())


#: Signals that stop a command as Ctrl-C does (``kill``/``timeout``/``docker stop``, a closed
#: terminal, SLURM's ``--signal=USR1``). Training checkpoints at the step on them
#: (``balfeat.engine.run_dir.StopSignals``); elsewhere they unwind like Ctrl-C, so locks are
#: released and temporary files removed instead of the process dying where it stands.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGUSR1") if hasattr(signal, name)
)

#: Exit status when stdout is a pipe whose reader has gone (``balfeat ... | head -1``): what a
#: process killed by SIGPIPE reports, printed nothing.
BROKEN_PIPE_STATUS = 128 + 13


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C, raised where the program stands (exit status 130)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While entered, :data:`STOP_SIGNALS` raise :class:`Interrupted` (a ``KeyboardInterrupt``)
    in the main thread; the previous handlers come back on exit. A signal the process was started
    ignoring (``nohup`` ignores SIGHUP) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {}
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reading end is closed (poll reports an error on
    it), as opposed to a broken pipe elsewhere (a data-loader worker's)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll, or stdout is not a real file
        return False


def _stdout_gone() -> int:
    """Point stdout at /dev/null once its reader has gone (so the interpreter's last flush does
    not print a BrokenPipeError), and return :data:`BROKEN_PIPE_STATUS`."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests)
        pass
    return BROKEN_PIPE_STATUS


def _out_of_memory() -> tuple[type[BaseException], ...]:
    # torch from sys.modules, never imported here: the wait policy must be set before it loads
    torch = sys.modules.get("torch")
    cuda_oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (MemoryError, cuda_oom) if isinstance(cuda_oom, type) else (MemoryError,)


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.-]*=")


def _late_overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Take ``KEY=VALUE`` items that argparse left over into the command's overrides.

    argparse reads a run of positionals once: in ``balfeat pretrain --quiet a=1 --resume b=2``
    the ``b=2`` after an option is left over. A command with a ``KEY=VALUE`` list takes them in
    command-line order (they all follow the first run); returns what is still unrecognized.
    """
    if not isinstance(getattr(args, "overrides", None), list):
        return extra
    late = [e for e in extra if _OVERRIDE.match(e)]
    if late:
        args.overrides = [*args.overrides, *late]
    return [e for e in extra if e not in late]


def _reorder_hint(args: argparse.Namespace, extra: list[str]) -> str:
    """A hint for leftovers that look like ``KEY=VALUE`` on a command that takes none."""
    if any(_OVERRIDE.match(e) for e in extra) and not hasattr(args, "overrides"):
        return "; this command takes no KEY=VALUE overrides (see its --help for its options)"
    return ""


#: OpenMP's wait policy for the command: idle OpenMP threads sleep instead of spinning. With one
#: other busy process on 2 cores, spinning threads took MoCo v2 training from 530 to 160 images/s;
#: PASSIVE kept 382 (issue 24; ``benchmarks/bench_under_load.py`` measures it).
WAIT_POLICY = "PASSIVE"

#: Commands that choose their threads again before every cell (``--threads 0``) keep OpenMP's
#: default wait: they leave the cores other processes use at each cell, so their threads rarely
#: spin against another process, and idle they run about 12% faster than with PASSIVE
#: (``benchmarks/bench_under_load.py``: ``spin_auto`` against ``auto``).
PER_CELL_COMMANDS = frozenset({"demo", "study"})


def passive_openmp(
    environ: MutableMapping[str, str] = os.environ, command: str | None = None
) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this command unless the user set a policy.

    OpenMP (libgomp) reads the variable once, when torch loads it, so this runs first in
    :func:`main`, before any subcommand module imports torch; with torch already imported (the
    command called from Python) it changes nothing. Only the command does this: importing
    balfeat never changes the environment. Child processes (torchrun workers) inherit it.

    Args:
        command: the subcommand; :data:`PER_CELL_COMMANDS` keep OpenMP's default.

    Returns:
        Whether the variable was set.
    """
    if command in PER_CELL_COMMANDS:
        return False
    if "OMP_WAIT_POLICY" in environ or "torch" in sys.modules:
        return False
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    passive_openmp(command=next((w for w in words if not w.startswith("-")), None))
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        extra = _late_overrides(args, extra)
        if extra:
            # Name the subcommand in the error, not the top-level ``balfeat``.
            progs = {p.prog: p for p in _all_parsers(parser)}
            owner = progs.get(getattr(args, "_balfeat_prog", ""), parser)
            owner.error(f"unrecognized arguments: {' '.join(extra)}{_reorder_hint(args, extra)}")
    except SystemExit as stop:  # a usage error (2) or --help/--version (0): return the code
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = getattr(args, "_balfeat_prog", None) or f"balfeat {args.command}"
    try:
        with signals_as_interrupts():
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a reader that has gone shows here, not at interpreter exit
            return code
    except BrokenPipeError as err:
        if _stdout_reader_gone():
            return _stdout_gone()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (BalfeatError, OSError) as err:
        # Errors from bad input or the file system (missing file, permission, disk full): one
        # clear line, no traceback. Set BALFEAT_DEBUG=1 for the trace.
        if os.environ.get("BALFEAT_DEBUG"):
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except _out_of_memory() as err:
        if os.environ.get("BALFEAT_DEBUG"):
            raise
        print(
            f"{prog}: error: out of memory ({_one_line(err) or type(err).__name__}); ask for "
            "less: a smaller batch size, data size or image size",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as stop:
        how = f" by {stop.args[0]}" if isinstance(stop, Interrupted) else ""
        print(f"{prog}: interrupted{how}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
