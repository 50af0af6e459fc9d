"""study.published: the authors' numbers of a study's methods, printed in its report."""

from __future__ import annotations

from pathlib import Path

from balfeat.study.published import TABLE, load_published, published_markdown, published_rows

KEYS = {
    "method", "variant", "dataset", "backbone", "overall", "many", "medium", "few", "status",
    "source", "secondary", "reruns_by_tsc_authors", "reruns_by_authors", "tier",
}  # fmt: skip


def test_the_table_ships_with_the_package_and_has_no_number_from_memory() -> None:
    rows = load_published()
    assert TABLE.is_file() and rows
    for r in rows:
        assert set(r) <= KEYS, r
        values = [r[k] for k in ("overall", "many", "medium", "few")]
        if r["status"] == "todo":
            assert values == [None] * 4
        else:
            assert r["overall"] is not None and r["source"]


def test_rows_are_matched_to_study_method_names() -> None:
    methods = {str(r["method"]) for r in published_rows(["paco", "sl"])}
    assert methods == {"PaCo"}  # not GPaCo, and SL has no row
    assert published_rows(["moco_v2"]) == []
    lines = published_markdown(["paco", "gpaco"])
    assert lines[0] == "## Published numbers of these methods"
    assert any(ln.startswith("| GPaCo | imagenet-lt | resnet50 | 58.5 |") for ln in lines)
    assert published_markdown(["sl"]) == []
    supcon = published_markdown(["supcon"])
    assert any("| SupCon (queue, as reported by TSC) |" in ln for ln in supcon)


#: One study row of a method whose authors published numbers.
PACO_ROW = {
    "protocol": "fast", "method": "paco", "set": "balanced", "seed": 0,
    "imbalance_ratio": 1.0, "top1": 50.0, "many": 40.0, "medium": 50.0, "few": 60.0,
    "train_counts": [10, 10], "per_class_accuracy": [40.0, 60.0],
}  # fmt: skip


def test_a_study_report_prints_them_when_asked(tmp_path: Path) -> None:
    from balfeat.study.report import write_report

    row = dict(PACO_ROW)
    write_report([row], tmp_path / "a", published=True)
    assert "## Published numbers of these methods" in (tmp_path / "a" / "report.md").read_text()
    page = (tmp_path / "a" / "report.html").read_text()
    assert "<h2>Published numbers of these methods</h2>" in page and "<td>PaCo</td>" in page
    write_report([row], tmp_path / "b")
    assert "Published numbers" not in (tmp_path / "b" / "report.md").read_text()


def test_p1_and_p2_numbers_are_entered_with_their_address_and_printed() -> None:
    """Issue 23 item 4: the cells ../shared/published-numbers.md gives a P1 / P2 value for, re-read
    from the PDFs in the repositories named (TSC supplement, DSCL supplement)."""
    rows = load_published()
    for r in rows:
        if r.get("tier"):
            assert r["tier"] in ("P1", "P2") and r["status"] == "verified"
            assert "github:" in r["source"] and "Table" in r["source"]

    def find(method: str, dataset: str) -> dict[str, object]:
        (hit,) = [r for r in rows if r["method"] == method and r["dataset"] == dataset]
        return hit

    tsc = find("TSC", "imagenet-lt")
    assert [tsc[k] for k in ("overall", "many", "medium", "few")] == [52.4, 63.5, 49.7, 30.4]
    assert tsc["tier"] == "P1" and "supp_release.pdf" in str(tsc["source"])
    assert find("TSC", "cifar10-lt-r100")["overall"] == 79.7
    assert find("TSC", "cifar100-lt-r100")["overall"] == 43.8
    kcl = find("KCL", "imagenet-lt")
    assert kcl["overall"] == 51.5 and kcl["tier"] == "P2"
    base = find("SupCon (queue, the baseline of DSCL)", "imagenet-lt")
    assert [base[k] for k in ("overall", "many", "medium", "few")] == [51.2, 61.6, 48.6, 30.3]
    lines = published_markdown(["tsc", "kcl"])
    assert any(
        ln.startswith(
            "| TSC (400 epochs, with KCL warm-up) | imagenet-lt | resnet50 | "
            "52.4 | 63.5 | 49.7 | 30.4 | verified (P1) |"
        )
        for ln in lines
    )
    assert any(
        "| KCL (run by the TSC authors, 200 epochs) |" in ln and "(P2)" in ln for ln in lines
    )
    # a todo row still carries no number; its aggregator value is printed as secondary
    paco = published_markdown(["paco"])
    assert any("cifar100-lt-r100" in ln and "secondary (not the paper): 52.0" in ln for ln in paco)


def test_published_rows_follow_what_a_method_trains_not_its_id(tmp_path: Path) -> None:
    from balfeat.study.report import write_report

    row = dict(PACO_ROW)
    write_report([row], tmp_path / "a", published=True, method_names=["sl"])  # id paco, trains sl
    assert "Published numbers" not in (tmp_path / "a" / "report.md").read_text()
    mine = {**row, "method": "my_method"}
    write_report([mine], tmp_path / "b", published=True, method_names=["paco"])
    md = (tmp_path / "b" / "report.md").read_text()
    assert "## Published numbers of these methods" in md and "| PaCo | imagenet-lt |" in md
