# ruff: noqa: F811  (the tiny_imagenet fixture is imported from test_probe_cli)
"""`balfeat probe` / `balfeat evaluate`: nothing lost, nothing silently wrong (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_probe_cli import common, tiny_imagenet  # noqa: F401  (fixture)

from balfeat.cli.main import main


def _one_error_line(err: str) -> str:
    # the stage lines ("probe: reading ...", printed even with --quiet) are status, not errors
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("probe: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_evaluate_never_replaces_what_probe_wrote(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
) -> None:
    out = tmp_path / "probe"
    assert main(["probe", *common(tiny_imagenet), "--decoupled", "tau", "--out", str(out)]) == 0
    before = (out / "results.json").read_text()
    assert "decoupled" in json.loads(before)
    assert main(["evaluate", str(out), "--grouping", "1,1"]) == 0
    assert (out / "results.json").read_text() == before  # untouched
    again = json.loads((out / "evaluate" / "results.json").read_text())
    assert again["grouping"]["many_above"] == 1
    assert main(["evaluate", str(out), "--out", str(out)]) == 2  # its own folder is refused
    assert (out / "results.json").read_text() == before


def test_groups_come_from_the_pretraining_counts(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
) -> None:
    counts = tmp_path / "counts.txt"
    counts.write_text("# pre-training counts\n500\n50\n5\n")
    out = tmp_path / "p"
    args = [*common(tiny_imagenet), "--grouping", "default", "--group-counts", str(counts)]
    assert main(["probe", *args, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["group_source"] == f"--group-counts {counts}"
    assert [res["groups"][g]["classes"] for g in ("many", "medium", "few")] == [[0], [1], [2]]
    assert res["probe_train_counts"] == [8, 4, 2]
    # A split file works as well (labels counted); evaluate can regroup with it too.
    assert main(["evaluate", str(out), "--group-counts", str(tiny_imagenet["train"])]) == 0
    ev = json.loads((out / "evaluate" / "results.json").read_text())
    assert ev["group_source"].startswith("--group-counts")
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n2\n")
    assert main(["probe", *args[:-1], str(bad), "--out", str(tmp_path / "q")]) == 2
    assert not (tmp_path / "q").exists()


def test_probe_takes_a_run_folder_and_records_provenance(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pth").write_bytes(tiny_imagenet["ckpt"].read_bytes())
    args = [a if a != str(tiny_imagenet["ckpt"]) else str(run) for a in common(tiny_imagenet)]
    assert main(["probe", *args, "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["checkpoint"].endswith("last.pth")
    prov = res["provenance"]
    assert prov["torch"] == torch.__version__ and prov["torch_threads"] >= 1
    assert prov["seed"] == 0 and "balfeat_version" in prov


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--out", "FILE/out"], "--out"),
        (["--device", "cuda:7"], "--device"),
        (["--lr", "-1"], "--lr"),
        (["--passes", "-1"], "--passes"),
        (["--workers", "-1"], "--workers"),
        (["--image-size", "0"], "--image-size"),
        (["--milestones", "80,60"], "--milestones"),
        (["--decoupled", "crt,nope"], "--decoupled"),
        (["--grouping", "many"], "--grouping"),
    ],
)
def test_bad_probe_options_fail_at_once_with_one_line(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    if torch.cuda.is_available() and needle == "--device":  # pragma: no cover
        pytest.skip("a GPU machine")
    blocker = tmp_path / "FILE"
    blocker.write_text("a file, not a folder")
    extra = [e.replace("FILE", str(blocker)) for e in extra]
    out = ["--out", str(tmp_path / "out")] if "--out" not in extra else []
    assert main(["probe", *common(tiny_imagenet), *out, *extra]) == 2
    assert needle in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_labels_with_gaps_are_refused_as_pretrain_does(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gappy = tmp_path / "gappy.txt"
    lines = tiny_imagenet["train"].read_text().splitlines()
    gappy.write_text("\n".join(ln for ln in lines if not ln.endswith(" 1")) + "\n")
    args = [a if a != str(tiny_imagenet["train"]) else str(gappy) for a in common(tiny_imagenet)]
    assert main(["probe", *args, "--out", str(tmp_path / "o")]) == 2
    assert "class(es) 1 have no images" in _one_error_line(capsys.readouterr().err)


def test_class_set_files_may_have_a_bom_and_comments(
    tiny_imagenet: dict[str, Path],
    tmp_path: Path,
) -> None:
    cs = tmp_path / "set.txt"
    cs.write_text("\ufeff# set A\n0\n\n/n02\n", encoding="utf-8")
    args = [*common(tiny_imagenet), "--class-set", str(cs), "--out", str(tmp_path / "u")]
    assert main(["probe", *args]) == 0
    assert json.loads((tmp_path / "u" / "unseen.json").read_text())["classes_A"] == [0, 2]


def test_probe_config_file_layers_overrides_and_flags(
    tiny_imagenet: dict[str, Path], tmp_path: Path
) -> None:
    from balfeat.classify.job import load_probe_job

    base = tmp_path / "base.yaml"
    base.write_text("probe: {epochs: 50, lr: 2.0, grouping: thirds, dataset: imagenet}\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "defaults: [base.yaml]\n"
        f"probe: {{checkpoint: {tiny_imagenet['ckpt']}, data_root: {tiny_imagenet['root']},\n"
        f"  train_split: {tiny_imagenet['train']}, val_split: {tiny_imagenet['val']},\n"
        f"  image_size: 16, batch_size: 8, device: cpu, quiet: true, out: {tmp_path / 'o'}}}\n"
    )
    loaded = load_probe_job([str(job)], ["probe.epochs=4"]).probe
    assert (loaded.epochs, loaded.lr, loaded.grouping) == (4, 2.0, "thirds")
    # key=value beats the files, a flag beats both.
    assert main(["probe", "--config", str(job), "--epochs", "3", "probe.lr=1.0"]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["probe_job"]["epochs"] == 3 and res["probe_job"]["lr"] == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: {lrr: 1}\n")
    with pytest.raises(Exception, match=r"did you mean 'probe\.lr'"):
        load_probe_job([str(bad)])


def test_every_probe_recipe_loads_as_a_probe_job() -> None:
    from balfeat.classify.job import load_probe_job

    configs = Path(__file__).resolve().parents[2] / "configs"
    recipes = [  # the reference table's probe recipes (docs/recipes.yaml)
        p
        for p in sorted((configs / "probe").rglob("probe*.yaml"))
        if "# recipe-table: docs/recipes.yaml" in p.read_text()
    ]
    assert recipes
    for path in recipes:
        opts = load_probe_job([str(path)]).probe
        assert opts.protocol == "reference" and opts.lr == 30.0 and opts.milestones == [60, 80]


def test_unwritable_out_is_found_by_writing_before_any_work(
    tiny_imagenet: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Root passes permission checks: /proc refuses new folders, found before any work."""
    assert main(["probe", *common(tiny_imagenet), "--out", "/proc/balfeat-probe-out"]) == 2
    assert "--out" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("content", [b"garbage\n", b"", bytes(range(256))])
def test_evaluate_a_corrupt_probe_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    (tmp_path / "probe.pth").write_bytes(content)
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable balfeat probe.pth" in err[0]
    assert not (tmp_path / "evaluate").exists()
