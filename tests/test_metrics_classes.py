"""Per-class metrics (class_accuracy, intra_fid, class_tv) and ``zoo sample --labels``,
measured on stand-in conditional models that return real MNIST training images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import data as zdata
from zoo.core import ConfigError, GenerativeModel
from zoo.metrics import classes, evaluate, registry
from zoo.metrics.features import resolve_extractor
from zoo.metrics.fidelity import balanced_labels, compute_metrics

pytestmark = pytest.mark.usefixtures("mnist_available")


@dataclass
class _Config:
    conditional: bool = True
    num_classes: int = 10
    ignore_labels: bool = False
    one_per_class: bool = False  # every sample of a class the same image (a collapse)


class RealImages(GenerativeModel):
    """A stand-in conditional model: ``sample(n, labels=...)`` returns MNIST training
    images of the requested classes (or, with ``ignore_labels``, of any class)."""

    family = "realimages"
    Config = _Config

    def __init__(self, config=None):
        super().__init__(config or _Config(), (1, 28, 28))
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.images, self.labels = zdata.load("mnist", "train")

    def sample(self, n, *, generator=None, labels=None, **options):
        labels = self.check_labels(labels, n).cpu() if self.conditional else None
        if labels is None or self.config.ignore_labels:
            pick = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        else:
            pick = torch.empty(n, dtype=torch.long)
            for c in labels.unique():
                pool = (self.labels == c).nonzero().flatten()
                where = (labels == c).nonzero().flatten()
                pick[where] = pool[0] if self.config.one_per_class else pool[torch.randint(
                    0, pool.numel(), (where.numel(),), generator=generator)]
        return self.images[pick].clone()


@pytest.fixture(scope="module")
def mnist_available():
    try:
        zdata.load("mnist", "test")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture(scope="module")
def extractor(mnist_available):
    return resolve_extractor("mnist-classifier", "mnist", announce=False)


def _eval(model, **kw):
    kw.setdefault("metrics", "class_accuracy,intra_fid,class_tv")
    return evaluate(model, "mnist", "test", "mnist-classifier", n=kw.pop("n", 600),
                    announce=False, bootstrap=kw.pop("bootstrap", 50), **kw)


# -- the metrics ------------------------------------------------------------------------------

def test_a_model_that_draws_the_asked_class_is_accurate_and_one_that_ignores_it_is_not():
    good = _eval(RealImages())
    assert good["labels"] == "balanced" and good["num_classes"] == 10
    assert good["class_accuracy"] > 0.97
    lo, hi = good["class_accuracy_ci95"]
    assert lo <= good["class_accuracy"] <= hi <= 1
    bad = _eval(RealImages(_Config(ignore_labels=True)))
    assert 0.05 < bad["class_accuracy"] < 0.16
    # real images of the right class are close to their class; of any class, far
    assert good["intra_fid"] < 2 and bad["intra_fid"] > 20 * good["intra_fid"]
    assert good["intra_fid_ci95"][0] <= good["intra_fid"] <= good["intra_fid_ci95"][1]
    assert len(good["intra_fid_per_class"]) == 10
    # both draw the classes in the test split's proportions
    assert good["class_tv"] < 0.06 and bad["class_tv"] < 0.08


def test_intra_fid_of_mismatched_classes_is_large(extractor):
    images, labels = zdata.load("mnist", "test")
    x = images[:2000]
    y = labels[:2000]
    right = evaluate(x, "mnist", "train", extractor="mnist-classifier", labels=y,
                     metrics="intra_fid", announce=False, bootstrap=0, n_reference=10000)
    wrong = evaluate(x, "mnist", "train", extractor="mnist-classifier", labels=(y + 1) % 10,
                     metrics="intra_fid", announce=False, bootstrap=0, n_reference=10000)
    assert right["intra_fid"] < 1 and wrong["intra_fid"] > 30 * right["intra_fid"]
    assert "intra_fid_ci95" not in right  # bootstrap=0: no interval


def test_class_tv_flags_a_single_class_and_not_the_test_images():
    images, labels = zdata.load("mnist", "train")
    ones = images[labels == 1][:500]
    tv = evaluate(ones, "mnist", "test", "mnist-classifier", metrics="class_tv",
                  announce=False, bootstrap=0)["class_tv"]
    assert 0.85 < tv < 0.92  # 1 - P(class 1 in the test split) = 1 - 0.1135
    same = evaluate(zdata.load("mnist", "test")[0][:5000], "mnist", "test", "mnist-classifier",
                    metrics="class_tv", announce=False, bootstrap=0)["class_tv"]
    assert same < 0.02


def test_wilson_interval():
    lo, hi = classes.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert classes.wilson_interval(100, 100)[1] == 1.0
    assert 0.95 < classes.wilson_interval(100, 100)[0] < 0.97


def test_label_metrics_need_labels_and_a_classifier():
    images = zdata.load("mnist", "test")[0][:100]
    with pytest.raises(ConfigError, match="class_accuracy needs the class each sample"):
        evaluate(images, "mnist", "test", "mnist-classifier", metrics="class_accuracy",
                 announce=False)
    uncond = RealImages(_Config(conditional=False))
    with pytest.raises(ConfigError, match="intra_fid needs the class each sample"):
        evaluate(uncond, "mnist", "test", "mnist-classifier", n=100, metrics="intra_fid",
                 announce=False)
    with pytest.raises(ConfigError, match="not class-conditional"):
        evaluate(uncond, "mnist", "test", "mnist-classifier", n=100, metrics="class_tv",
                 labels=torch.zeros(100, dtype=torch.long), announce=False)
    with pytest.raises(ConfigError, match="labels must be integers"):
        evaluate(images, "mnist", "test", "mnist-classifier", metrics="class_accuracy",
                 labels=torch.zeros(7, dtype=torch.long), announce=False)
    assert registry.class_metrics() == ("class_accuracy", "intra_fid", "class_tv")
    assert registry.label_metrics() == ("class_accuracy", "intra_fid")
    assert balanced_labels(5, 3).tolist() == [0, 1, 2, 0, 1]


def test_labels_reach_the_metric_in_the_order_of_the_samples(extractor):
    images, labels = zdata.load("mnist", "test")
    out, _ = compute_metrics(images[:300], images[300:400], extractor, "class_accuracy",
                             labels=labels[:300], bootstrap=0)
    shuffled, _ = compute_metrics(images[:300], images[300:400], extractor, "class_accuracy",
                                  labels=labels[:300].roll(1), bootstrap=0)
    assert out["class_accuracy"] > 0.95 and shuffled["class_accuracy"] < 0.3


def test_the_schema_and_the_table_show_the_class_metrics():
    from zoo.bench import schema
    from zoo.metrics import format_result

    cols = schema.quality_columns()
    for key in ("class_accuracy", "class_accuracy_ci95", "intra_fid", "intra_fid_ci95",
                "class_tv", "class_tv_ci95"):
        assert key in cols
    assert registry.directions()["class_accuracy"] == 1
    assert registry.directions()["intra_fid"] == -1 and registry.directions()["class_tv"] == -1
    assert set(registry.default_metrics()).isdisjoint(registry.class_metrics())
    row = _eval(RealImages(), n=200, metrics="class_accuracy,intra_fid")
    text = format_result(row)
    assert "class acc" in text and "intra FID" in text and text.count("[") == 2


# -- zoo sample --labels ------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch, tmp_path):
    from zoo import cli as zcli

    models = {"cond": RealImages(), "uncond": RealImages(_Config(conditional=False)),
              "same": RealImages(_Config(one_per_class=True))}
    monkeypatch.setattr(zcli, "_load", lambda run, device=None: models[run])
    monkeypatch.setattr(zcli, "run_info", lambda run: {"dataset": "fashion-mnist"})
    monkeypatch.chdir(tmp_path)
    return zcli


def test_sample_labels_draws_one_labelled_row_per_class(cli, capsys):
    assert cli.main(["sample", "cond", "--labels", "0-9", "--per-class", "4", "--scale", "1",
                     "-o", "grid.png"]) == 0
    img = np.asarray(Image.open("grid.png"))
    h = 10 * 30 + 2
    assert img.shape[0] == h and img.shape[1] > 4 * 30 + 2  # rows of 4, a label column
    margin = img.shape[1] - (4 * 30 + 2)
    assert (img[:, :margin] < 128).any()  # the class names are drawn there
    assert "10 classes, 4 per row" in capsys.readouterr().out
    # -n divided among the classes; names of fashion-mnist's classes, e.g. "Sandal"
    assert cli.main(["sample", "cond", "--labels", "1,4,7", "-n", "10", "--scale", "2",
                     "-o", "three.png"]) == 0
    img = np.asarray(Image.open("three.png"))
    assert img.shape[0] == 2 * (3 * 30 + 2)
    assert cli.class_names("x", [5, 9]) == ["Sandal", "Ankle boot"]
    assert cli.main(["sample", "cond", "--labels", "3", "-n", "9", "--scale", "1",
                     "-o", "one.png"]) == 0
    assert np.asarray(Image.open("one.png")).shape == (3 * 30 + 2, 3 * 30 + 2)


def test_sample_labels_are_the_classes_asked_for(cli, extractor):
    from zoo import sampling
    from zoo.metrics.fidelity import _extract

    seen = {}
    real = sampling.save_labelled_grid

    def keep(images, names, *a, **k):
        seen["images"], seen["names"] = images, names
        return real(images, names, *a, **k)

    sampling.save_labelled_grid = keep
    try:
        assert cli.main(["sample", "cond", "--labels", "2,8", "--per-class", "5",
                         "-o", "g.png"]) == 0
    finally:
        sampling.save_labelled_grid = real
    logits = _extract(1, seen["images"], extractor, ["logits"], torch.device("cpu"), 64,
                      False)["logits"]
    assert logits.argmax(1).tolist() == [2] * 5 + [8] * 5
    assert seen["names"] == ["Pullover", "Bag"]


@pytest.mark.parametrize("args, needle", [
    (["uncond", "--labels", "3"], "not class-conditional"),
    (["cond", "--labels", "10"], "labels must lie in 0..9"),
    (["cond", "--labels", "99999999999999999999"], "labels must lie in 0..9"),
    (["cond", "--labels", "3-x"], "--labels takes class numbers"),
    (["cond", "--labels", "5-2"], "runs backwards"),
    (["cond", "--labels", ""], "--labels takes class numbers"),
    (["cond", "--per-class", "3"], "--per-class needs --labels"),
    (["cond", "--labels", "0-9", "--nrow", "3"], "--per-class K, not --nrow"),
])
def test_sample_label_errors_are_one_line(cli, capsys, args, needle):
    assert cli.main(["sample", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and err.startswith("zoo: error:")


@pytest.mark.slow
def test_eval_of_a_conditional_model_prints_class_accuracy_and_intra_fid(cli, capsys):
    assert cli.main(["eval", "cond", "--dataset", "mnist", "--extractor", "mnist-classifier",
                     "-n", "500", "--bootstrap", "20", "--set", "guidance=2"]) == 0
    out = capsys.readouterr().out
    acc = next(line for line in out.splitlines() if "class acc" in line)
    ifid = next(line for line in out.splitlines() if "intra FID" in line)
    assert "[" in acc and "[" in ifid and "class TV" in out
    import json
    from pathlib import Path

    row = json.loads(Path("cond.eval.json").read_text())
    assert row["sampler_options"] == {"guidance": 2} and row["labels"] == "balanced"
    assert row["class_accuracy"] > 0.95 and "memorization_ratio" in row
    # an unconditional model gets class_tv alone
    assert cli.main(["eval", "uncond", "--dataset", "mnist", "--extractor",
                     "mnist-classifier", "-n", "200", "--bootstrap", "0",
                     "--metrics", "fid,class_tv"]) == 0
    assert "class TV" in capsys.readouterr().out
    assert cli.main(["eval", "uncond", "--dataset", "mnist", "--extractor",
                     "mnist-classifier", "-n", "200", "--metrics", "class_accuracy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "class_accuracy needs the class each sample" in err and "\n" not in err


# -- within-class diversity (the collapse alarm) ------------------------------------------

def _clusters(seed: int, per_class: int, spread: float, centres: torch.Tensor) -> tuple:
    """Features of ``len(centres)`` classes, ``per_class`` each, around their centres."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    noise = torch.randn(len(labels), centres.shape[1], generator=g)
    return centres[labels] + spread * noise, labels


def test_diversity_is_one_for_varied_samples_and_flags_a_collapsed_class():
    centres = 10 * torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    real, ref = _clusters(1, 300, 1.0, centres)
    varied, labels = _clusters(2, 100, 1.0, centres)
    out = classes.diversity(real, varied, reference_labels=ref, labels=labels)
    assert 0.95 < out["diversity_min"] <= out["diversity"] < 1.05
    assert out["class_recall_min"] > 0.6 and out["diversity_collapsed"] == []
    assert out["diversity_classes"] == [0, 1, 2, 3]
    assert registry.collapse_warning(out) is None
    # class 2 drawn as one image (with a trace of noise), the rest as before
    collapsed = varied.clone()
    collapsed[labels == 2] = centres[2] + 0.01 * varied[labels == 2]
    bad = classes.diversity(real, collapsed, reference_labels=ref, labels=labels)
    assert bad["diversity_min"] < 0.05 and bad["diversity_per_class"][2] < 0.05
    assert bad["diversity_collapsed"] == [2] and bad["class_recall_per_class"][2] < 0.1
    assert 0.95 < bad["diversity_per_class"][0] < 1.05
    assert "class 2" in registry.collapse_warning(bad)
    # an unconditional model: its samples' classes are their nearest reference class mean
    free = classes.diversity(real, collapsed, reference_labels=ref)
    assert free["diversity_collapsed"] == [2] and free["diversity_per_class"][0] > 0.95


def test_diversity_of_real_images_is_near_one_and_of_repeated_images_is_low(extractor):
    """Real MNIST training images against the test split (the threshold's measurement), and
    the same with each class's samples three images repeated."""
    images, labels = zdata.load("mnist", "train")
    x, y = images[:600], labels[:600].long()
    real = evaluate(x, "mnist", "test", "mnist-classifier", metrics="diversity", labels=y,
                    announce=False, bootstrap=0)
    assert 0.93 < real["diversity"] < 1.07 and real["diversity_min"] > 0.8
    assert real["class_recall_min"] > 0.6 and registry.collapse_warning(real) is None
    few = torch.cat([(y == c).nonzero().flatten()[:3].repeat(20) for c in range(10)])
    rep = evaluate(x[few], "mnist", "test", "mnist-classifier", metrics="diversity",
                   labels=y[few], announce=False, bootstrap=0)
    assert rep["diversity_min"] < registry.COLLAPSE_RATIO and rep["class_recall"] < 0.05
    assert registry.collapse_warning(rep) is not None


def test_diversity_columns_reach_the_rows_and_the_report_warns():
    from zoo.bench import frame, report, schema

    for key in ("diversity", "diversity_min", "class_recall", "class_recall_min"):
        assert key in schema.quality_columns() and registry.directions()[key] == 1
    rows = [dict.fromkeys(schema.COLUMNS) | {"dataset": "mnist", "model": m, "sampler": "default",
                                             "diversity": d, "diversity_min": d}
            for m, d in (("ok", 0.97), ("same", 0.12))]
    notes = report.collapse_notes(frame.frame(rows))
    text = str(notes)
    assert len(notes) == 1 and "same" in text and "0.12" in text and "ok" not in text
    assert report.collapse_notes(frame.frame(rows[:1])) == []


def test_eval_warns_of_a_model_drawing_one_image_per_class(cli, capsys):
    assert cli.main(["eval", "same", "--dataset", "mnist", "--extractor", "mnist-classifier",
                     "-n", "100", "--bootstrap", "0", "--metrics", "diversity"]) == 0
    captured = capsys.readouterr()
    assert "diversity min" in captured.out
    warning = [line for line in captured.err.splitlines() if "collapse" in line]
    assert len(warning) == 1 and warning[0].startswith("zoo eval: warning:")
    assert cli.main(["eval", "cond", "--dataset", "mnist", "--extractor", "mnist-classifier",
                     "-n", "100", "--bootstrap", "0", "--metrics", "diversity"]) == 0
    assert "collapse" not in capsys.readouterr().err
