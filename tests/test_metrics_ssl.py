"""`zoo extractor DATA` (zoo.metrics.ssl): a self-supervised encoder for unlabelled data,
cached by the data's content hash and found by `zoo eval` without flags; the random
baseline; what an encoder without class logits refuses."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import data
from zoo.cli import _extractor_argv, main
from zoo.metrics import features as feats
from zoo.metrics import ssl

pytestmark = pytest.mark.usefixtures("cache_env", "one_thread")

TINY = dict(steps=3, batch_size=8, channels=(4, 8), feature_dim=8, threads=1)
TINY_ARGS = ["--steps", "3", "--batch-size", "8", "--channels", "4,8", "--feature-dim", "8",
             "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """80 unlabelled 12x12 RGB images (8 held out): coloured squares at random places."""
    root = tmp_path_factory.mktemp("own") / "crops"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(80):
        im = np.full((12, 12, 3), rng.integers(0, 80, 3), dtype=np.uint8)
        y, x = rng.integers(0, 6, 2)
        im[y:y + 6, x:x + 6] = rng.integers(100, 256, 3)
        Image.fromarray(im).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def model_file(folder, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    zoo.create("vae-mlp", dataset=str(folder), hidden=8, latent_dim=2).save(path)
    return path


def test_nt_xent_is_log_2b_minus_1_when_no_view_is_told_apart():
    assert ssl.nt_xent(torch.ones(8, 5), 0.2).item() == pytest.approx(math.log(7))
    apart = torch.eye(4).repeat(2, 1)  # each image's two views equal, images orthogonal
    assert ssl.nt_xent(apart, 0.1).item() < 1e-3


def test_augment_is_seeded_and_keeps_the_shape_in_the_encoder_range():
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    opts = ssl.SSLOptions()
    a = ssl.augment(x, opts, True, torch.Generator().manual_seed(1))
    b = ssl.augment(x, opts, True, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, ssl.augment(x, opts, True, torch.Generator().manual_seed(2)))


def test_training_is_deterministic_and_its_card_records_the_data(folder, tmp_path):
    a = ssl.train(str(folder), ssl.SSLOptions(**TINY), tmp_path / "a")
    b = ssl.train(str(folder), ssl.SSLOptions(**TINY), tmp_path / "b")
    assert a["sha256"] == b["sha256"] and a["final_loss"] == b["final_loss"]
    assert a["dataset_sha256"] == data.content_hash(folder, "train")
    assert (a["kind"], a["objective"], a["steps"], a["seed"]) == ("ssl", "simclr-nt-xent", 3, 0)
    assert 0 < a["final_loss"] < 2 * a["chance_loss"]
    net, card = feats.load_classifier(tmp_path / "a" / "crops-ssl.pt")
    features, logits = net(torch.zeros(2, 3, 12, 12, dtype=torch.uint8))
    assert features.shape == (2, 8) and logits is None and card["name"] == "crops-ssl"
    ext = feats.resolve_extractor(str(tmp_path / "a" / "crops-ssl.pt"), str(folder))
    assert ext.kind == "ssl" and not ext.logits and set(ext.layers) == {"fid", "kid", "prc"}


def test_random_extractor_is_fixed_for_a_seed_and_has_no_logits(folder):
    ext = feats.resolve_extractor("random", str(folder))
    again = feats.resolve_extractor("random", str(folder))
    assert ext.name == feats.RANDOM and ext.sha256 == again.sha256 and not ext.logits
    net, card = feats.load_classifier(ext.weights)
    assert card["image_shape"] == [3, 12, 12] and card["kind"] == "random"
    f = net(torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8))[0]
    assert 1e-2 < f.std().item() < 1e2  # He init: features on a usable scale


def test_eval_without_a_made_extractor_names_the_command_that_makes_it(
        folder, model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    assert main(["eval", str(model_file), "--dataset", str(folder), "-n", "8",
                 "--bootstrap", "0", "--json", str(model_file.with_suffix(".x.json"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error: no feature extractor for") and "\n" not in err
    assert f"`zoo extractor {folder}`" in err and "--extractor auto" in err


def test_zoo_extractor_data_is_cached_and_zoo_eval_uses_it_without_flags(
        folder, model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert main(["extractor", str(folder), *TINY_ARGS, "--out", str(tmp_path / "ext"),
                 "--no-card"]) == 0
    out = capsys.readouterr().out
    cached = feats.cached_extractor(str(folder))
    assert cached is not None and cached.name == "crops-ssl.pt" and str(cached.parent) in out
    card = json.loads((tmp_path / "ext" / "crops-ssl.json").read_text())
    assert cached.read_bytes() == (tmp_path / "ext" / "crops-ssl.pt").read_bytes()
    result = tmp_path / "eval.json"
    assert main(["eval", str(model_file), "--dataset", str(folder), "-n", "8",
                 "--bootstrap", "0", "--panel", "0", "--json", str(result)]) == 0
    err = capsys.readouterr().err
    assert "feature extractor crops-ssl" in err and "the extractor made for this data" in err
    assert "is left out: the extractor crops-ssl is an encoder without class logits" in err
    row = json.loads(result.read_text())
    assert row["extractor"] == "crops-ssl" and row["extractor_kind"] == "ssl"
    assert row["extractor_weights_sha256"] == card["sha256"] and row["fid"] >= 0
    assert row.get("is") is None and "class_tv" not in row


def test_extractor_auto_makes_it_on_request(folder, model_file, tmp_path, capsys,
                                            monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ssl, "SSLOptions", functools.partial(ssl.SSLOptions, **TINY))
    assert feats.cached_extractor(str(folder)) is None
    assert main(["eval", str(model_file), "--dataset", str(folder), "-n", "8", "--metrics",
                 "fid", "--bootstrap", "0", "--extractor", "auto",
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "making one" in capsys.readouterr().err
    made = feats.cached_extractor(str(folder))
    assert json.loads((tmp_path / "e.json").read_text())["extractor_weights_sha256"] == \
        json.loads(made.with_suffix(".json").read_text())["sha256"]


@pytest.mark.parametrize("args, needle", [
    (["--metrics", "is", "--extractor", "random"], "is read class logits, but the extractor "
                                                   "random-encoder is an encoder"),
    (["--metrics", "fid,class_tv", "--extractor", "random"], "class_tv read the dataset "
                                                             "classifier's classes"),
])
def test_an_encoder_refuses_what_needs_logits_in_one_line(folder, model_file, capsys, args,
                                                          needle):
    assert main(["eval", str(model_file), "--dataset", str(folder), "-n", "8",
                 "--bootstrap", "0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error:") and needle in err and "\n" not in err


def test_zoo_extractor_without_data_or_with_bad_options_is_one_line(capsys):
    for argv, needle in ((["extractor", "train"], "zoo extractor needs DATA"),
                         (["extractor", "mnist", "--steps", "0"], "--steps must be >= 1")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("zoo: error:") and needle in err and "\n" not in err


def test_extractor_data_is_the_train_action():
    actions = {"train": None, "card": None}
    assert _extractor_argv(["extractor", "d"], actions) == ["extractor", "train", "d"]
    assert _extractor_argv(["--root", "r", "extractor", "d", "--out", "o"], actions) == \
        ["--root", "r", "extractor", "train", "d", "--out", "o"]
    for kept in (["extractor", "card", "dir"], ["extractor", "train", "--dataset", "d"],
                 ["extractor", "--help"], ["eval", "extractor"]):
        assert _extractor_argv(kept, actions) == kept


def test_labelled_data_gets_a_classifier_and_unlabelled_replaces_it_in_the_cache(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "shapes"
    for k, colour in enumerate(((250, 20, 20), (20, 20, 250))):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(20):
            im = np.full((12, 12, 3), colour, dtype=np.uint8)
            im[i % 12] = 128
            Image.fromarray(im).save(root / f"c{k}" / f"{i:02d}.png")
    tiny = ["--channels", "4,8", "--feature-dim", "8", "--threads", "1", "--batch-size", "8"]
    assert main(["extractor", str(root), "--epochs", "1", "--no-card", *tiny]) == 0
    assert "test accuracy" in capsys.readouterr().out
    cached = feats.cached_extractor(str(root))
    assert cached.name == "shapes-classifier.pt"
    assert feats.resolve_extractor(None, str(root), announce=False).logits
    assert main(["extractor", str(root), "--unlabelled", "--steps", "2", "--no-card", *tiny]) == 0
    assert sorted(p.name for p in feats.cached_extractor(str(root)).parent.iterdir()) == \
        ["shapes-ssl.json", "shapes-ssl.pt"]
