"""``balfeat study FILE --collect``: the table, figures and report from results that exist.

Reads the results each (cell, seed) left in its folder (``cells/<method>__<set>/seed<s>/``, the
paths ``--plan`` prints), whoever wrote them: the study itself, or ``balfeat pretrain`` and
``balfeat probe`` run by hand or by a batch system. It never trains or probes; the cells without
results are named, with the commands that would make them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from balfeat.study.cells import OWN_CLASSIFIER, Row, cell_dir, read_row
from balfeat.study.jobs import cell_jobs, collect_rows, missing_lines
from balfeat.study.spec import StudySpec


def collect_study(
    spec: StudySpec,
    out: Path,
    overrides: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> tuple[list[Row], list[str]]:
    """The rows of every finished (cell, seed) and one line per missing one (with its commands).

    Returns:
        ``(rows, missing)``: ``missing`` names each unfinished cell (empty when all are done).
    """
    if spec.is_job_study:
        rows, todo = collect_rows(spec, cell_jobs(spec, out, overrides))
        missing = missing_lines(spec, todo)
    else:
        rows, missing = [], []
        for set_name in spec.sets:
            for method in spec.methods:
                for seed in spec.run_seeds:
                    cdir = cell_dir(out, method, set_name, seed)
                    if all((cdir / p / "results.json").is_file() for p in spec.probes):
                        rows += [read_row(out, method, set_name, seed, p) for p in spec.probes]
                        if (cdir / OWN_CLASSIFIER / "results.json").is_file():
                            rows.append(read_row(out, method, set_name, seed, OWN_CLASSIFIER))
                    else:
                        missing.append(f"missing: {method} on {set_name}, seed {seed} ({cdir})")
    for line in missing:
        echo(line)
    return rows, missing
