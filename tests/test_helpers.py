"""The tests' own helpers: the tiny suite builder and its TOML emitter."""

from __future__ import annotations

import math
import tomllib

import pytest
import torch
from helpers import (
    TINY_SUITE,
    class_accuracy_14,
    mnist_14,
    tiny_model,
    tiny_suite,
    tiny_suite_dict,
    to_toml,
)

from zoo.bench.suite import load_suite


def test_the_tiny_suite_is_a_suite(tmp_path):
    text = tiny_suite()
    assert tomllib.loads(text) == TINY_SUITE
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    suite = load_suite(path)
    assert suite.name == "tiny" and suite.datasets == ["mnist"]
    assert [m.id for m in suite.models] == ["vae-mlp"] and suite.models[0].budget.steps == 3


def test_overrides_replace_keys_merge_tables_and_none_deletes():
    suite = tiny_suite_dict(name=None, seed=7, datasets=["mnist", "fashion-mnist"],
                            evaluation={"n_samples": 9, "extractor": None, "bootstrap": 5},
                            timing={"batch_sizes": [1, 4]},
                            defaults={"budget": {"flops": 1.2e10}},
                            models=[tiny_model(budget=None, train={"ema_decay": 0.5})])
    assert "name" not in suite and suite["seed"] == 7
    assert suite["datasets"] == ["mnist", "fashion-mnist"]
    evaluation = {**TINY_SUITE["evaluation"], "n_samples": 9, "bootstrap": 5}
    del evaluation["extractor"]
    assert suite["evaluation"] == evaluation
    assert suite["timing"] == {"batch_sizes": [1, 4], "repeats": 1, "warmup": 0}
    assert suite["defaults"] == {"budget": {"flops": 1.2e10}}
    (model,) = suite["models"]
    assert "budget" not in model and model["train"] == {"ema_decay": 0.5}
    assert model["config"] == TINY_SUITE["models"][0]["config"]
    # the base is not changed by any of it
    assert TINY_SUITE["name"] == "tiny" and "budget" in TINY_SUITE["models"][0]
    assert TINY_SUITE["evaluation"]["extractor"] == "classifier"
    assert "models" not in tiny_suite_dict(models=None)
    assert tomllib.loads(tiny_suite(evaluation=None, timing=None)).keys() == {
        "name", "seed", "device", "datasets", "models"}


def test_the_emitter_round_trips_what_suites_use():
    doc = {
        "name": 'q"uote \\ back\tslash\x01\x7f é ☃',
        "seed": -3,
        "flag": False,
        "floats": [1.2e10, 1e-5, -0.0, 0.1, 3.0, 1e300, math.inf, -math.inf],
        "datasets": ["mnist", {"path": "my images", "test_size": 20}],
        "empty": [],
        "odd key": 1,
        "evaluation": {"curve": [0.25, 0.5], "metrics": ["fid"], "on": True},
        "defaults": {"budget": {"flops": 6e12}, "train": {"ema_decay": 0.0}},
        "models": [
            {"name": "ddpm", "config": {"channel_mult": [1, 2], "mid_attention": False,
                                        "nested": {"deep": {"x": 1}}},
             "samplers": [{"sampler": "ddim", "steps": 4}, {"sampler": "ddpm"}], "nll": {}},
            {"name": "gan-mlp", "id": "a.b"},
        ],
    }
    text = to_toml(doc)
    assert tomllib.loads(text) == doc, text
    assert "[evaluation]\n" in text and text.count("[[models]]\n") == 2
    assert 'samplers = [{ sampler = "ddim", steps = 4 }, { sampler = "ddpm" }]' in text
    with pytest.raises(TypeError, match="no TOML for None"):
        to_toml({"seed": None})


def test_the_fixture_writes_the_suite(tiny_suite, tmp_path):
    path = tiny_suite(seed=5)
    assert path == tmp_path / "suite.toml"
    assert tomllib.loads(path.read_text()) == {**TINY_SUITE, "seed": 5}
    other = tiny_suite(tmp_path / "other.toml", timing={"repeats": 3})
    assert other == tmp_path / "other.toml"
    assert tomllib.loads(other.read_text())["timing"]["repeats"] == 3


def test_the_14x14_class_yardstick_reads_real_pooled_digits():
    """The classifier that grades the conditional models trained at 14x14 labels real test
    digits pooled to 14x14 and shown it at 28x28 (measured 0.967 of the first 2000), and
    labels them at chance when asked for the wrong class."""
    x, y = mnist_14("test")
    assert x.shape == (10000, 1, 14, 14) and x.dtype == torch.uint8
    assert class_accuracy_14(x[:2000], y[:2000]) > 0.95
    assert class_accuracy_14(x[:2000], (y[:2000] + 1) % 10) < 0.05
