"""`zoo extractor train` (zoo.metrics.extractor_training): a deterministic classifier of any
labelled dataset, whose weights `zoo eval --extractor` reads."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo import data
from zoo.cli import main
from zoo.metrics import extractor_training as et
from zoo.metrics import features as feats

pytestmark = pytest.mark.usefixtures("cache_env")

TINY = ["--epochs", "1", "--limit", "256", "--batch-size", "64", "--channels", "8,16",
        "--feature-dim", "16", "--threads", "1"]


def test_training_is_deterministic_and_writes_a_loadable_classifier(tmp_path):
    opts = et.TrainOptions(epochs=1, limit=512, batch_size=64, threads=1)
    a = et.train("mnist", opts, tmp_path / "a")
    b = et.train("mnist", opts, tmp_path / "b")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a" / "mnist-classifier.pt").read_bytes() == \
        (tmp_path / "b" / "mnist-classifier.pt").read_bytes()
    net, card = feats.load_classifier(tmp_path / "a" / "mnist-classifier.pt")
    assert card["sha256"] == a["sha256"] and card["train"]["limit"] == 512
    assert card["test_images"] == 512 and 0.0 <= card["test_accuracy"] <= 1.0
    assert card["command"] == "zoo extractor" and card["kind"] == "classifier"
    assert net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))[1].shape == (2, 10)


def test_training_takes_any_channel_count_and_size(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (256,), generator=g)
    images = (labels[:, None, None, None] * 60 + torch.randint(0, 40, (256, 3, 20, 24),
                                                                 generator=g)).to(torch.uint8)
    info = data.DatasetInfo("toy", (3, 20, 24), 4, {"train": 256, "test": 256}, {}, {})
    monkeypatch.setattr(et.zdata, "load", lambda *a, **k: (images, labels))
    monkeypatch.setattr(et.zdata, "dataset_info", lambda name: info)
    card = et.train("toy", et.TrainOptions(epochs=4, batch_size=32, threads=1), tmp_path)
    assert card["image_shape"] == [3, 20, 24] and card["config"]["in_channels"] == 3
    net, _ = feats.load_classifier(tmp_path / "toy-classifier.pt")
    f, logits = net(images[:5])
    assert f.shape == (5, 128) and logits.shape == (5, 4)
    assert card["test_accuracy"] > 0.9  # four well separated brightness classes


def test_zoo_extractor_train_writes_weights_zoo_eval_uses(tmp_path, capsys, one_thread):
    ext = tmp_path / "ext"
    assert main(["extractor", "train", "--dataset", "mnist", *TINY, "--out", str(ext),
                 "--no-card"]) == 0
    weights = ext / "mnist-classifier.pt"
    assert f"wrote {weights}" in capsys.readouterr().out
    assert weights.is_file() and (ext / "mnist-classifier.json").is_file()
    torch.manual_seed(0)
    zoo.create("vae-mlp", dataset="mnist", hidden=8, latent_dim=2).save(tmp_path / "m.pt")
    result = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "m.pt"), "--dataset", "mnist", "-n", "32",
                 "--metrics", "fid", "--bootstrap", "0", "--extractor", str(weights),
                 "--json", str(result)]) == 0
    row = json.loads(result.read_text())
    card = json.loads((ext / "mnist-classifier.json").read_text())
    assert row["extractor_weights_sha256"] == card["sha256"] and row["fid"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--channels", "8,x"], "--channels takes comma-separated integers"),
])
def test_zoo_extractor_train_refuses_bad_options_in_one_line(tmp_path, capsys, args, needle):
    assert main(["extractor", "train", "--dataset", "mnist", *args,
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and needle in err and "\n" not in err
