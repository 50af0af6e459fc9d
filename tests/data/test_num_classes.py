"""``data.num_classes`` takes effect (synthetic) or is refused where a dataset knows its classes
(issue 24 item 4: it was silently ignored for image folders). Every catalogue dataset is swept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from balfeat.data.catalog import CATALOG, check_num_classes
from balfeat.engine.build import build_train_dataset
from balfeat.engine.config import Config, DataConfig
from balfeat.errors import ConfigError
from balfeat.study.cells import load_study_data
from balfeat.study.spec import StudySpec

#: The classes each catalogue dataset knows without reading it (the others: from their files).
FIXED = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "cifar10-lt": 10, "cifar100-lt": 100}
FOLDERS = [n for n, info in CATALOG.items() if info.layout == "folder"]


def _config(dataset: str, num_classes: int, **data: object) -> Config:
    cfg = Config()
    cfg.data.dataset = dataset  # type: ignore[assignment]
    cfg.data.num_classes = num_classes
    cfg.data.image_size = 16
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _folder(tmp_path: Path, classes: int = 2) -> tuple[Path, Path]:
    root = tmp_path / "train"
    lines = []
    for c in range(classes):
        (root / f"n{c:03d}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), (60 * c, 0, 0)).save(root / f"n{c:03d}" / f"{i}.png")
            lines.append(f"n{c:03d}/{i}.png {c}")
    split = tmp_path / "train.txt"
    split.write_text("\n".join(lines) + "\n")
    return root, split


def test_the_sweep_covers_every_catalogue_dataset() -> None:
    assert set(CATALOG) == {*FIXED, *FOLDERS, "synthetic", "array"}
    assert {n: CATALOG[n].num_classes for n in FIXED} == FIXED


def test_synthetic_takes_it() -> None:
    ds = build_train_dataset(_config("synthetic", 4, synthetic_size=40))
    assert ds.num_classes == 4 and set(np.asarray(ds.targets).tolist()) == {0, 1, 2, 3}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(FIXED))
def test_a_dataset_with_fixed_classes_refuses_another_count_before_reading(
    name: str, tmp_path: Path
) -> None:
    cfg = _config(name, 7, root=str(tmp_path / "absent"), channels=CATALOG[name].channels)
    with pytest.raises(ConfigError) as err:
        build_train_dataset(cfg)
    (line,) = str(err.value).splitlines()
    assert f"data.num_classes=7, but {name} has {FIXED[name]} classes" in line
    assert f"set it to {FIXED[name]}" in line


def test_an_array_file_refuses_another_count(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    labels = np.repeat(np.arange(3), 4)
    np.savez(path, images=np.zeros((12, 8, 8), np.uint8), labels=labels)
    with pytest.raises(ConfigError, match=r"data.num_classes=5, but array file .*a.npz' has 3 "):
        build_train_dataset(_config("array", 5, root=str(path), image_size=8))
    assert build_train_dataset(_config("array", 3, root=str(path), image_size=8)).num_classes == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", FOLDERS)
def test_an_image_folder_refuses_another_count_naming_its_split(name: str, tmp_path: Path) -> None:
    root, split = _folder(tmp_path)
    kw = {"root": str(root), "channels": 3}
    with pytest.raises(ConfigError) as err:
        build_train_dataset(_config(name, 5, train_split=str(split), **kw))
    assert f"data.num_classes=5, but {str(split)!r} has 2 classes" in str(err.value)
    with pytest.raises(ConfigError, match=r"data.num_classes=3, but .*\(folder scan\)' has 2"):
        build_train_dataset(_config(name, 3, **kw))  # no split file: the classes found
    # the same count, or the default (not given), builds
    assert build_train_dataset(_config(name, 2, train_split=str(split), **kw)).num_classes == 2  # type: ignore[attr-defined]
    default = DataConfig.num_classes
    assert build_train_dataset(_config(name, default, **kw)).num_classes == 2  # type: ignore[attr-defined]


def test_an_in_memory_study_refuses_a_base_count_its_data_does_not_have(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    x, y = np.zeros((6, 8, 8), np.uint8), np.repeat(np.arange(3), 2)
    np.savez(path, train_x=x, train_y=y, test_x=x, test_y=y)
    spec = StudySpec(dataset="array", root=str(path), base={"data": {"num_classes": 4}})
    with pytest.raises(ConfigError, match=r"num_classes=4, but study dataset 'array' .* has 3"):
        load_study_data(spec)
    spec.base = {"data": {"num_classes": 3}}
    assert len(load_study_data(spec).class_names) == 3
    # synthetic: base.data.num_classes is the number of classes drawn
    synth = load_study_data(StudySpec(dataset="synthetic", base={"data": {"num_classes": 4}}))
    assert len(synth.class_names) == 4


def test_the_check_accepts_the_unset_default_only_when_told() -> None:
    check_num_classes(10, 1000, "x", unset=10)
    with pytest.raises(ConfigError, match=r"data.num_classes=10, but x has 1000 classes"):
        check_num_classes(10, 1000, "x")
