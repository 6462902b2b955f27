"""zoo.train: the Trainer's resume, interruption, NaN guard, EMA, options and evaluator."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_DDPM

import zoo
from zoo import data as zdata
from zoo.core import Batch, ConfigError, TrainingDiverged
from zoo.models.diffusion import DDPM
from zoo.train import CHECKPOINT_FILE, MODEL_FILE, TrainConfig, Trainer, load_run


@pytest.fixture(scope="module")
def mnist_subset() -> torch.Tensor:
    x, _ = zdata.load("mnist", "train")
    return x[:2048]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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
    assert rows[0].startswith("step,")
    # every log_every=2 steps, and the last step of the first fit (17): a run logs its last
    assert [int(r.split(",")[0]) for r in rows[1:]] == [*range(2, 17, 2), 17, *range(18, 41, 2)]


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


def test_a_folder_that_is_not_a_run_keeps_its_files(tmp_path, mnist_subset, monkeypatch,
                                                    capsys):
    """Training into a folder that is not a zoo run but holds files a run writes (a
    project's README.md, say) is refused, naming them, and they are left as they were; a
    folder of other files is trained into."""
    from zoo.cli import main

    mine = {"README.md": "my project", "samples.png": "my figure", "notes.txt": "kept"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=r"not a zoo run .* holds README.md, samples.png, "
                                          r"which training would replace"):
        _trainer(tmp_path, mnist_subset, steps=1).fit()
    monkeypatch.chdir(tmp_path)
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--steps", "1", "--set",
                 "hidden=16", "--out", "."]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("zoo: ")]
    assert len(errors) == 1 and "README.md, samples.png" in errors[0]
    assert "empty or new directory (--out)" in errors[0]
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == mine
    (tmp_path / "README.md").unlink()
    (tmp_path / "samples.png").unlink()
    _trainer(tmp_path, mnist_subset, steps=1).fit()
    assert (tmp_path / "notes.txt").read_text() == "kept" and (tmp_path / "run.json").is_file()


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


# -- batches carry labels ------------------------------------------------------------------


class _Recorder(DDPM):
    """A DDPM that keeps the batches its train_step sees."""

    def train_step(self, x, optimizers):
        self.seen = [*getattr(self, "seen", []), x]
        return super().train_step(x, optimizers)


def test_labels_flow_from_the_dataset_through_the_trainer_into_train_step(tmp_path):
    images, labels = zdata.load("mnist", "test")
    images, labels = images[:64], labels[:64]
    torch.manual_seed(0)
    m = _Recorder(DDPM.Config(**TINY_DDPM), (1, 28, 28))
    Trainer(m, "mnist", tmp_path / "run", images=images, labels=labels, batch_size=16,
            steps=3, progress=False, ema_decay=0.0).fit()
    assert len(m.seen) == 3
    for batch in m.seen:
        assert isinstance(batch, Batch)
        # each image arrives with its own label: look the images up in the dataset
        for img, lab in zip(batch.images, batch.labels, strict=True):
            i = next(j for j in range(64) if torch.equal(images[j], img.cpu()))
            assert int(lab) == int(labels[i])


def test_unlabelled_images_train_with_label_minus_one(tmp_path):
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(0)
    m = _Recorder(DDPM.Config(**TINY_DDPM), (1, 28, 28))
    Trainer(m, "mnist", tmp_path / "run", images=images, batch_size=16, steps=1,
            progress=False, ema_decay=0.0).fit()
    assert m.seen[0].labels.tolist() == [-1] * 16


def test_ddp_shards_slice_labels_like_images():
    from zoo.train import _ShardedBatches

    images = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1)
    labels = torch.arange(32) * 10
    for rank in (0, 1):
        it = _ShardedBatches(images, 8, rank, 2, labels=labels)
        b = next(it)
        assert torch.equal(b.labels, b.images.view(-1).long() * 10)
        assert b.images.shape[0] == 4


def test_out_that_is_a_file_is_said_to_be_one(tmp_path):
    """It was reported as a lock that could not be taken ("is it writable?")."""
    (tmp_path / "notes").write_text("mine")
    images = zdata.load("mnist", "train")[0][:32]
    for out, where in ((tmp_path / "notes", "it"), (tmp_path / "notes" / "run", "notes")):
        model = zoo.create("vae-mlp", dataset="mnist", hidden=16)
        trainer = Trainer(model, "mnist", out, images=images, steps=1, batch_size=16,
                          progress=False)
        with pytest.raises(ConfigError, match=f"cannot be a folder: .*{where} is a file"):
            trainer.fit()
    assert (tmp_path / "notes").read_text() == "mine"
