"""Command groups: a ``balfeat`` command whose work is done by its subcommands (``data``,
``splits``)."""

from __future__ import annotations

import argparse


def add_group(
    subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str
) -> argparse._SubParsersAction:
    """Register the command group ``name`` and return the registry of its subcommands (their
    name lands in ``args.<name>_command``)."""
    parser = subparsers.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
