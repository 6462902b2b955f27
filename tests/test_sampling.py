"""zoo.sampling.write_samples: samples into a PNG grid and/or a .npy array, chunk by chunk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import sampling
from zoo.errors import ConfigError
from zoo.images import MAX_GRID_IMAGES, save_grid, save_labelled_grid
from zoo.sampling import WrittenSamples, npy_path, write_samples

SHAPE = (1, 8, 8)


def _gan(**overrides):
    """A tiny untrained GAN: sampling plumbing needs no training."""
    torch.manual_seed(0)
    return zoo.create("gan-mlp", image_shape=SHAPE, g_hidden=(16,), d_hidden=(16,),
                      latent_dim=4, **overrides).eval()


@pytest.fixture
def gan():
    return _gan()


@pytest.fixture
def cond():
    return _gan(conditional=True, num_classes=3)


def _calls(model, monkeypatch) -> list[int]:
    """The batch sizes ``model.sample`` is called with, recorded as it runs."""
    sizes, real = [], model.sample

    def sample(n, **kw):
        sizes.append(n)
        return real(n, **kw)

    monkeypatch.setattr(model, "sample", sample)
    return sizes


def test_the_array_is_the_chunks_drawn_with_one_generator(gan, tmp_path, monkeypatch):
    sizes = _calls(gan, monkeypatch)
    w = write_samples(gan, 20, tmp_path / "g.png", npy=tmp_path / "s", seed=3, batch_size=7,
                      scale=1)
    assert sizes == [7, 7, 6]
    assert w == WrittenSamples(20, 20, tmp_path / "g.png", tmp_path / "s.npy", None)
    gen = torch.Generator().manual_seed(3)
    expected = torch.cat([gan.sample(b, generator=gen) for b in (7, 7, 6)])
    assert np.array_equal(np.load(tmp_path / "s.npy"), expected.numpy())
    save_grid(expected, tmp_path / "expected.png", scale=1)
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "expected.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expected.png", "g.png", "s.npy"]


def test_a_generator_draws_what_its_seed_draws(gan, tmp_path):
    write_samples(gan, 5, npy=tmp_path / "a.npy", seed=11)
    write_samples(gan, 5, npy=tmp_path / "b.npy", generator=torch.Generator().manual_seed(11))
    write_samples(gan, 5, npy=tmp_path / "c.npy", seed=12)
    a, b, c = (np.load(tmp_path / f"{k}.npy") for k in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (5, *SHAPE)


def test_chunks_are_bounded_in_bytes(gan, tmp_path, monkeypatch):
    monkeypatch.setattr(sampling, "CHUNK_BYTES", 3 * 64)  # three 8x8 images
    sizes = _calls(gan, monkeypatch)
    write_samples(gan, 10, tmp_path / "g.png")
    assert sizes == [3, 3, 3, 1]


def test_a_grid_alone_and_the_auto_scale(gan, tmp_path):
    w = write_samples(gan, 9, tmp_path / "g.png")
    assert w.array is None and w.labels is None and w.shown == 9
    # 8x8 images are drawn 4x: each at least 28 pixels
    assert Image.open(w.grid).size == ((3 * 10 + 2) * 4, (3 * 10 + 2) * 4)


def test_labels_are_asked_for_and_saved_beside_the_array(cond, tmp_path, monkeypatch):
    asked = []
    real = cond.sample
    monkeypatch.setattr(cond, "sample", lambda n, **kw: asked.append(kw["labels"]) or
                        real(n, **kw))
    labels = torch.tensor([0, 0, 2, 2, 1, 1])
    w = write_samples(cond, 6, tmp_path / "g.png", npy=tmp_path / "s.npy", labels=labels,
                      names=["zero", "two", "one"], nrow=2, batch_size=4, scale=1)
    assert w.labels == tmp_path / "s.labels.npy"
    saved = np.load(w.labels)
    assert saved.dtype == np.int64 and saved.tolist() == labels.tolist()
    assert [t.tolist() for t in asked] == [[0, 0, 2, 2], [1, 1]]
    images = torch.from_numpy(np.load(w.array))
    save_labelled_grid(images, ["zero", "two", "one"], tmp_path / "expected.png", nrow=2)
    assert w.grid.read_bytes() == (tmp_path / "expected.png").read_bytes()
    one = write_samples(cond, 4, npy=tmp_path / "one.npy", labels=2)  # one class for all
    assert np.load(one.labels).tolist() == [2] * 4


def test_more_than_a_grid_shows_needs_an_array(gan, tmp_path, monkeypatch):
    n = MAX_GRID_IMAGES + 5
    with pytest.raises(ConfigError, match="more than a grid shows"):
        write_samples(gan, n, tmp_path / "g.png")
    w = write_samples(gan, n, tmp_path / "g.png", npy=tmp_path / "s.npy", scale=1)
    assert w.shown == MAX_GRID_IMAGES and np.load(w.array).shape == (n, *SHAPE)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"nrow": 0}, "nrow must be >= 1"),
    ({"grid": None, "npy": None}, "give grid= or npy="),
    ({"labels": 1}, "not class-conditional"),
    ({"names": ["a", "b"], "nrow": 3}, "labelled rows"),
    ({"nrow": 100_000, "scale": 64}, "pixels"),
    ({"scale": 0}, "scale"),
])
def test_refused_before_anything_is_drawn_or_written(gan, tmp_path, monkeypatch, kwargs,
                                                      message):
    sizes = _calls(gan, monkeypatch)
    call = {"n": 4, "grid": tmp_path / "g.png", "npy": tmp_path / "s.npy", **kwargs}
    with pytest.raises(ConfigError, match=message):
        write_samples(gan, call.pop("n"), call.pop("grid"), **call)
    assert sizes == [] and not list(tmp_path.iterdir())


def test_refused_when_the_disk_cannot_hold_the_array(gan, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 0, 1))
    with pytest.raises(ConfigError, match="free"):
        write_samples(gan, 10, npy=tmp_path / "s.npy")
    assert not list(tmp_path.iterdir())


def test_a_bad_sample_leaves_no_file(gan, tmp_path, monkeypatch):
    monkeypatch.setattr(gan, "sample", lambda n, **kw: torch.zeros(n, *SHAPE))
    with pytest.raises(ConfigError, match=r"returned torch.float32 .* not uint8"):
        write_samples(gan, 4, tmp_path / "g.png", npy=tmp_path / "s.npy")
    assert not list(tmp_path.iterdir())  # neither the array nor its temporary file


def test_npy_path_appends_the_suffix_as_numpy_does(tmp_path):
    assert npy_path(tmp_path / "s") == tmp_path / "s.npy"
    assert npy_path(tmp_path / "s.npy") == tmp_path / "s.npy"
    assert npy_path("a.b") == npy_path("a.b.npy")


def test_sampler_options_reach_the_model_whatever_their_names(gan, tmp_path, monkeypatch):
    """Options named like write_samples's own arguments (batch_size, seed, ...) are the
    sampler's: passed to ``model.sample`` as given, as ``zoo sample --set`` passes them."""
    seen = []
    real = gan.sample

    def sample(n, **kw):
        seen.append({k: v for k, v in kw.items() if k != "generator"})
        return real(n, generator=kw["generator"])

    monkeypatch.setattr(gan, "sample", sample)
    options = {"batch_size": 2, "seed": 5, "nrow": 1, "scale": 3, "progress": True}
    write_samples(gan, 3, npy=tmp_path / "s.npy", batch_size=2, options=options)
    assert seen == [options, options]


def test_sigterm_while_drawing_an_array_leaves_no_file(gan, tmp_path, monkeypatch, capsys,
                                                       stop_signals):
    """`zoo sample --npy` stopped by SIGTERM midway: exit 143 with one line, and neither the
    array, its hidden temporary file nor the grid is left behind."""
    import os
    import signal

    from zoo.cli import main

    gan.save(tmp_path / "gan.pt")
    real, calls = type(gan).sample, []

    def sample(self, n, **kw):
        calls.append(n)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, n, **kw)

    monkeypatch.setattr(type(gan), "sample", sample)
    out = tmp_path / "out"
    code = main(["sample", str(tmp_path / "gan.pt"), "-n", "10000", "--npy",
                 str(out / "s.npy"), "-o", str(out / "g.png")])
    assert code == 143 and len(calls) == 2
    assert capsys.readouterr().err.strip() == "zoo: stopped by SIGTERM"
    assert not list(out.iterdir())
