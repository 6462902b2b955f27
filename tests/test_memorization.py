"""The memorization check: the chunked nearest-neighbour distances against brute force,
its closed forms, and `evaluate` on real MNIST digits (training images fed in as samples
are near copies; held-out ones are not), through `zoo eval`'s formatting too."""

from __future__ import annotations

import pytest
import torch

from zoo import data, metrics
from zoo.core import ConfigError
from zoo.metrics import registry
from zoo.metrics.memorization import memorization, nearest_distances


@pytest.fixture(scope="module", autouse=True)
def cache_env(tmp_path_factory):
    """One fresh metrics cache for the module; no InceptionV3 weights anywhere."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE", str(tmp_path_factory.mktemp("zoo-cache")))
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        mp.delenv("ZOO_INCEPTION_WEIGHTS", raising=False)
        yield


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
    assert "  memo ratio 0.0000" in text and "  near copy  1.0000" in text and "FID" in text
    with pytest.raises(ConfigError, match="reference split other than train"):
        metrics.evaluate(x_test[:100], "mnist", split="train", metrics="memorization", **kw)
    ext = metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)
    with pytest.raises(ConfigError, match="training split's features"):
        metrics.compute_metrics(x_train[:50], x_test[:50], ext, "memorization")
