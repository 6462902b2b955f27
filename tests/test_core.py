"""zoo.core: checkpoints (round trips and refusals) and eval_mode."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import zoo
from zoo.core import CheckpointError, ConfigError, GenerativeModel


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- checkpoints -----------------------------------------------------------------------------


def test_save_load_round_trip_same_samples(tmp_path):
    model = zoo.create("vae-mlp", dataset="mnist", hidden=64)
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = zoo.load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.name == "vae-mlp" and loaded.image_shape == (1, 28, 28)
    assert _same_weights(model, loaded)
    a = model.sample(8, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(8, generator=torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    zoo.create("vae-mlp", dataset="mnist", hidden=64).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        zoo.load(path)


def test_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a zoo model checkpoint"):
        zoo.load(foreign)

    ckpt = zoo.create("vae-mlp", dataset="mnist", hidden=64).checkpoint_dict()
    ckpt["state_dict"]["encoder.1.weight"] = torch.zeros(5, 5)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="does not match"):
        zoo.load(bad)

    ckpt = zoo.create("vae-mlp", dataset="mnist", hidden=64).checkpoint_dict()
    ckpt["class"] = "os:system"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="not a zoo model"):
        zoo.load(bad)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_code_is_refused(tmp_path):
    ckpt = zoo.create("vae-mlp", dataset="mnist", hidden=64).checkpoint_dict()
    ckpt["payload"] = _RunsCode()
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump(ckpt, f)  # torch.save would refuse nothing either; plain pickle is worse
    torch.save(ckpt, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError, match="run code|cannot be read"):
            GenerativeModel.load(p)


def test_eval_mode_restores_the_training_flag_even_on_error():
    from zoo.core import eval_mode

    net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(2, 2))
    with eval_mode(net):
        assert not net.training and not net[0].training
    assert net.training and net[0].training
    net.eval()
    with pytest.raises(RuntimeError), eval_mode(net):
        net.train()
        raise RuntimeError
    assert not net.training


def test_a_class_number_beyond_int64_is_a_config_error():
    """A label too large for int64 is refused as out of range, not an overflow traceback."""
    m = zoo.create("vae-mlp", image_shape=(1, 8, 8), hidden=8, latent_dim=2,
                   conditional=True, num_classes=3)
    for labels in (10**20, [0, 10**20], [-(10**20), 1]):
        with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.2"):
            m.sample(2, labels=labels)
