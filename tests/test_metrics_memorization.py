"""The memorization check: the chunked nearest-neighbour distances against brute force,
its closed forms, and `evaluate` on real MNIST digits (training images fed in as samples
are near copies; held-out ones are not), through `zoo eval`'s formatting too."""

from __future__ import annotations

import pytest
import torch

from zoo import data, metrics
from zoo.core import ConfigError
from zoo.metrics import registry
from zoo.metrics.memorization import (
    closest_pairs,
    memorization,
    nearest,
    nearest_distances,
    pairs_panel,
)

pytestmark = pytest.mark.usefixtures("cache_env")


@pytest.mark.parametrize("m,n,d,chunk,train_chunk", [
    (300, 1000, 16, 64, 128), (7, 5, 3, 2, 2), (50, 1, 8, 1024, 8192), (129, 257, 32, 128, 256),
])
def test_chunked_nearest_distances_match_brute_force(m, n, d, chunk, train_chunk):
    g = torch.Generator().manual_seed(m + n)
    x, y = torch.randn(m, d, generator=g), torch.randn(n, d, generator=g) * 1.5
    got = nearest_distances(x, y, chunk, train_chunk)
    want = torch.cdist(x.double(), y.double()).min(1).values
    assert got.dtype == torch.float32 and got.shape == (m,)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="features"):
        nearest_distances(x, y[:, :2])


def test_memorization_closed_forms():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(2000, 8, generator=g), torch.randn(1000, 8, generator=g)
    copies = memorization(test, train[:300], train=train)
    # exact copies: distance 0 up to cdist's rounding
    assert copies["memorization_ratio"] == pytest.approx(0.0, abs=1e-3)
    assert copies["near_copies"] == 1.0
    # the held-out side as samples: the ratio is 1 and 1% lie below its 1st percentile
    same = memorization(test, test.clone(), train=train)
    assert same["memorization_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert same["near_copies"] == pytest.approx(0.01, abs=0.002)
    far = memorization(test, test + 100.0, train=train)
    assert far["memorization_ratio"] > 10 and far["near_copies"] == 0.0
    with pytest.raises(ValueError, match="median distance to the training set is 0"):
        memorization(train[:100], test, train=train)


def test_registry_declares_memorization():
    m = registry.get("memorization")
    assert (m.needs, m.train, m.default, m.reference) == ("features", True, False, True)
    assert registry.column_keys("memo") == ("memorization_ratio", "near_copies")
    assert registry.directions()["memorization_ratio"] == 1
    assert registry.directions()["near_copies"] == -1
    assert "memorization" not in registry.default_metrics()


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", "train")[0], data.load("mnist", "test")[0]


@pytest.mark.slow
def test_evaluate_memorization_on_real_digits(mnist, tmp_path):
    x_train, x_test = mnist
    # the first 10k training images, the first 1000 test images as the held-out reference
    kw = {"extractor": "mnist-classifier", "n_reference": 1000, "n_train": 10000,
          "cache_dir": tmp_path, "announce": False}
    copied = metrics.evaluate(x_train[:500], "mnist", metrics="fid,memorization", **kw)
    assert copied["n_train"] == 10000 and copied["metrics"] == ["fid", "memorization"]
    # measured 0.0 and 1.0: each sample is its own nearest training image
    assert copied["memorization_ratio"] < 0.1 and copied["near_copies"] > 0.95, copied
    held_out = metrics.evaluate(x_test[1000:1500], "mnist", metrics="memorization", **kw)
    assert held_out["reference_cache"] == "hit"
    # measured 1.002 and 0.002
    assert 0.9 < held_out["memorization_ratio"] < 1.1, held_out
    assert 0.0 <= held_out["near_copies"] <= 0.05, held_out
    # the training features are cached like the reference's, under the train split
    assert len(list(tmp_path.glob("mnist-train-*.json"))) == 1
    text = metrics.format_result(copied)
    assert ("  memorization: distance to the nearest training image, median of the samples "
            "/ median of the test images 0.00 (1: as far as unseen images; below 1: closer "
            "to the training set); near copies 100.0% (500 of 500 samples closer to a "
            "training image than 99% of the test images are)") in text, text
    assert "memo ratio" not in text and "FID" in text
    with pytest.raises(ConfigError, match="reference split other than train"):
        metrics.evaluate(x_test[:100], "mnist", split="train", metrics="memorization", **kw)
    ext = metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)
    with pytest.raises(ConfigError, match="training split's features"):
        metrics.compute_metrics(x_train[:50], x_test[:50], ext, "memorization")


def test_closest_pairs_are_the_nearest_neighbours_closest_first():
    g = torch.Generator().manual_seed(3)
    train, fake = torch.randn(500, 6, generator=g), torch.randn(200, 6, generator=g) * 2
    fake[17] = train[42] + 1e-3  # a near copy: first
    fake[5] = train[7] + 0.05
    d, j = nearest(fake, train, 64, 128)
    full = torch.cdist(fake.double(), train.double())
    assert torch.equal(j, full.argmin(1))
    pairs = closest_pairs(fake, train, k=4, chunk=64)
    assert [p[:2] for p in pairs[:2]] == [(17, 42), (5, 7)]
    assert [p[2] for p in pairs] == sorted(p[2] for p in pairs) and len(pairs) == 4
    for i, t, dist in pairs:
        assert dist == pytest.approx(float(full[i].min()), abs=1e-4) and t == int(j[i])
    # memorization(closest=k) gives the same triples from its own pass
    held_out = torch.randn(100, 6, generator=g)
    out = memorization(held_out, fake, train=train, closest=4)
    assert out["closest_pairs"] == pairs
    assert "closest_pairs" not in memorization(held_out, fake, train=train)


def test_pairs_panel_sets_each_sample_beside_its_training_image():
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 256, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    train = torch.randint(0, 256, (9, 1, 8, 8), generator=g, dtype=torch.uint8)
    pairs = [(4, 2, 0.1), (0, 8, 0.2), (5, 5, 0.3)]
    panel = pairs_panel(samples, train, pairs, per_row=2, scale=1, labels=False)
    assert panel.dtype == torch.uint8 and panel.shape[0] == 1
    # the layout: white ground, gap 10, a gray frame of 2 around sample | 1 px | train
    x, y = 10, 10
    assert torch.equal(panel[:, y + 2:y + 10, x + 2:x + 10], samples[4])
    assert torch.equal(panel[:, y + 2:y + 10, x + 11:x + 19], train[2])
    assert int(panel[0, y, x]) == 128 and int(panel[0, 0, 0]) == 255
    x2 = x + (2 * 8 + 5) + 10  # the second pair, right of the first
    assert torch.equal(panel[:, y + 2:y + 10, x2 + 2:x2 + 10], samples[0])
    assert torch.equal(panel[:, y + 2:y + 10, x2 + 11:x2 + 19], train[8])
    rgb = pairs_panel(samples.expand(-1, 3, -1, -1), train.expand(-1, 3, -1, -1), pairs)
    assert rgb.shape[0] == 3 and rgb.shape[1] > panel.shape[1]  # labelled, scaled to ~64 px
    with pytest.raises(ValueError, match="pairs panel"):
        pairs_panel(samples, train, [])


@pytest.mark.slow
def test_cli_eval_writes_the_memorization_panel(tmp_path, capsys, monkeypatch):
    import functools
    import json

    from PIL import Image

    import zoo
    from zoo.cli import main
    from zoo.train import Trainer

    torch.manual_seed(0)
    run = tmp_path / "vae"
    Trainer(zoo.create("vae-mlp", dataset="mnist", hidden=32), "mnist", run, steps=5,
            progress=False).fit()
    # the first 3000 training images (the CLI takes all 60k)
    monkeypatch.setattr(metrics, "evaluate", functools.partial(metrics.evaluate, n_train=3000))
    capsys.readouterr()
    rc = main(["eval", str(run), "--n", "100", "--metrics", "fid,memorization", "--panel", "5",
               "--extractor", "mnist-classifier", "--device", "cpu", "--bootstrap", "0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads((run / "eval.json").read_text())
    panel = run / "memorization.png"
    assert result["memorization_panel"] == str(panel) and panel.is_file()
    pairs = result["memorization_closest"]
    assert len(pairs) == 5 and [d for _, _, d in pairs] == sorted(d for _, _, d in pairs)
    assert all(0 <= i < 100 and 0 <= j < 3000 for i, j, _ in pairs)
    assert "memorization: distance to the nearest training image" in captured.out
    assert str(panel) in captured.err
    assert Image.open(panel).size[0] > 4 * 2 * 64  # 4 pairs to a row, scaled to ~56 px
    # --panel 0, or no memorization: no panel, no triples
    panel.unlink()
    assert main(["eval", str(run), "--n", "100", "--metrics", "fid,memorization", "--panel",
                 "0", "--extractor", "mnist-classifier", "--device", "cpu",
                 "--bootstrap", "0"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert not panel.exists() and "memorization_closest" not in result
    assert "memorization_panel" not in result
