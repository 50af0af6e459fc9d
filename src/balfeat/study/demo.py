"""The demo: the paper's headline experiment, shrunk to Fashion-MNIST on a laptop CPU.

It is a study (:mod:`balfeat.study.run`) with a built-in grid:

- **Imbalance family** from the Fashion-MNIST training set: a balanced set and an exponential
  long tail with imbalance ratio (n_max / n_min) 100 (``--full`` adds ratio 10), every set with
  the same number of images (``total``), so only the *shape* of the class distribution changes.
  Which class is the head is a seeded permutation, the same for every set; the sets of one seed
  are nested (each class's images drawn in one seeded order, a set keeping a prefix of it).
- **Representations**: supervised cross-entropy (SL), MoCo v2 and KCL (k-positive contrastive,
  posk 6), each trained on each set with a small CIFAR-style ResNet (``resnet8`` by default:
  3x3 stride-1 stem, no max-pool, 16/32/64 channels; 28x28 grayscale input).
- **Probe**: the fast protocol (features cached once, linear classifier trained on them) on a
  *balanced* training set (``probe_per_class`` images of every class from the training set),
  evaluated once, after the last epoch, on the test set (no model selection on the test set).
- **Groups**: with 10 classes the decoupling thresholds (>100 / <20 images) are meaningless, so
  many/medium/few are *thirds by count rank* of the most imbalanced set (ratio 100): its 3 most
  frequent classes are many-shot, the next 4 medium, the last 3 few-shot
  (``metrics.parse_grouping("thirds")``), and these groups are used in every row, the balanced
  set included, so "few" names the same classes everywhere.
- **Control**: the untrained network (the same initial weights as the trained cells of a seed,
  BatchNorm statistics adapted on the set) probed the same way; each method's gain over it,
  paired by seed, is what pre-training added.
- **Seeds**: every cell runs with 5 seeds; the report gives means with 95% intervals, the gains
  over the control and the changes from the balanced set, both paired by seed. A seed fixes the
  initial weights, the probe images and the test images of every set, so the paired differences
  carry only what the set changes (variance reduction).

The default settings (5 seeds, two sets) are budgeted to finish within 10 minutes on 2 CPU cores
with the on-device data path; ``full=True`` trains on 1.5x the images for 5 epochs, adds the
ratio-10 set and tests on the whole test set (minutes on a GPU). docs/results/ gives measured
times.
Resumable like every study: re-running skips finished cells.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from balfeat.study.spec import FamilySpec, StudySpec, study_probe, typed_methods

#: The queue methods' shared settings (MoCo v2 and KCL differ only in KCL's positives).
_QUEUE = {"K": 4096, "m": 0.99, "T": 0.2, "mlp": True, "dim": 64, "bn_splits": 2}


def _contrastive(method: dict[str, Any]) -> dict[str, Any]:
    """A contrastive method's cell settings (fresh dicts: the specs are mutated per variant)."""
    return {
        "method": method,
        "data": {"augmentation": "moco_v2"},
        "optim": {"base_lr": 0.2, "weight_decay": 1e-4},
    }


#: The method grid of the demo (config mappings merged over the base config).
DEMO_METHODS: dict[str, dict[str, Any]] = {
    "sl": {
        "method": {"name": "sl"},
        "data": {"augmentation": "supervised"},
        "optim": {"base_lr": 0.2, "weight_decay": 5e-4},
    },
    "moco_v2": _contrastive({"name": "moco_v2", **_QUEUE}),
    "kcl": _contrastive({"name": "kcl", **_QUEUE, "posk": 6}),
}

DESCRIPTION = """\
Fashion-MNIST imbalance family: a balanced set and an exponential long tail with ratio 100
(--full adds ratio 10), the same number of images in every set, nested. Each method learns a
representation on each set with a small ResNet; a linear classifier is then trained on the frozen
features of a BALANCED training set and evaluated on the test set. Many/medium/few are thirds of
the classes by their count in the most imbalanced pre-training set (3 most frequent / 4 middle /
3 least frequent), the same classes in every row. Every cell runs with several seeds; intervals
are 95% t-intervals over seeds. The control row is the untrained network (same initial weights,
BatchNorm adapted on the set): each method's gain over it is what pre-training added.
The paper's finding to look for: the self-supervised representations (MoCo v2, KCL) lose less
accuracy than the supervised one as the pre-training set gets more imbalanced, and their
few-shot accuracy stays closer to their many-shot accuracy. With only 10 classes, how hard a
class is (shirt vs. trouser) weighs more than its count in the group accuracies; the paired
measures subtract each class's accuracy after balanced pre-training to show the effect of the
imbalance alone."""


def demo_spec(
    out_dir: str | Path = "balfeat-demo", full: bool = False, tiny: bool = False
) -> StudySpec:
    """The demo's study.

    Args:
        out_dir: output directory.
        full: longer training on more images (see the README for its measured time).
        tiny: a smoke-test setting (a few hundred images, one epoch; numbers meaningless).

    Returns:
        The :class:`StudySpec` to pass to :func:`balfeat.study.run.run_study`.
    """
    base: dict[str, Any] = {
        "data": {"dataset": "fashion-mnist", "num_workers": 0},
        "model": {"backbone": "resnet8", "small_images": True},
        "optim": {"epochs": 3, "batch_size": 128, "schedule": "cosine"},
        "run": {"keep_last": 1, "log_every": 10, "device": "auto"},
    }
    spec = StudySpec(
        name="balfeat demo: balanced feature spaces on Fashion-MNIST",
        output_dir=str(out_dir),
        dataset="fashion-mnist",
        seed=0,
        seeds=5,
        family=FamilySpec(total=4000, sets={"balanced": 1.0, "exp100": 100.0}),
        probe_per_class=200,
        test_max=5000,
        grouping="thirds",
        base=base,
        methods=typed_methods(copy.deepcopy(DEMO_METHODS)),
        probes={"fast": study_probe(epochs=60, lr=5.0, schedule="cosine", batch_size=256)},
        description=DESCRIPTION,
        knn_every=1,
    )
    if full:  # larger sets, longer training, the whole test set (measured time: see README)
        spec.family.total = 6000
        spec.family.sets = {"balanced": 1.0, "exp10": 10.0, "exp100": 100.0}
        spec.probe_per_class = 300
        spec.test_max = 0
        base["optim"]["epochs"] = 5
        base["optim"]["batch_size"] = 256
        for m in spec.methods.values():
            if "K" in m.method:
                m.method["K"] = 8192
        spec.probes["fast"].epochs = 100
    if tiny:
        spec.family.total = 300
        spec.probe_per_class = 20
        spec.test_max = 200
        spec.seeds = 2
        base["optim"]["epochs"] = 1
        base["optim"]["batch_size"] = 32
        base["run"]["progress"] = False
        for m in spec.methods.values():
            if "K" in m.method:
                m.method["K"] = 64
                m.method["bn_splits"] = 2
        spec.probes["fast"].epochs = 5
    return spec
