"""Checkpoints, the registry and the Trainer: round trips, refusals, resume and the NaN guard."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import zoo
from zoo import data
from zoo.core import CheckpointError, ConfigError, GenerativeModel, TrainingDiverged
from zoo.train import CHECKPOINT_FILE, MODEL_FILE, TrainConfig, Trainer, load_run


@pytest.fixture(scope="module")
def mnist_subset() -> torch.Tensor:
    x, _ = data.load("mnist", "train")
    return x[:2048]


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


# -- registry -------------------------------------------------------------------------------


def test_registry_errors_list_valid_choices():
    assert {"vae-mlp", "vae-conv"} <= set(zoo.available())
    with pytest.raises(ConfigError, match="available models: .*vae-mlp"):
        zoo.create("vae-huge", dataset="mnist")
    with pytest.raises(ConfigError, match="valid options: .*latent_dim"):
        zoo.create("vae-mlp", dataset="mnist", latent=3)
    with pytest.raises(ConfigError, match="valid datasets"):
        zoo.create("vae-mlp", dataset="imagenet")
    with pytest.raises(ConfigError, match="discretized-logistic"):
        zoo.create("vae-mlp", dataset="mnist", likelihood="gaussian")


def test_coerce_parses_cli_values():
    from zoo.registry import parse_value

    assert parse_value("vae-conv", "channels", "16,32") == (16, 32)
    assert parse_value("vae-mlp", "lr", "3e-4") == 3e-4
    assert parse_value("vae-mlp", "likelihood", "bernoulli") == "bernoulli"
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_value("vae-mlp", "latent_dim", "many")
    with pytest.raises(ConfigError, match="valid: mlp, conv"):
        parse_value("vae-mlp", "arch", "rnn")


# -- trainer ---------------------------------------------------------------------------------


def _trainer(out, images, **options):
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=64)
    opts = dict(batch_size=64, checkpoint_every=5, log_every=2, progress=False)
    opts.update(options)
    progress = opts.pop("progress")
    return Trainer(model, "mnist", out, images=images, progress=progress, **opts)


def test_resume_equals_uninterrupted_run(tmp_path, mnist_subset):
    full = _trainer(tmp_path / "full", mnist_subset, steps=40)
    full.fit()  # 40 steps of 64 over 2048 images: crosses an epoch boundary

    first = _trainer(tmp_path / "split", mnist_subset, steps=17)
    first.fit()
    resumed = Trainer.resume(tmp_path / "split", images=mnist_subset, steps=40, progress=False)
    summary = resumed.fit()
    assert summary["steps"] == 40
    assert _same_weights(full.model, resumed.model)
    assert _same_weights(load_run(tmp_path / "full"), load_run(tmp_path / "split"))
    rows = (tmp_path / "split" / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and rows[-1].startswith("40,") and len(rows) == 21


def test_interrupted_run_keeps_its_state_and_resumes(tmp_path, mnist_subset):
    full = _trainer(tmp_path / "full", mnist_subset, steps=12)
    full.fit()
    broken = _trainer(tmp_path / "cut", mnist_subset, steps=12)

    def interrupt(trainer):
        if trainer.step == 7:
            raise KeyboardInterrupt

    broken.hook = interrupt
    with pytest.raises(KeyboardInterrupt):
        broken.fit()
    state = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 7
    resumed = Trainer.resume(tmp_path / "cut", images=mnist_subset, progress=False)
    resumed.fit()
    assert _same_weights(full.model, resumed.model)


def test_existing_run_needs_resume(tmp_path, mnist_subset):
    _trainer(tmp_path / "r", mnist_subset, steps=2).fit()
    with pytest.raises(ConfigError, match="resume"):
        _trainer(tmp_path / "r", mnist_subset, steps=2).fit()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, mnist_subset):
    trainer = _trainer(tmp_path / "nan", mnist_subset, steps=30, grad_clip=None)

    def poison(t):
        if t.step == 12:
            with torch.no_grad():
                t.model.decoder[0].weight[0, 0] = float("nan")

    trainer.hook = poison
    with pytest.raises(TrainingDiverged, match=r"step 13.*last good checkpoint \(step 10\)"):
        trainer.fit()
    state = torch.load(tmp_path / "nan" / CHECKPOINT_FILE, weights_only=True)
    assert state["step"] == 10
    kept = load_run(tmp_path / "nan")
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert (tmp_path / "nan" / MODEL_FILE).is_file()


def test_ema_weights_are_used_for_sampling(tmp_path, mnist_subset):
    trainer = _trainer(tmp_path / "ema", mnist_subset, steps=6, ema_decay=0.5)
    trainer.fit()
    saved = load_run(tmp_path / "ema")
    assert not _same_weights(saved, trainer.model.cpu())  # model.pt holds the average
    trainer = _trainer(tmp_path / "noema", mnist_subset, steps=6, ema_decay=None)
    trainer.fit()
    assert _same_weights(load_run(tmp_path / "noema"), trainer.model.cpu())


def test_bad_training_options():
    with pytest.raises(ConfigError, match="budget"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="valid options"):
        _trainer("/tmp/unused", torch.zeros(8, 1, 28, 28, dtype=torch.uint8), steps=1, lr=3)
    with pytest.raises(ConfigError, match="built for images"):
        _trainer("/tmp/unused", torch.zeros(8, 3, 32, 32, dtype=torch.uint8), steps=1)


def test_trainer_evaluates_with_the_evaluator_it_is_given(tmp_path, mnist_subset):
    calls, seen = [], []

    class Counting:
        """Counts the images it is fed; its 'FID' is that count."""

        extractor = type("E", (), {"name": "counter", "sha256": "0" * 64})()

        def __init__(self, dataset, split, extractor, *, device, root):
            calls.append((str(dataset), split, extractor, str(device), root))
            self.n = 0

        def update(self, images):
            assert images.dtype == torch.uint8
            self.n += images.shape[0]

        def compute(self):
            seen.append(self.n)
            return float(self.n)

        def reset(self):
            self.n = 0

    _trainer(tmp_path / "ev", mnist_subset, steps=4, eval_every=2, eval_n=10,
             eval_extractor="mnist-classifier", evaluator=Counting).fit()
    assert calls == [("mnist", "test", "mnist-classifier", "cpu", None)]
    assert seen == [10, 10]
    rows = (tmp_path / "ev" / "eval.csv").read_text().splitlines()
    assert rows[1:] == [f"{s},10.0,10,counter,{'0' * 64}" for s in (2, 4)]


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
