"""The seams: typed sampler options, batches with labels, rows keyed by canonical options
(and rows of the older schema still joining), the README's worked example of a sampler."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import zoo
from zoo import data as zdata
from zoo.bench import schema
from zoo.bench.compare import compare_dirs
from zoo.core import Batch, ConfigError
from zoo.models.diffusion import DDIM, DDPM, Ancestral
from zoo.nn.graphs import model_graphs
from zoo.options import OptionError, parse_value
from zoo.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY_DDPM = {"channels": 8, "norm_groups": 4, "timesteps": 20, "max_levels": 2}


def tiny_ddpm():
    torch.manual_seed(0)
    return zoo.create("ddpm", image_shape=(1, 8, 8), **TINY_DDPM).eval()


# -- one value parser ------------------------------------------------------------------------


def test_one_parser_for_strings_and_plain_values():
    assert parse_value("5", int, "steps") == parse_value(5, int, "steps") == 5
    assert parse_value("0.5", float, "eta") == parse_value(0.5, float, "eta") == 0.5
    assert parse_value("false", bool, "clip_x0") is False
    assert parse_value("none", "int | None", "top_k") is None
    assert parse_value("16,32", "tuple[int, ...]", "channels") == (16, 32)
    assert parse_value([16, 32], "tuple[int, ...]", "channels") == (16, 32)
    with pytest.raises(ConfigError, match="steps must be an integer"):
        parse_value("many", int, "steps")
    with pytest.raises(ConfigError, match="valid: trailing, leading"):
        parse_value("uniform", 'Literal["trailing", "leading"]', "spacing")


# -- typed sampler options -------------------------------------------------------------------


def test_sampler_options_are_parsed_once_into_their_class_and_bound_to_the_model():
    m = tiny_ddpm()
    s = m.parse_sampler({"sampler": "ddim", "steps": "5", "eta": "0.5"})
    assert s == DDIM(steps=5, eta=0.5)
    assert s.canonical() == {"steps": 5, "eta": 0.5, "spacing": "trailing", "clip_x0": True}
    assert s.label() == "ddim, 5 steps, eta 0.5"
    # the model fills in what depends on it: ddim's default steps, ancestral's T
    assert m.parse_sampler({"sampler": "ddim"}).steps == 20
    assert m.parse_sampler({}) == Ancestral(steps=20)
    assert DDIM(spacing="leading", steps=5).label() == "ddim(spacing=leading), 5 steps, eta 0"
    with pytest.raises(OptionError) as e:
        m.parse_sampler({"sampler": "ddim", "variance": "beta"})
    assert e.value.option == "variance" and "option of sampler='ddpm'" in str(e.value)


def test_an_options_object_samples_what_its_keywords_sample():
    m = tiny_ddpm()
    a = m.sample(2, generator=torch.Generator().manual_seed(1), sampler=DDIM(steps=3))
    b = m.sample(2, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=3)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="inside DDIM"):
        m.sample(1, sampler=DDIM(steps=3), eta=1.0)


def test_the_graph_key_is_the_bound_options():
    # steps=None and steps=20 (its default here) are one plan: one key
    m = tiny_ddpm()
    graphs = model_graphs(m)
    for steps in (None, 20):
        graphs.worth_it((m.parse_sampler({"sampler": "ddim", "steps": steps}).key(), 4), True)
    assert len(graphs.seen) == 1


def test_every_family_declares_its_samplers():
    for name in zoo.available():
        cls = zoo.registry.spec(name).cls
        assert cls.samplers, name
        for s in cls.samplers:
            default = s()
            assert s.parse(default.canonical()) == default
            assert json.loads(json.dumps(default.canonical())) == default.canonical()


# -- batches carry labels ----------------------------------------------------------------------


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


# -- result rows ---------------------------------------------------------------------------------


def test_rows_of_the_older_schema_join_rows_of_this_one(tmp_path):
    """A baseline of the older schema as committed (sampler name plus steps/eta/temperature
    columns) and the same rows rewritten in this schema compare as identical, row for row."""
    base = ROOT / "tests" / "data" / "ci-cpu-980a0a0"
    old = [json.loads(line) for line in (base / "results.jsonl").read_text().splitlines()]
    assert all("sampler_options" not in r for r in old)
    new = []
    for r in old:
        up = schema.upgrade(r)
        new.append({k: v for k, v in up.items() if k not in schema.LEGACY_OPTION_COLUMNS})
    ddim = [r for r in new if r["sampler"] == "ddim"]
    assert ddim and all(r["sampler_options"]["spacing"] == "trailing" for r in ddim)
    out = tmp_path / "new"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new))
    text, regressed = compare_dirs(base, out)
    assert not regressed, text
    assert f"{len(old)} rows compared" in text and "only" not in text.split("rows compared")[1]


# -- the README's worked example ---------------------------------------------------------------


def _readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


def test_the_readme_toy_sampler_works_as_a_sampler(monkeypatch, tmp_path):
    monkeypatch.setattr(DDPM, "samplers", DDPM.samplers)  # the example registers one more
    namespace: dict = {}
    exec(compile(_readme_block("example: sampler"), "README.md", "exec"), namespace)
    assert DDPM.samplers[-1].name == "oneshot"
    m = tiny_ddpm()
    a = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="oneshot")
    b = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1)
    assert torch.equal(a, b)  # one DDIM step from x_T is what the toy does
    # the harness takes it with no change: a suite variant, a row key, a label
    suite = tmp_path / "toy.toml"
    suite.write_text(
        'datasets = ["mnist"]\n[evaluation]\nn_samples = 8\n'
        '[[models]]\nname = "ddpm"\nconfig = { timesteps = 20, channels = 8 }\n'
        'budget = { steps = 1 }\nsamplers = [{ sampler = "oneshot" }, { sampler = "ddim" }]\n')
    from zoo.bench.suite import load_suite

    variants = load_suite(suite).models[0].variants
    assert [v.label for v in variants] == ["oneshot", "ddim, 20 steps, eta 0"]
    assert schema.sampler_label({"family": "diffusion", "sampler": "oneshot",
                                 "sampler_options": variants[0].canonical}) == "oneshot"


def test_the_readme_toy_sampler_reaches_latent_diffusion_unclipped(monkeypatch, tmp_path):
    monkeypatch.setattr(DDPM, "samplers", DDPM.samplers)
    exec(compile(_readme_block("example: sampler"), "README.md", "exec"), {})
    torch.manual_seed(0)
    zoo.create("kl-autoencoder", "mnist", channels=8).save(tmp_path / "ae.pt")
    m = zoo.create("latent-diffusion", "mnist", autoencoder=str(tmp_path / "ae.pt"),
                   **TINY_DDPM).eval()
    assert m.parse_sampler({"sampler": "oneshot"}).clip_x0 is False
    assert m.parse_sampler({"sampler": "oneshot", "clip_x0": "true"}).clip_x0 is True
    assert tiny_ddpm().parse_sampler({"sampler": "oneshot"}).clip_x0 is True
    a = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="oneshot")
    b = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1)
    c = m.sample(3, generator=torch.Generator().manual_seed(2), sampler="ddim", steps=1,
                 clip_x0=True)
    assert torch.equal(a, b) and not torch.equal(a, c)  # unclipped, as ddim is here


def test_the_readme_toy_metric_reaches_the_schema(monkeypatch):
    from zoo.bench import figures, frame
    from zoo.metrics import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after
    namespace: dict = {}
    exec(compile(_readme_block("example: metric"), "README.md", "exec"), namespace)
    assert registry.normalize_metrics("fid,spread") == ("fid", "spread")
    real = torch.randn(50, 8)
    assert registry.get("spread").compute(real, real.clone())["spread"] == pytest.approx(1.0)
    assert namespace["spread"](real, 2 * real)["spread"] == pytest.approx(2.0)
    assert "spread" in schema.columns() and schema.directions()["spread"] == 1
    assert "spread" in schema.deterministic()
    # a figure against speed and a panel of the compute curves, declared by default
    assert registry.column("spread") in figures.speed_figures()
    assert "spread" in frame.curve_columns()
    monkeypatch.undo()
    assert "spread" not in schema.columns()
